"""A corpus of bad and unusual inputs, generated on the fly, and what ``panchro run`` must do.

Each :class:`Kind` writes one entry of the corpus (a file, a link, a FIFO, a folder named
like an image) and states its outcome: ``done`` (colorized: an output of the same pixel
size, the original unchanged), ``failed`` or ``skipped`` (refused, with a reason that holds
the given key words), or ``ignored`` (hidden and system files: not part of a collection,
counted in the summary). Everything is written by real encoders (Pillow) or, for damaged
files, by cutting or patching their bytes; nothing binary is kept in the repository.

Images are tiny (a few thousand pixels, the thin ones 128,000) so that the whole corpus
goes through the model at its smallest input size in seconds.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

#: Outcome: colorized, an output of the same size, the original untouched.
DONE = "done"
#: Outcome: the worker refused it with a reason.
FAILED = "failed"
#: Outcome: the scan passed it over and recorded why.
SKIPPED = "skipped"
#: Outcome: not part of the collection (hidden, system); counted in the summary only.
IGNORED = "ignored"

#: Writes one entry: its path in the corpus and a folder outside the corpus for links.
Writer = Callable[[Path, Path], None]


@dataclass(frozen=True)
class Kind:
    """One kind of input and what must become of it.

    Attributes:
        kind: What it is, as the documentation's table names it.
        path: Its path below the corpus folder (``/``-separated; bytes that are not
            UTF-8 are given as Python keeps them, as surrogates).
        write: Writes it.
        outcome: ``done``, ``failed``, ``skipped`` or ``ignored``.
        words: Key words (lower case) that the recorded reason must hold.
        code: The failure code recorded with a ``failed`` or ``skipped`` outcome.
    """

    kind: str
    path: str
    write: Writer
    outcome: str
    words: tuple[str, ...] = ()
    code: str | None = None


def _gradient(width: int, height: int) -> np.ndarray[Any, np.dtype[np.uint8]]:
    y, x = np.mgrid[0:height, 0:width]
    return ((x * 3 + y * 5) % 256).astype(np.uint8)


def _encoded(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _gray(width: int = 48, height: int = 32) -> Image.Image:
    return Image.fromarray(_gradient(width, height))


def _rgb(width: int = 48, height: int = 32) -> Image.Image:
    gray = _gradient(width, height)
    return Image.fromarray(np.dstack([gray, gray, gray]))


def _colour(width: int = 48, height: int = 32) -> Image.Image:
    gray = _gradient(width, height)
    return Image.fromarray(np.dstack([gray, 255 - gray, gray // 2]))


def _bytes(data: bytes | Callable[[], bytes]) -> Writer:
    def write(path: Path, _outside: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(os.fsencode(path), "wb") as file:
            file.write(data() if callable(data) else data)

    return write


def _image(build: Callable[[], Image.Image], fmt: str, **options: Any) -> Writer:
    return _bytes(lambda: _encoded(build(), fmt, **options))


def _truncated(fmt: str) -> bytes:
    data = _encoded(_gray(64, 64), fmt)
    return data[: len(data) // 3]


def _png_bomb() -> bytes:
    """A PNG that declares 100,000 x 100,000 pixels in a few hundred bytes."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * 100_001 * 4)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


