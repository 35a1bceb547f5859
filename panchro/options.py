"""Click options shared by the commands that choose a model, an input size and a device."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ddcolor.errors import InvalidSize
from ddcolor.registry import (
    BACKENDS,
    DEFAULT_SIZE,
    DEFAULT_UPSAMPLE,
    OFFICIAL_MODELS,
    PRECISION_CHOICES,
    PRESETS,
    SIZE_RULE,
    UNTRAINED_MODEL,
    UPSAMPLE_METHODS,
    validate_size,
)
from storage.codecs.formats import EXTENSIONS

if TYPE_CHECKING:
    from panchro.settings import Settings

#: Image formats a colorized copy can be written in, by their extension.
OUTPUT_FORMAT_CHOICES = tuple(sorted(extension.lstrip(".") for extension in EXTENSIONS.values()))

F = TypeVar("F", bound=Callable[..., Any])


def check_size(_ctx: click.Context, _param: click.Parameter, size: int | None) -> int | None:
    """Click callback: a square input size must follow ``ddcolor.registry.SIZE_RULE``.

    Raises:
        click.BadParameter: With the rule, for any other value.
    """
    if size is None:
        return None
    try:
        return validate_size(size)
    except InvalidSize as exc:
        raise click.BadParameter(
            f"{exc} (the network needs multiples of 32; it was trained at 256)"
        ) from exc


def size_from(preset: str | None, size: int | None) -> int | None:
    """The input size asked for by ``--preset`` or ``--size`` (they exclude each other).

    Args:
        preset: A key of :data:`ddcolor.registry.PRESETS`, or None.
        size: A validated size, or None.

    Returns:
        The size in pixels, or None when neither was given.

    Raises:
        click.UsageError: If both were given.
    """
    if preset is not None and size is not None:
        raise click.UsageError("--preset and --size exclude each other: give one of them")
    return PRESETS[preset] if preset is not None else size


def chosen_weights(settings: Settings, *, model: str | None, untrained: bool) -> Path | None:
    """The checkpoint a command runs with: given, else fetched, else a user error.

    Args:
        settings: The validated settings (``weights``, ``weights_dir``).
        model: The model asked for with ``--model``, if any.
        untrained: Random weights were asked for explicitly.

    Returns:
        The checkpoint file, or None with ``untrained``.

    Raises:
        click.ClickException: If there is none, saying how to get one.
    """
    from panchro.weights import WeightsError, resolve_weights

    try:
        return resolve_weights(
            settings.weights, settings.weights_dir, model=model, untrained=untrained
        )
    except WeightsError as exc:
        raise click.ClickException(str(exc)) from exc


def size_options(func: F) -> F:
    """Add ``--preset`` and ``--size`` to a command."""
    func = click.option(
        "--size",
        type=int,
        callback=check_size,
        help=f"Square model input size in pixels: {SIZE_RULE} (default {DEFAULT_SIZE}). "
        "Colours change with it; the size used is recorded. Excludes --preset.",
    )(func)
    func = click.option(
        "--preset",
        type=click.Choice(sorted(PRESETS)),
        help=f"Input size for the kind of picture: portrait = {PRESETS['portrait']} px, "
        f"landscape = {PRESETS['landscape']} px (buildings, landscapes). Excludes --size.",
    )(func)
    return func


#: ``--weights``: the checkpoint file.
weights_option = click.option(
    "--weights",
    type=click.Path(path_type=Path, dir_okay=False),
    help="DDColor checkpoint (.pth, pytorch_model.bin or .safetensors). Env: PANCHRO_WEIGHTS.",
)
#: ``--precision``: the numeric precision of the model.
precision_option = click.option(
    "--precision",
    type=click.Choice(PRECISION_CHOICES),
    help="auto is fp16 on GPUs; on the CPU bf16 where the processor computes it natively, "
    "else fp32. Env: PANCHRO_PRECISION.",
)


def _override_setting(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    """Hand an option given on the command line to :func:`panchro.context.load_settings`."""
    if value is None or param.name is None:
        return
    root = ctx.find_root()
    if not isinstance(root.obj, dict):
        root.obj = {}
    root.obj.setdefault("overrides", {})[param.name] = value


#: ``--backend``: what runs the network (a Settings field; the commands read it there).
backend_option = click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    expose_value=False,
    callback=_override_setting,
    help="What runs the network: torch (PyTorch eager, default) or onnx (ONNX Runtime on "
    "the network exported once and cached beside the checkpoint; fp32; needs "
    "panchro[onnx]). Env: PANCHRO_BACKEND.",
)
#: ``--untrained``: random weights, said so everywhere.
untrained_option = click.option(
    "--untrained",
    is_flag=True,
    help="Run with random weights (for a demo or a test: the colours are meaningless, "
    "and every output and catalog row says so).",
)


#: ``--upsample``: how colour is brought to full resolution.
upsample_option = click.option(
    "--upsample",
    type=click.Choice(UPSAMPLE_METHODS),
    default=DEFAULT_UPSAMPLE,
    show_default=True,
    help="How the model's colour (ab) is brought to full resolution: guided (edge-aware,"
    " follows the full-resolution luminance), or nearest (the published pipeline, bit"
    " for bit), bilinear, bicubic. See docs/upsampling.md.",
)
#: ``--skip-colour``: leave originals that are already in colour alone.
skip_colour_option = click.option(
    "--skip-colour/--no-skip-colour",
    default=None,
    help="Skip originals already in colour (chroma in several hues; grey stored as RGB and "
    "toned prints such as sepia are not colour): recorded as skipped, failure code "
    "skip.colour. Otherwise they are colorized with a source.colour warning. Kept by the "
    "collection until a submission gives the other one.",
)
#: ``--model``: the official model the checkpoint holds, or the one built untrained.
model_option = click.option(
    "--model",
    type=click.Choice(OFFICIAL_MODELS),
    help="The model the checkpoint must hold (default: recognised from its shapes); "
    f"with --untrained, the architecture to build (default {UNTRAINED_MODEL}).",
)


def output_format_options(func: F) -> F:
    """Add ``--output-format``, and ``--format``, its older spelling, hidden.

    ``--format`` names the listing format of ``panchro list``; for the image format of a
    copy it is kept working so that existing scripts do not break. Read the value with
    :func:`chosen_output_format`.
    """
    func = click.option(
        "--format",
        "format_alias",
        type=click.Choice(OUTPUT_FORMAT_CHOICES),
        hidden=True,
        help="Older spelling of --output-format.",
    )(func)
    return click.option(
        "--output-format",
        type=click.Choice(OUTPUT_FORMAT_CHOICES),
        help="Image format of the copies (default: the original's family: TIFF stays TIFF, "
        "JPEG stays JPEG, other formats become PNG or TIFF).",
    )(func)


def chosen_output_format(output_format: str | None, format_alias: str | None) -> str | None:
    """The image format asked for with ``--output-format`` or its older spelling ``--format``.

    Args:
        output_format: The value of ``--output-format``.
        format_alias: The value of ``--format``.

    Returns:
        The format, or None for the original's family.

    Raises:
        click.UsageError: If both were given with different values.
    """
    if format_alias is None:
        return output_format
    click.secho("--format is deprecated here; use --output-format", fg="yellow", err=True)
    if output_format not in (None, format_alias):
        raise click.UsageError("--output-format and --format disagree: give --output-format")
    return format_alias


def json_options(help_text: str) -> Callable[[F], F]:
    """Add ``--json``, and hidden ``--format table|json``, the spelling ``panchro list`` uses.

    Args:
        help_text: The help of ``--json``.

    Returns:
        A decorator; the command receives ``as_json`` and ``report_format`` (read both with
        :func:`wants_json`).
    """

    def add(func: F) -> F:
        func = click.option(
            "--format",
            "report_format",
            type=click.Choice(("table", "json")),
            hidden=True,
            help="--format json is --json.",
        )(func)
        return click.option("--json", "as_json", is_flag=True, help=help_text)(func)

    return add


def wants_json(as_json: bool, report_format: str | None) -> bool:
    """Whether JSON was asked for, with ``--json`` or ``--format json``.

    Args:
        as_json: The value of ``--json``.
        report_format: The value of ``--format``.

    Returns:
        True for JSON output.
    """
    return as_json or report_format == "json"


def model_options(func: F) -> F:
    """Add the options that load a model: weights, model, untrained, backend, precision..."""
    options = [
        upsample_option,
        click.option(
            "--device",
            help="auto (the first GPU, else the CPU), cpu, cuda or cuda:N; ROCm GPUs are cuda "
            "too. Env: PANCHRO_DEVICE.",
        ),
        precision_option,
        backend_option,
        untrained_option,
        model_option,
        weights_option,
    ]
    for option in options:
        func = option(func)
    return func


#: ``--batch N``: images of a collection colorized together (``Settings.batch_size``).
batch_option = click.option(
    "--batch",
    "batch",
    type=click.IntRange(1, 64),
    metavar="N",
    help="Images of a collection colorized together, in one forward of the network: "
    "faster on a GPU, little gain on the CPU. Out of device memory a batch is split "
    "before the input size shrinks. Env: PANCHRO_BATCH_SIZE (default 4 on a GPU, 1 on "
    "the CPU).",
)


def time_limit_options(command: F) -> F:
    """Add ``--soft-time-limit``, ``--time-limit`` and ``--visibility-timeout``."""
    options = (
        click.option(
            "--soft-time-limit",
            type=click.FloatRange(min=0.0, min_open=True),
            metavar="SECONDS",
            help="Time after which a task is asked to stop; its image is failed with "
            '"time limit". Env: PANCHRO_SOFT_TIME_LIMIT (default 1500).',
        ),
        click.option(
            "--time-limit",
            type=click.FloatRange(min=0.0, min_open=True),
            metavar="SECONDS",
            help="Time after which the process of a task is killed; its image is failed with "
            '"time limit". Env: PANCHRO_TIME_LIMIT (default 1800).',
        ),
        click.option(
            "--visibility-timeout",
            type=click.IntRange(min=1),
            metavar="SECONDS",
            help="Time Redis waits for a message's acknowledgement before handing it out "
            "again; longer than --time-limit. Env: PANCHRO_VISIBILITY_TIMEOUT (default twice "
            "the time limit).",
        ),
    )
    for option in reversed(options):
        command = option(command)
    return command
