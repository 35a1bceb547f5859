"""Click options for the files written beside each output: ``--derivative`` and ``--sidecars``.

``panchro submit`` and ``panchro run`` store them in the collection's options, so that every
worker honours them (``workers.access_options``); ``panchro colorize`` takes
``--derivative`` and writes the copies beside its outputs itself.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    from workers.access_options import DerivativeSpec

__all__ = ["access_file_options", "collection_options_for", "derivative_option"]

F = TypeVar("F", bound=Callable[..., Any])


def _parse_derivatives(
    _ctx: click.Context, _param: click.Parameter, values: Sequence[str]
) -> tuple[DerivativeSpec, ...]:
    """Click callback: parse every ``--derivative`` (a spec given twice counts once).

    Raises:
        click.BadParameter: Naming the one allowed form, for any other value.
    """
    if not values:
        return ()
    from workers.access_options import parse_derivative_specs

    try:
        return parse_derivative_specs(values)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from exc


#: ``--derivative jpeg:LONG_EDGE``, repeatable.
derivative_option = click.option(
    "--derivative",
    "derivatives",
    multiple=True,
    metavar="jpeg:LONG_EDGE",
    callback=_parse_derivatives,
    help="Also write an sRGB JPEG access copy (quality 90) beside each output, its longest "
    "side LONG_EDGE pixels or the image's own if smaller (never enlarged), with the "
    "output's metadata and AI label: a.tif -> a.tif.3000.jpg for jpeg:3000. Repeatable.",
)

#: ``--sidecars``: a JSON provenance file beside each output.
sidecars_option = click.option(
    "--sidecars",
    is_flag=True,
    help="Also write a JSON sidecar beside each output with its provenance (source and "
    "output sha256, model, checkpoint, sizes, precision, device, host, times, access "
    "copies): a.tif -> a.tif.json.",
)


def access_file_options(func: F) -> F:
    """Add ``--derivative`` and ``--sidecars`` to a command."""
    return derivative_option(sidecars_option(func))


def collection_options_for(derivatives: Sequence[DerivativeSpec], sidecars: bool) -> dict[str, Any]:
    """Return the collection options that ask the workers for these files.

    Args:
        derivatives: The parsed ``--derivative`` values.
        sidecars: The value of ``--sidecars``.

    Returns:
        A new dict for ``CollectionSettings.options`` (empty when nothing is asked).
    """
    from workers.access_options import AccessFiles

    return AccessFiles(tuple(derivatives), sidecars).options()
