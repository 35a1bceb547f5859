"""``panchro colorize``: colorize one file, or a folder, on this machine; no catalog, no queue."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from panchro.cli_support import fail_on, local_path_only
from panchro.derivative_options import derivative_option
from panchro.options import (
    chosen_output_format,
    chosen_weights,
    model_options,
    output_format_options,
    size_from,
    size_options,
)

if TYPE_CHECKING:
    from ddcolor.pipeline import Colorizer
    from panchro.settings import Settings
    from storage.local import LocalStorage
    from workers.access_options import DerivativeSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileOutcome:
    """What became of one input file.

    Attributes:
        source: The original.
        output: The colorized copy, or None when none was written.
        status: ``done``, ``skipped`` (panchro's copy exists), ``refused`` (a file panchro
            did not write is where the copy goes; left untouched) or ``failed``.
        detail: The reason for ``failed``/``refused``/``skipped``, or a summary for ``done``.
    """

    source: Path
    output: Path | None
    status: str
    detail: str


def colorize_file(
    colorizer: Colorizer,
    source: Path,
    output: Path,
    *,
    storage: LocalStorage,
    size: int | None,
    output_format: str | None,
    untrained: bool,
    replaceable: Collection[str] = (),
    derivatives: Sequence[DerivativeSpec] = (),
    reserved: Collection[str] = (),
) -> FileOutcome:
    """Colorize one file and write the copy atomically; bad input is reported, not raised.

    The copy is written only where no file is, or over a file whose SHA-256 is one of
    ``replaceable`` (and that did not change since it was checked); any other file there
    is left untouched and the outcome is ``refused``.

    Args:
        colorizer: The loaded model.
        source: The original (only ever read).
        output: Where the copy goes; its extension is set by the output format.
        storage: Local storage, for the atomic write (temporary name, then rename).
        size: Input size in pixels, or None for the colorizer's default.
        output_format: Output format, or None for the original's family.
        untrained: Whether the weights are random (marked in the metadata).
        replaceable: SHA-256 digests of existing outputs that may be replaced.
        derivatives: Access copies to write beside the copy (``--derivative``); a file
            there is replaced only if it was made from a master replaced here.
        reserved: Resolved paths of every original and output of the run, which no
            access copy may take.

    Returns:
        The outcome.

    Raises:
        DDColorError: For failures of the model that no other file would escape
            (out of memory at the smallest size).
    """
    from storage.errors import InvalidImage, OutputExists, StorageError
    from workers.colorizing import colorize_original, read_original
    from workers.derivatives import write_local_derivatives
    from workers.errors import AccessFileFailed

    if output.resolve() == source.resolve():
        return FileOutcome(source, None, "failed", "refusing to write over the original")
    try:
        original = read_original(storage, str(source))
        colorized = colorize_original(
            colorizer, original, size=size, output_format=output_format, untrained=untrained
        )
        storage.write(str(output), colorized.data, overwrite=False, replaceable=replaceable)
        copies = write_local_derivatives(
            storage,
            str(output),
            derivatives,
            colorized,
            original,
            replaced=replaceable,
            reserved=reserved,
        )
    except OutputExists:
        return FileOutcome(source, None, "refused", _foreign(output))
    except (InvalidImage, ValueError, OSError, StorageError, AccessFileFailed) as exc:
        return FileOutcome(source, None, "failed", str(exc))
    result = colorized.result
    detail = (
        f"{original.decoded.mode_description}, {result.size} px, {result.precision}, "
        f"{result.seconds:.1f} s"
    )
    detail += "".join(f", {Path(copy.uri).name}" for copy in copies)
    for warning in colorized.warnings:
        detail += f"; warning {warning['code']}: {warning['message']}"
    return FileOutcome(source, output, "done", detail)


def _foreign(output: Path) -> str:
    return (
        f"the output {output} already exists and is not a file panchro wrote; left "
        "untouched (move it away, or choose another output folder)"
    )


def panchro_copy(path: Path) -> str | None:
    """Return the SHA-256 of an existing file if panchro made it, else None.

    A file counts as panchro's when it is a regular file (not a link) that decodes as an
    image whose XMP history ends with panchro's colorization (see
    ``storage.metadata.last_edited_by_panchro``).

    Args:
        path: An existing output path.

    Returns:
        The hex digest of its content, or None when it is not panchro's (or unreadable).
    """
    from storage.errors import StorageError
    from storage.local import LocalStorage
    from storage.metadata import last_edited_by_panchro
    from workers.colorizing import read_original

    if path.is_symlink() or not path.is_file():
        return None
    try:
        existing = read_original(LocalStorage(), str(path))
    except (OSError, StorageError, ValueError):
        return None
    if not last_edited_by_panchro(existing.decoded.metadata.xmp):
        return None
    return existing.sha256


@dataclass(frozen=True)
class Job:
    """One file to colorize: the original, its copy, and the copy's format."""

    source: Path
    output: Path
    output_format: str | None


