"""Locations of collections and objects: ``s3://bucket/key`` URIs and local paths.

A location is parsed once into a frozen :class:`URI` and passed around as that value.

- ``s3://bucket/key/prefix``: the key is kept verbatim (no percent-decoding, as the AWS CLI
  does), except that a trailing ``/`` is dropped, so ``s3://b/scans`` and ``s3://b/scans/``
  name the same collection. Bucket names follow the current S3 naming rules.
- Local paths, absolute or relative, with an optional ``file://`` scheme (whose path is
  percent-decoded, as RFC 8089 asks). A local path is made absolute and normalised at parse
  time, against the current directory, because the catalog stores it and a worker may run
  elsewhere; symbolic links are left as they are. A local path whose name is not valid
  UTF-8 (Python keeps such bytes as lone surrogates) is written by ``str()`` as a
  percent-encoded ``file://`` URI, which any database accepts and which parses back to the
  same bytes.

Relative keys (what :meth:`URI.relative_to` returns and :func:`join` accepts) always use ``/``
and never contain ``.`` or ``..`` segments, empty segments or a leading ``/``: the output of an
image mirrors its relative key, so a key that could climb out of the output folder is refused.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import quote, unquote

from storage.errors import InvalidURI

__all__ = [
    "LOCAL",
    "S3",
    "URI",
    "check_relative",
    "contains",
    "holds_resolved",
    "join",
    "overlaps",
    "parse_uri",
]

#: Scheme of objects in an S3 bucket (or an S3-compatible service).
S3: Final = "s3"
#: Scheme of files on a local or mounted file system.
LOCAL: Final = "file"

#: Shortest and longest S3 bucket name, in characters.
_BUCKET_LENGTH: Final = (3, 63)
_BUCKET_RE: Final = re.compile(r"[a-z0-9][a-z0-9.-]*[a-z0-9]")
_IPV4_RE: Final = re.compile(r"\d{1,3}(\.\d{1,3}){3}")
_SCHEME_RE: Final = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


@dataclass(frozen=True, slots=True)
class URI:
    """A parsed location: an S3 object or prefix, or a local file or folder.

    Build one with :func:`parse_uri`; the constructor does not validate its fields.

    Attributes:
        scheme: ``"s3"`` or ``"file"``.
        bucket: The S3 bucket; empty for local paths.
        key: The S3 key without a leading or trailing ``/`` (empty for a whole bucket), or the
            absolute, normalised local path.
    """

    scheme: str
    bucket: str
    key: str

    def __str__(self) -> str:
        if self.scheme == S3:
            return f"s3://{self.bucket}/{self.key}" if self.key else f"s3://{self.bucket}"
        if not _is_utf8(self.key):
            # A file name that is not valid UTF-8 (bytes kept by Python as surrogates): a
            # percent-encoded file:// URI is valid text everywhere (PostgreSQL, JSON, a
            # terminal) and parse_uri() turns it back into exactly the same bytes.
            return "file://" + quote(os.fsencode(self.key), safe="/")
        return self.key

    @property
    def is_s3(self) -> bool:
        """Whether this location is in S3."""
        return self.scheme == S3

    @property
    def is_local(self) -> bool:
        """Whether this location is a local path."""
        return self.scheme == LOCAL

    @property
    def name(self) -> str:
        """The last segment of the key or path (empty for a whole bucket or ``/``)."""
        return self.key.rsplit("/", 1)[-1]

    @property
    def path(self) -> Path:
        """The local path of this location.

        Raises:
            InvalidURI: If this is an S3 location.
        """
        if self.scheme != LOCAL:
            raise InvalidURI(f"{self} is not a local path")
        return Path(self.key)

    def relative_to(self, prefix: URI) -> str:
        """Return the relative key of this location under ``prefix``.

        Args:
            prefix: A folder or S3 prefix that contains this location.

        Returns:
            The ``/``-separated key below ``prefix``, e.g. ``"1920s/album 3/p001.tif"``.

        Raises:
            InvalidURI: If this location is not strictly inside ``prefix``, or the relative key
                would contain an unsafe segment.
        """
        if (self.scheme, self.bucket) != (prefix.scheme, prefix.bucket):
            raise InvalidURI(f"{self} is not inside {prefix}")
        if prefix.key in ("", "/"):
            head = prefix.key
        else:
            head = prefix.key + "/"
        if not self.key.startswith(head) or len(self.key) == len(head):
            raise InvalidURI(f"{self} is not inside {prefix}")
        return check_relative(self.key[len(head) :])

    def join(self, relative: str) -> URI:
        """Return the location of ``relative`` below this one; see :func:`join`."""
        return join(self, relative)


def parse_uri(location: str | os.PathLike[str] | URI) -> URI:
    """Parse an ``s3://`` URI or a local path (optionally ``file://``) into a :class:`URI`.

    Args:
        location: ``s3://bucket[/key]``, ``file:///abs/path``, or a local path, absolute or
            relative to the current directory. A :class:`URI` is returned unchanged.

    Returns:
        The parsed location.

    Raises:
        InvalidURI: If the location is empty, uses another scheme, names no bucket or a bucket
            that breaks the S3 naming rules, or has ``.``/``..`` segments in an S3 key.
    """
    if isinstance(location, URI):
        return location
    text = os.fspath(location)
    if not isinstance(text, str):
        raise InvalidURI(f"a location must be text, not {type(text).__name__}")
    if not text.strip():
        raise InvalidURI("empty location")
    if "\x00" in text:
        raise InvalidURI(f"location contains a NUL character: {text!r}")
    match = _SCHEME_RE.match(text)
    if match is None:
        return _local(text)
    scheme = match.group(1).lower()
    rest = text[match.end() :]
    if scheme == "s3":
        return _s3(text, rest)
    if scheme == "file":
        host, slash, path = rest.partition("/")
        if host not in ("", "localhost"):
            raise InvalidURI(f"file:// URIs with a host are not supported: {text!r}")
        if not slash:
            raise InvalidURI(f"file:// URI without a path: {text!r}")
        # surrogateescape: bytes that are not UTF-8 come back as the same bytes on disk.
        return _local("/" + unquote(path, errors="surrogateescape"))
    raise InvalidURI(f"unsupported scheme {scheme!r} in {text!r}: use s3:// or a local path")


def join(base: URI, relative: str) -> URI:
    """Return the location of the relative key ``relative`` below ``base``.

    Args:
        base: A folder or S3 prefix.
        relative: A ``/``-separated relative key, e.g. ``"album 3/p001.tif"``.

    Returns:
        The joined location, of the same scheme and bucket as ``base``.

    Raises:
        InvalidURI: If ``relative`` is empty, absolute, or has empty, ``.`` or ``..``
            segments.
    """
    relative = check_relative(relative)
    if base.key in ("", "/"):
        key = base.key + relative
    else:
        key = f"{base.key}/{relative}"
    return URI(base.scheme, base.bucket, key)


def contains(outer: URI, inner: URI) -> bool:
    """Tell whether ``inner`` is ``outer`` or lies below it.

    Local paths are compared after resolving symbolic links (the parts that exist), so a
    link into a folder counts as inside it. S3 locations are compared by bucket and whole
    key segments: ``s3://b/scans`` contains ``s3://b/scans/p1.tif`` but not
    ``s3://b/scans2``. Locations of different schemes never contain each other.

    Args:
        outer: A folder or S3 prefix.
        inner: Any location.

    Returns:
        True if ``inner`` equals ``outer`` or lies below it.
    """
    if outer.scheme != inner.scheme:
        return False
    if outer.scheme == LOCAL:
        return holds_resolved(os.path.realpath(outer.key), os.path.realpath(inner.key))
    if outer.bucket != inner.bucket:
        return False
    return not outer.key or inner.key == outer.key or inner.key.startswith(outer.key + "/")


def holds_resolved(top: str, path: str) -> bool:
    """Tell whether a local ``path`` is the folder ``top`` or lies below it, both resolved.

    ``contains()``'s rule for local paths, for callers that resolved them already.
    """
    return path == top or path.startswith(top.rstrip(os.sep) + os.sep)


def overlaps(first: URI, second: URI) -> bool:
    """Tell whether two locations are one, or one lies below the other (see :func:`contains`).

    Args:
        first: A folder or S3 prefix.
        second: Another one.

    Returns:
        True if either contains the other.
    """
    return contains(first, second) or contains(second, first)


def check_relative(relative: str) -> str:
    """Check that ``relative`` is a safe relative key and return it.

    Args:
        relative: A ``/``-separated relative key.

    Returns:
        ``relative``, unchanged.

    Raises:
        InvalidURI: If the key is empty, starts with ``/``, contains a NUL character, or has
            an empty, ``.`` or ``..`` segment.
    """
    if not relative:
        raise InvalidURI("empty relative key")
    if relative.startswith("/"):
        raise InvalidURI(f"relative key must not start with '/': {relative!r}")
    if "\x00" in relative:
        raise InvalidURI(f"relative key contains a NUL character: {relative!r}")
    for segment in relative.split("/"):
        if segment in ("", ".", ".."):
            raise InvalidURI(f"relative key has an empty, '.' or '..' segment: {relative!r}")
    return relative


def _is_utf8(text: str) -> bool:
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _local(text: str) -> URI:
    # abspath normalises "a/../b" lexically; the path is not resolved, so symlinks stay.
    return URI(LOCAL, "", os.path.abspath(text))


def _s3(text: str, rest: str) -> URI:
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise InvalidURI(f"S3 URI without a bucket: {text!r}")
    _check_bucket(bucket, text)
    key = key.rstrip("/")
    if key:
        for segment in key.split("/"):
            if segment in (".", ".."):
                raise InvalidURI(f"S3 key has a '.' or '..' segment: {text!r}")
    return URI(S3, bucket, key)


def _check_bucket(bucket: str, text: str) -> None:
    low, high = _BUCKET_LENGTH
    if not low <= len(bucket) <= high:
        raise InvalidURI(
            f"bucket name {bucket!r} in {text!r} must be {low} to {high} characters long"
        )
    if not _BUCKET_RE.fullmatch(bucket):
        raise InvalidURI(
            f"bucket name {bucket!r} in {text!r} may use only lower-case letters, digits, "
            "'.' and '-', and must start and end with a letter or digit"
        )
    if ".." in bucket or _IPV4_RE.fullmatch(bucket):
        raise InvalidURI(
            f"bucket name {bucket!r} in {text!r} must not contain '..' or look like an IP address"
        )