def _jpeg_bomb() -> bytes:
    """A small JPEG whose frame header is patched to 65,000 x 65,000 pixels."""
    data = bytearray(_encoded(_gray(16, 16), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 65_000, 65_000)
    return bytes(data)


def _animated(fmt: str) -> bytes:
    frames = [_gray().point(lambda v, k=k: (v + 40 * k) % 256) for k in range(3)]
    if fmt == "GIF":
        frames = [frame.convert("P") for frame in frames]
    return _encoded(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)


def _multipage_tiff() -> bytes:
    pages = [_gray(), _gray(24, 16)]
    return _encoded(pages[0], "TIFF", save_all=True, append_images=pages[1:])


def _zero_width_tiff() -> bytes:
    """A TIFF whose header gives a width of 0 (its strip still holds pixels)."""
    data = bytearray(_encoded(_gray(), "TIFF"))
    width_tag = data.index(struct.pack("<HHI", 256, 4, 1))  # ImageWidth, one LONG
    data[width_tag + 8 : width_tag + 12] = struct.pack("<I", 0)
    return bytes(data)


def _float_tiff() -> bytes:
    return _encoded(Image.fromarray(_gradient(48, 32).astype(np.float32) / 255.0), "TIFF")


def _sixteen_bit(fmt: str) -> bytes:
    samples = (_gradient(48, 32).astype(np.uint16) * 257).astype(np.uint16)
    return _encoded(Image.fromarray(samples), fmt)


def _cmyk(fmt: str) -> bytes:
    return _encoded(_rgb().convert("CMYK"), fmt)


def _with_alpha(mode: str) -> bytes:
    gray = _gray()
    alpha = Image.fromarray(np.tile(np.linspace(0, 255, 48, dtype=np.uint8), (32, 1)))
    if mode == "LA":
        return _encoded(Image.merge("LA", (gray, alpha)), "PNG")
    # A palette whose entries carry alpha (PNG's tRNS): what Pillow opens as PA / P+alpha.
    rgba = Image.merge("RGBA", (gray, gray, gray, alpha))
    return _encoded(rgba.quantize(colors=32, method=Image.Quantize.FASTOCTREE), "PNG")


def _palette_transparency() -> bytes:
    image = _rgb().convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    return _encoded(image, "PNG", transparency=0)


def _oriented(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _encoded(_gray(48, 32), "JPEG", exif=exif.tobytes())


def _corrupt_exif() -> bytes:
    return _encoded(_gray(), "JPEG", exif=b"Exif\x00\x00II*\x00\xff\xff\xff\x7f garbage")


def _corrupt_icc() -> bytes:
    return _encoded(_gray(), "JPEG", icc_profile=b"this is not an ICC profile" * 4)


def _one_bit(fmt: str) -> bytes:
    return _encoded(_gray().convert("1"), fmt)


def _link(target: Callable[[Path, Path], Path]) -> Writer:
    def write(path: Path, outside: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target(path, outside))

    return write


def _outside_file(_path: Path, outside: Path) -> Path:
    target = outside / "elsewhere.png"
    target.write_bytes(_encoded(_gray(), "PNG"))
    return target


def _outside_folder(_path: Path, outside: Path) -> Path:
    folder = outside / "other-collection"
    folder.mkdir(exist_ok=True)
    (folder / "theirs.png").write_bytes(_encoded(_gray(), "PNG"))
    return folder


def _fifo(path: Path, _outside: Path) -> None:
    os.mkfifo(path)


def _unreadable(path: Path, outside: Path) -> None:
    _image(_gray, "PNG")(path, outside)
    path.chmod(0)


def _text(text: str) -> bytes:
    return text.encode()


#: Failure codes that several kinds share.
TRUNC = "decode.truncated"
NOT_IMAGE = "skip.not_image"
TOO_LARGE = "size.too_large"

#: The corpus: at least one entry per kind of bad or unusual input.
CORPUS: tuple[Kind, ...] = (
    Kind("zero bytes", "empty.jpg", _bytes(b""), SKIPPED, ("empty", "0 bytes"), "skip.empty"),
    Kind("truncated JPEG", "truncated.jpg", _bytes(lambda: _truncated("JPEG")), FAILED, (), TRUNC),
    Kind("truncated PNG", "truncated.png", _bytes(lambda: _truncated("PNG")), FAILED, (), TRUNC),
    Kind("truncated TIFF", "truncated.tif", _bytes(lambda: _truncated("TIFF")), FAILED, (), TRUNC),
    Kind(
        "zero-width TIFF",
        "flat.tif",
        _bytes(_zero_width_tiff),
        FAILED,
        ("empty size",),
        "size.too_small",
    ),
    Kind("JPEG named .png", "jpeg-named.png", _image(_gray, "JPEG"), DONE),
    Kind("PNG named .tif", "png-named.tif", _image(_gray, "PNG"), DONE),
    Kind(
        "text named .png",
        "notes.png",
        _bytes(_text("scanned in 1998\n")),
        SKIPPED,
        ("text",),
        NOT_IMAGE,
    ),
    Kind(
        "PDF named .jpg",
        "document.jpg",
        _bytes(_text("%PDF-1.4\n%\xe2\n")),
        SKIPPED,
        ("pdf",),
        NOT_IMAGE,
    ),
    Kind(
        "HTML named .jpg",
        "page.jpg",
        _bytes(_text("<!DOCTYPE html><html><body>404</body></html>")),
        SKIPPED,
        ("html",),
        NOT_IMAGE,
    ),
    Kind(
        "ZIP named .tif",
        "archive.tif",
        _bytes(b"PK\x03\x04" + b"\x00" * 60),
        SKIPPED,
        ("zip",),
        NOT_IMAGE,
    ),
    Kind(
        "random bytes after a JPEG marker",
        "noise.jpg",
        _bytes(b"\xff\xd8\xff" + bytes(range(256)) * 4),
        FAILED,
        code="decode.corrupt",
    ),
    Kind("decompression bomb PNG", "bomb.png", _bytes(_png_bomb), FAILED, ("pixels",), TOO_LARGE),
    Kind("decompression bomb JPEG", "bomb.jpg", _bytes(_jpeg_bomb), FAILED, ("pixels",), TOO_LARGE),
    Kind("1x1 pixel", "dot.png", _image(lambda: _gray(1, 1), "PNG"), DONE),
    Kind("8000x16", "wide.png", _image(lambda: _gray(8000, 16), "PNG"), DONE),
    Kind("16x8000", "tall.png", _image(lambda: _gray(16, 8000), "PNG"), DONE),
    Kind(
        "animated GIF",
        "animated.gif",
        _bytes(lambda: _animated("GIF")),
        SKIPPED,
        ("gif",),
        NOT_IMAGE,
    ),
    Kind("animated PNG", "animated.png", _bytes(lambda: _animated("PNG")), DONE),
    Kind("animated WebP", "animated.webp", _bytes(lambda: _animated("WEBP")), DONE),
    Kind("multi-page TIFF", "pages.tif", _bytes(_multipage_tiff), DONE),
    Kind(
        "float32 TIFF", "float.tif", _bytes(_float_tiff), FAILED, ("float",), "decode.unsupported"
    ),
    Kind("16-bit PNG", "deep.png", _bytes(lambda: _sixteen_bit("PNG")), DONE),
    Kind("16-bit TIFF", "deep.tif", _bytes(lambda: _sixteen_bit("TIFF")), DONE),
    Kind("1-bit PNG", "bilevel.png", _bytes(lambda: _one_bit("PNG")), DONE),
    Kind("1-bit TIFF", "bilevel.tif", _bytes(lambda: _one_bit("TIFF")), DONE),
    Kind("CMYK JPEG", "cmyk.jpg", _bytes(lambda: _cmyk("JPEG")), DONE),
    Kind("CMYK TIFF", "cmyk.tif", _bytes(lambda: _cmyk("TIFF")), DONE),
    Kind("grey + alpha (LA)", "la.png", _bytes(lambda: _with_alpha("LA")), DONE),
    Kind("palette + alpha (PA)", "pa.png", _bytes(lambda: _with_alpha("PA")), DONE),
    Kind("palette with transparency", "palette.png", _bytes(_palette_transparency), DONE),
    Kind("EXIF orientation 6", "rotated-6.jpg", _bytes(lambda: _oriented(6)), DONE),
    Kind("EXIF orientation 8", "rotated-8.jpg", _bytes(lambda: _oriented(8)), DONE),
    Kind("corrupt EXIF", "bad-exif.jpg", _bytes(_corrupt_exif), DONE),
    Kind("corrupt ICC profile", "bad-icc.jpg", _bytes(_corrupt_icc), DONE),
    Kind("progressive JPEG", "progressive.jpg", _image(_gray, "JPEG", progressive=True), DONE),
    Kind("JPEG 2000", "scan.jp2", _image(_gray, "JPEG2000"), DONE),
    Kind("WebP", "scan.webp", _image(_gray, "WEBP", lossless=True), DONE),
    Kind("BMP", "scan.bmp", _image(_gray, "BMP"), DONE),
    Kind("already-colour RGB photo", "colour.jpg", _image(_colour, "JPEG"), DONE),
    Kind("name with spaces", "box 1/page one.png", _image(_gray, "PNG"), DONE),
    Kind("unicode name", "ünïcødé/写真 №1.png", _image(_gray, "PNG"), DONE),
    Kind("name not valid UTF-8", os.fsdecode(b"caf\xe9.png"), _image(_gray, "PNG"), DONE),
    Kind("leading dash", "-rf.png", _image(_gray, "PNG"), DONE),
    Kind("very long name (250 bytes)", "l" * 246 + ".png", _image(_gray, "PNG"), DONE),
    Kind("folder named like an image", "folder.jpg/inside.png", _image(_gray, "PNG"), DONE),
    Kind(
        "symlink to a file outside the source",
        "link-out.png",
        _link(_outside_file),
        SKIPPED,
        ("outside", "not followed"),
        "skip.link_outside",
    ),
    Kind(
        "symlink to a folder outside the source",
        "link-out-folder",
        _link(_outside_folder),
        SKIPPED,
        ("outside", "not followed"),
        "skip.link_outside",
    ),
    Kind(
        "symlink loop",
        "loop.png",
        _link(lambda path, _outside: path),
        SKIPPED,
        ("loop",),
        "skip.symlink_loop",
    ),
    Kind(
        "broken symlink",
        "dangling.png",
        _link(lambda path, _outside: path.parent / "gone.png"),
        SKIPPED,
        ("does not exist",),
        "skip.broken_link",
    ),
    Kind("FIFO named .png", "pipe.png", _fifo, SKIPPED, ("not a regular file",), "skip.not_a_file"),
    Kind(".DS_Store", ".DS_Store", _bytes(b"\x00\x00\x00\x01Bud1"), IGNORED, ("hidden",)),
    Kind("AppleDouble ._ file", "._scan.png", _bytes(b"\x00\x05\x16\x07"), IGNORED, ("hidden",)),
    Kind("Thumbs.db", "Thumbs.db", _bytes(b"\xd0\xcf\x11\xe0"), IGNORED, ("system",)),
    Kind("__MACOSX folder", "__MACOSX/scan.png", _image(_gray, "PNG"), IGNORED, ("system",)),
)

#: Only as a user other than root: root reads a file whatever its permissions.
UNREADABLE = Kind(
    "unreadable file (chmod 000)",
    "locked.png",
    _unreadable,
    SKIPPED,
    ("cannot be opened",),
    "skip.unreadable",
)


def write_corpus(root: Path, outside: Path, kinds: tuple[Kind, ...] = CORPUS) -> None:
    """Write every kind below ``root``; link targets go to ``outside``.

    Args:
        root: The corpus folder (created).
        outside: A folder beside it, outside the corpus.
    """
    root.mkdir(parents=True, exist_ok=True)
    outside.mkdir(parents=True, exist_ok=True)
    for kind in kinds:
        kind.write(root / kind.path, outside)