def plan_jobs(input_path: Path, output_path: Path, output_format: str | None) -> list[Job]:
    """Pair every image of INPUT with its output path.

    A folder is scanned recursively by content; each copy mirrors its relative path and is
    named by the rule of ``scheduler.outputs`` that ``panchro run`` and ``panchro submit``
    use: the name is kept when the copy is in the format its extension names, else the
    output extension is appended (``a.tif`` and ``a.tiff`` stay apart, ``a.bmp`` becomes
    ``a.bmp.png``), so two inputs never share an output. For a single file, OUTPUT may be
    a folder, or a file whose extension chooses the format.

    Args:
        input_path: An image file or a folder.
        output_path: The output file or folder.
        output_format: The ``--output-format`` asked for, or None.

    Returns:
        The jobs, in a stable order.

    Raises:
        click.UsageError: If the output folder lies inside the input folder.
    """
    from scheduler.outputs import output_relative
    from storage.local import LocalStorage
    from storage.scan import scan

    if input_path.is_file():
        if output_path.is_dir():
            with fail_on(f"reading {input_path}"):
                relative = output_relative(input_path.name, _sniff(input_path), output_format)
            return [Job(input_path, output_path / relative, output_format)]
        chosen = output_format or output_path.suffix.lstrip(".") or None
        return [Job(input_path, output_path, chosen)]
    root = input_path.resolve()
    target = output_path.resolve()
    if target == root or root in target.parents:
        raise click.UsageError(f"the output folder {output_path} must not be inside {input_path}")
    jobs = []
    with fail_on(f"scanning {input_path}"):
        for found in scan(LocalStorage(), str(root)):
            relative = output_relative(found.relative, found.format, output_format)
            jobs.append(Job(Path(found.uri.path), output_path / relative, output_format))
    return jobs


def _sniff(path: Path) -> str | None:
    from storage.imaging import SNIFF_BYTES, sniff_format

    with open(path, "rb") as handle:
        return sniff_format(handle.read(SNIFF_BYTES))


def _load(
    settings: Settings, *, model: str | None, untrained: bool, size: int | None, upsample: str
) -> Colorizer:
    from ddcolor.pipeline import load_colorizer
    from ddcolor.registry import DEFAULT_SIZE

    weights = chosen_weights(settings, model=model, untrained=untrained)
    with fail_on("loading the model"):
        return load_colorizer(
            weights,
            device=settings.device,
            precision=settings.precision,
            model=model,
            untrained=untrained,
            size=size or DEFAULT_SIZE,
            upsample=upsample,
            backend=settings.backend,
        )


@click.command("colorize")
@click.argument(
    "input_path",
    metavar="INPUT",
    type=click.Path(exists=True, path_type=Path),
    callback=local_path_only,
)
@click.argument(
    "output_path", metavar="OUTPUT", type=click.Path(path_type=Path), callback=local_path_only
)
@model_options
@size_options
@output_format_options
@derivative_option
@click.option(
    "--overwrite",
    is_flag=True,
    help="Colorize again when panchro's copy already exists (default: skip it, so that an "
    "interrupted folder run resumes). A file panchro did not write is never replaced.",
)
@click.pass_context
def colorize(
    ctx: click.Context,
    input_path: Path,
    output_path: Path,
    weights: Path | None,
    model: str | None,
    untrained: bool,
    precision: str | None,
    device: str | None,
    upsample: str,
    preset: str | None,
    size: int | None,
    output_format: str | None,
    format_alias: str | None,
    derivatives: tuple[DerivativeSpec, ...],
    overwrite: bool,
) -> None:
    """Colorize INPUT (an image, or a folder of images) into OUTPUT.

    A folder is searched recursively for images (by content, not by name); the
    copies mirror its sub-folders under OUTPUT. Originals are only ever read; each copy is
    written under a temporary name and renamed, so none is ever half-written. Files that
    cannot be colorized are listed at the end, and the exit status is 1 if there were any.
    An existing file where a copy goes is never replaced unless panchro wrote it (its
    XMP history ends with panchro's colorization); it is listed as refused.

    \b
    Examples:
      panchro colorize scan.tif scan-colour.tif --weights ddcolor_modelscope.pth
      panchro colorize scans/ colour/ --preset landscape --device cuda:0
      panchro colorize examples/ colorized/ --untrained       # a demo, random weights
    """
    from panchro.context import load_settings
    from storage.local import LocalStorage

    settings = load_settings(ctx, weights=weights, precision=precision, device=device)
    output_format = chosen_output_format(output_format, format_alias)
    chosen_size = size_from(preset, size)
    jobs = plan_jobs(input_path, output_path, output_format)
    if not jobs:
        raise click.ClickException(f"no images found in {input_path}")
    colorizer = _load(
        settings, model=model, untrained=untrained, size=chosen_size, upsample=upsample
    )
    if untrained:
        click.secho(
            "WARNING: untrained random weights; the colours are meaningless. Outputs say so "
            "in their metadata.",
            fg="yellow",
            err=True,
        )
    click.echo(f"{colorizer!r}", err=True)
    outcomes = _run(
        colorizer,
        jobs,
        storage=LocalStorage(),
        size=chosen_size,
        overwrite=overwrite,
        untrained=untrained,
        derivatives=derivatives,
    )
    _summarise(outcomes, output_path)
    if any(outcome.status in ("failed", "refused") for outcome in outcomes):
        ctx.exit(1)


