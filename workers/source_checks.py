"""What a person should know about an original, and the opt-in skip of originals in colour.

Two things about an original are recorded on its catalog row (``images.warnings``, each
``{"code": ..., "message": ...}``) when it is done; the worker logs them too:

* ``source.colour``: it is already in colour (``storage.chroma``: chroma in more than one
  hue, not grey stored as RGB, JPEG noise or the single hue of a toned print). Its colours
  were replaced by the model's. A collection submitted with ``--skip-colour`` (the
  ``skip_colour`` option) skips such originals instead: status ``skipped``, failure code
  ``skip.colour``, and a reason that says how to colorize them anyway.
* ``pages.dropped``: it has more pages than its copy. A TIFF copy of a TIFF original
  carries the further pages unchanged (``storage.codecs.tiff_carry``); other output formats
  hold one page, and a page that cannot be carried is named with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from catalog import SKIP_COLOUR_OPTION, mark_skipped, transaction
from storage.chroma import read_chroma
from storage.codecs.tiff_ifd import count_pages

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from storage.chroma import ChromaReading
    from storage.imaging import DecodedImage

__all__ = [
    "COLOUR_WARNING",
    "PAGES_WARNING",
    "SKIP_COLOUR_CODE",
    "SKIP_COLOUR_OPTION",
    "colour_skip_reason",
    "record_colour_skip",
    "skips_colour",
    "source_warnings",
]

#: Warning code of an original already in colour.
COLOUR_WARNING: Final = "source.colour"
#: Warning code of an original whose further pages are not in its copy.
PAGES_WARNING: Final = "pages.dropped"
#: Failure code of an original skipped because it is already in colour.
SKIP_COLOUR_CODE: Final = "skip.colour"


def skips_colour(options: Mapping[str, Any] | None) -> bool:
    """Whether a collection's options ask to skip originals already in colour.

    Args:
        options: ``Collection.options``.

    Returns:
        True with ``--skip-colour``.
    """
    return bool((options or {}).get(SKIP_COLOUR_OPTION))


def colour_skip_reason(decoded: DecodedImage) -> str | None:
    """The reason to skip an original in a collection that skips originals in colour.

    Args:
        decoded: The decoded original.

    Returns:
        The reason, or None when it is not in colour.
    """
    reading = read_chroma(decoded.pixels)
    if not reading.in_colour:
        return None
    return (
        f"the original is already in colour ({_extent(reading)}); skipped because the "
        "collection was submitted with --skip-colour. Submit it again with --no-skip-colour "
        "and retry the skipped images to colorize it anyway"
    )


def record_colour_skip(
    sessions: sessionmaker[Session], image_id: int, attempt_id: int, reason: str
) -> bool:
    """Record a running image as skipped because it is in colour (``skip.colour``).

    Args:
        sessions: The catalog's session factory.
        image_id: The image.
        attempt_id: Its running try.
        reason: From :func:`colour_skip_reason`.

    Returns:
        True if recorded; False if the try no longer holds the image.

    Raises:
        DatabaseUnavailable: If the catalog cannot be reached.
    """
    with transaction(sessions) as db:
        return mark_skipped(db, image_id, attempt_id, reason, failure_code=SKIP_COLOUR_CODE)


def source_warnings(
    decoded: DecodedImage, output: bytes, extension: str
) -> tuple[dict[str, str], ...]:
    """The warnings to record on a done image.

    Args:
        decoded: The decoded original.
        output: The encoded copy.
        extension: The copy's file name extension (``.tif``, ``.png``...).

    Returns:
        Warnings as ``{"code", "message"}`` dicts, possibly none.
    """
    warnings = []
    reading = read_chroma(decoded.pixels)
    if reading.in_colour:
        message = (
            f"the original is already in colour ({_extent(reading)}); its colours were "
            "replaced by the model's. Submit with --skip-colour to leave such originals out"
        )
        warnings.append({"code": COLOUR_WARNING, "message": message})
    if decoded.pages > 1:
        carried = count_pages(output) - 1 if extension in (".tif", ".tiff") else 0
        if carried < decoded.pages - 1:
            why = decoded.metadata.pages_note or (
                "they could not be added to the TIFF copy (see the log)"
                if extension in (".tif", ".tiff")
                else f"a {extension.lstrip('.').upper()} file holds one page"
            )
            message = (
                f"the original has {decoded.pages} pages; only the first was colorized and "
                f"the other {decoded.pages - 1} are not in the copy: {why}"
            )
            warnings.append({"code": PAGES_WARNING, "message": message})
    return tuple(warnings)


def _extent(reading: ChromaReading) -> str:
    return f"{reading.coloured_share:.0%} of it has colour beyond one tone"
