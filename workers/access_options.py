"""What a collection asks for beside each master: access copies and a JSON sidecar.

``panchro submit``, ``run`` and ``colorize`` take ``--derivative jpeg:3000`` (repeatable)
and ``--sidecars``; submit and run store them in the collection's options, so that every
worker, Celery or embedded, honours them::

    {"derivatives": ["jpeg:3000", "jpeg:1024"], "sidecars": true}

This module parses and names them; ``workers.derivatives`` and ``workers.sidecars`` write
the files.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from storage.codecs.formats import MAX_LONG_EDGE

__all__ = [
    "DERIVATIVES_OPTION",
    "DERIVATIVE_FORM",
    "SIDECARS_OPTION",
    "AccessFiles",
    "DerivativeSpec",
    "parse_derivative_spec",
    "parse_derivative_specs",
]

#: Key of ``Collection.options`` that holds the derivative specs (a list of text).
DERIVATIVES_OPTION: Final = "derivatives"
#: Key of ``Collection.options`` that asks for a JSON sidecar per output (a boolean).
SIDECARS_OPTION: Final = "sidecars"

#: File name extension of each kind of derivative.
DERIVATIVE_EXTENSIONS: Final = {"jpeg": ".jpg"}

#: The one form a derivative spec takes, for error messages.
DERIVATIVE_FORM: Final = (
    f"jpeg:LONG_EDGE, LONG_EDGE being the longest side in pixels (1-{MAX_LONG_EDGE}), "
    "e.g. jpeg:3000"
)


@dataclass(frozen=True, order=True)
class DerivativeSpec:
    """One access copy asked for: its kind and the longest side it may have.

    Attributes:
        kind: ``"jpeg"`` (an sRGB JPEG at quality 90).
        long_edge: Longest side in pixels; an image already smaller keeps its size.
    """

    kind: str
    long_edge: int

    def __str__(self) -> str:
        return f"{self.kind}:{self.long_edge}"

    @property
    def extension(self) -> str:
        """File name extension of this kind (``.jpg``)."""
        return DERIVATIVE_EXTENSIONS[self.kind]

    def uri_beside(self, output_uri: str) -> str:
        """Where this copy of a master goes: the master's name, the long edge, the extension.

        ``a.tif -> a.tif.3000.jpg``: every master has its own name, so every copy has
        too, and a copy never ends like another kind or size of copy.

        Args:
            output_uri: The master's URI (a local path or ``s3://``).

        Returns:
            The copy's URI, in the same folder or prefix.
        """
        return f"{output_uri}.{self.long_edge}{self.extension}"


def parse_derivative_spec(text: str) -> DerivativeSpec:
    """Parse one ``--derivative`` value.

    Args:
        text: ``"jpeg:3000"`` and the like (the kind in any case).

    Returns:
        The spec.

    Raises:
        ValueError: If it is not of the form :data:`DERIVATIVE_FORM`; the message names
            the form.
    """
    kind, colon, edge = str(text).strip().partition(":")
    kind = kind.strip().lower()
    if kind in ("jpg", "jpe"):
        kind = "jpeg"
    edge = edge.strip()
    if colon and kind in DERIVATIVE_EXTENSIONS and edge.isascii() and edge.isdigit():
        long_edge = int(edge)
        if 1 <= long_edge <= MAX_LONG_EDGE:
            return DerivativeSpec(kind, long_edge)
    raise ValueError(f"{text!r} is not a derivative; give {DERIVATIVE_FORM}")


def parse_derivative_specs(texts: Iterable[str]) -> tuple[DerivativeSpec, ...]:
    """Parse ``--derivative`` values; a spec given twice counts once.

    Args:
        texts: The values, in the order given.

    Returns:
        The specs, first occurrence first.

    Raises:
        ValueError: If one is not of the form :data:`DERIVATIVE_FORM`.
    """
    specs: dict[DerivativeSpec, None] = {}
    for text in texts:
        specs.setdefault(parse_derivative_spec(text), None)
    return tuple(specs)


@dataclass(frozen=True)
class AccessFiles:
    """What a collection asks for beside each master.

    Attributes:
        derivatives: The access copies.
        sidecars: Whether a JSON provenance sidecar goes beside each output.
        invalid: Why the stored options cannot be used (edited by hand), else None; the
            worker fails the image with it rather than write less than was asked for.
    """

    derivatives: tuple[DerivativeSpec, ...] = ()
    sidecars: bool = False
    invalid: str | None = None

    @property
    def wanted(self) -> bool:
        """Whether anything is to be written beside the master."""
        return bool(self.derivatives or self.sidecars or self.invalid)

    def options(self) -> dict[str, Any]:
        """Return the collection options that ask for these files (empty when none).

        Returns:
            A new dict for ``Collection.options``.
        """
        options: dict[str, Any] = {}
        if self.derivatives:
            options[DERIVATIVES_OPTION] = [str(spec) for spec in self.derivatives]
        if self.sidecars:
            options[SIDECARS_OPTION] = True
        return options

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> AccessFiles:
        """Read what a collection's options ask for; never raises.

        Args:
            options: ``Collection.options``, or None.

        Returns:
            The files to write; ``invalid`` says what is wrong with options that cannot
            be read.
        """
        options = options or {}
        stored = options.get(DERIVATIVES_OPTION) or []
        sidecars = options.get(SIDECARS_OPTION, False)
        try:
            if not isinstance(stored, list) or not all(isinstance(s, str) for s in stored):
                raise ValueError(f"{stored!r} is not a list of derivatives; give {DERIVATIVE_FORM}")
            if not isinstance(sidecars, bool):
                raise ValueError(f"{sidecars!r} is not true or false")
            return cls(parse_derivative_specs(stored), sidecars)
        except ValueError as exc:
            return cls(invalid=f"the collection's options cannot be used: {exc}")