def _run(
    colorizer: Colorizer,
    jobs: list[Job],
    *,
    storage: LocalStorage,
    size: int | None,
    overwrite: bool,
    untrained: bool,
    derivatives: Sequence[DerivativeSpec] = (),
) -> list[FileOutcome]:
    from tqdm import tqdm

    outcomes: list[FileOutcome] = []
    # Every original and output of the run: no access copy may take one's place.
    reserved = frozenset(os.path.realpath(p) for job in jobs for p in (job.source, job.output))
    started = time.monotonic()
    with tqdm(total=len(jobs), unit="img", disable=len(jobs) < 2, leave=False) as bar:
        for job in jobs:
            bar.set_postfix_str(job.source.name)
            outcomes.append(
                _colorize_job(
                    colorizer,
                    job,
                    storage=storage,
                    size=size,
                    overwrite=overwrite,
                    untrained=untrained,
                    derivatives=derivatives,
                    reserved=reserved,
                )
            )
            bar.update(1)
    logger.info("colorized %d files in %.1f s", len(jobs), time.monotonic() - started)
    return outcomes


def _colorize_job(
    colorizer: Colorizer,
    job: Job,
    *,
    storage: LocalStorage,
    size: int | None,
    overwrite: bool,
    untrained: bool,
    derivatives: Sequence[DerivativeSpec] = (),
    reserved: Collection[str] = (),
) -> FileOutcome:
    """Colorize one job unless its output exists: skip panchro's copy, refuse anything else."""
    if job.output.resolve() == job.source.resolve():
        return FileOutcome(job.source, None, "failed", "refusing to write over the original")
    replaceable: tuple[str, ...] = ()
    if os.path.lexists(job.output):
        ours = panchro_copy(job.output)
        if ours is None:
            return FileOutcome(job.source, None, "refused", _foreign(job.output))
        if not overwrite:
            return FileOutcome(job.source, job.output, "skipped", "colorized before")
        replaceable = (ours,)
    with fail_on(f"colorizing {job.source}"):
        return colorize_file(
            colorizer,
            job.source,
            job.output,
            storage=storage,
            size=size,
            output_format=job.output_format,
            untrained=untrained,
            replaceable=replaceable,
            derivatives=derivatives,
            reserved=reserved,
        )


def _summarise(outcomes: list[FileOutcome], output_path: Path) -> None:
    done = [o for o in outcomes if o.status == "done"]
    skipped = [o for o in outcomes if o.status == "skipped"]
    refused = [o for o in outcomes if o.status == "refused"]
    failed = [o for o in outcomes if o.status == "failed"]
    for outcome in done:
        click.echo(f"done     {outcome.source} -> {outcome.output} ({outcome.detail})")
    for outcome in refused:
        click.secho(f"REFUSED  {outcome.source}: {outcome.detail}", fg="red", err=True)
    for outcome in failed:
        click.secho(f"FAILED   {outcome.source}: {outcome.detail}", fg="red", err=True)
    click.echo(
        f"{len(done)} colorized, {len(skipped)} skipped (colorized before; --overwrite redoes "
        f"them), {len(refused)} refused (a file panchro did not write is in the way), "
        f"{len(failed)} failed; outputs in {output_path}"
    )
