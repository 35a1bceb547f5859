"""``S3Storage``: collections in S3 buckets or S3-compatible services (MinIO, Ceph, moto).

With :mod:`storage.s3_client` and :mod:`storage.s3_errors`, the only modules that import boto3
and botocore. The client is built from plain values (:class:`~storage.options.StorageOptions`)
once per process (:class:`~storage.s3_client.ProcessClient`); the storage object pickles to
those plain values, never to a client.

Requests use botocore's ``standard`` retry mode (backoff with jitter on throttling, 5xx and
connection errors). What still fails is translated where it happens
(:func:`storage.s3_errors.translate`): missing keys, unreachable services, refused access and
misconfiguration each become the ``StorageError`` that says so.

Writes below ``multipart_threshold`` are one PUT. Larger ones are a multipart upload that only
becomes visible when it is completed; any failure on the way aborts it, so a reader never sees a
partial object. ``overwrite=False`` sends ``If-None-Match: *`` (honoured by AWS since 2024) after
a HEAD check, which also covers services that ignore the header; replacing an object whose
content the caller may replace sends ``If-Match`` with the ETag read with that content (moto
honours both on PutObject, and ``If-None-Match`` on CompleteMultipartUpload; it ignores
``If-Match`` there, where only the check before the upload protects).
"""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, BinaryIO, Final

from botocore import exceptions as boto

from storage.base import (
    CHECKSUM_ETAG,
    Data,
    ObjectInfo,
    Prune,
    SkipListener,
    sha256_of_chunks,
)
from storage.errors import InvalidURI, ObjectNotFound, OutputExists
from storage.options import StorageOptions
from storage.s3_client import ProcessClient, S3Limits
from storage.s3_errors import error_code, translate
from storage.skips import SKIP_FOLDER_MARKER
from storage.streams import exact_chunks, read_up_to
from storage.uri import S3, URI, parse_uri

__all__ = ["S3Storage"]

logger = logging.getLogger(__name__)

#: Bytes read at a time from an existing object whose content is being checked.
CHECK_CHUNK_SIZE: Final = 1024 * 1024
#: Keys per list_objects_v2 page (S3's maximum).
LIST_PAGE_SIZE: Final = 1000

#: Prefix of the key of the multipart upload that :meth:`S3Storage.check_writable` aborts.
WRITE_CHECK_PREFIX: Final = ".panchro-write-check-"


class S3Storage:
    """Objects in S3 or an S3-compatible service, addressed by ``s3://bucket/key`` URIs.

    One instance serves any number of buckets and threads. Create it once per worker process;
    the boto3 client is built lazily on first use.

    Args:
        options: How to reach the service; None for AWS with default settings. Unset
            tuning fields take the defaults of :mod:`storage.s3_client`.

    Attributes:
        options: The options it was built from.
        limits: Its retries, timeouts and multipart sizes.

    Raises:
        ValueError: If the part size is below S3's 5 MiB minimum.
    """

    def __init__(self, options: StorageOptions | None = None) -> None:
        self.options = options if options is not None else StorageOptions()
        self.limits = S3Limits.from_options(self.options)
        self._client = ProcessClient(self.options, self.limits)

    def __repr__(self) -> str:
        return f"S3Storage({self.options!r})"

    def __reduce__(self) -> tuple[type[S3Storage], tuple[StorageOptions]]:
        # Pickle the plain options only; the copy builds its own client when first used.
        return (S3Storage, (self.options,))

    @property
    def client(self) -> Any:
        """The boto3 S3 client of this process, built on first use."""
        return self._client.get()

    def list(
        self,
        prefix: URI | str,
        *,
        on_skip: SkipListener | None = None,
        prune: Prune | None = None,
    ) -> Iterator[ObjectInfo]:
        """Yield every object below a prefix, in S3's key order.

        ``s3://b/scans`` lists keys starting with ``scans/``, never ``scans2/``. If there are
        none but ``scans`` is itself an object, that object is listed alone, under its name.

        Args:
            prefix: An S3 prefix, or a whole bucket.
            on_skip: Told ``(relative key, "folder-marker")`` for ``folder/`` placeholders.
            prune: Ignored: S3 has no folders to step over.

        Returns:
            An iterator of :class:`ObjectInfo` with ``checksum_kind`` ``"etag"``.

        Raises:
            StorageError: If the bucket does not exist or access is denied (on iteration).
            StorageUnavailable: If S3 cannot be reached (on iteration).
        """
        return self._list(_s3(prefix), on_skip)

    def _list(self, location: URI, on_skip: SkipListener | None) -> Iterator[ObjectInfo]:
        head = location.key + "/" if location.key else ""
        found = False
        with self._translated(location, "list"):
            paginator = self.client.get_paginator("list_objects_v2")
            pages = paginator.paginate(
                Bucket=location.bucket,
                Prefix=head,
                PaginationConfig={"PageSize": LIST_PAGE_SIZE},
            )
            for page in pages:
                for item in page.get("Contents", ()):
                    found = True
                    key: str = item["Key"]
                    relative = key[len(head) :]
                    if key.endswith("/"):
                        if relative and on_skip is not None:
                            on_skip(relative, SKIP_FOLDER_MARKER)
                        continue
                    yield _info(URI(S3, location.bucket, key), relative, item, "Size")
        if not found and location.key and self.exists(location):
            yield self.stat(location)

    def read(self, uri: URI | str) -> bytes:
        """Return the whole content of an object.

        Args:
            uri: The object.

        Returns:
            Its bytes.

        Raises:
            ObjectNotFound: If the key does not exist.
            StorageError: If the bucket is missing or access is denied.
            StorageUnavailable: If S3 cannot be reached or the transfer breaks.
        """
        return self._get(_s3(uri), None)

    def sha256(self, uri: URI | str) -> str:
        """Return the SHA-256 of an object's content, streamed (never whole in memory).

        Args:
            uri: The object.

        Returns:
            64 lower-case hex digits.

        Raises:
            ObjectNotFound: If the key does not exist.
            StorageError: If the bucket is missing or access is denied.
            StorageUnavailable: If S3 cannot be reached or the transfer breaks.
        """
        return sha256_of_chunks(self.read_chunks(uri))

    def read_chunks(self, uri: URI | str, chunk_size: int = CHECK_CHUNK_SIZE) -> Iterator[bytes]:
        """Yield the content of an object in pieces from one streamed GET.

        Args:
            uri: The object.
            chunk_size: Bytes per piece (the last one may be shorter).

        Returns:
            An iterator of the pieces, in order; the request is sent on the first ``next()``.

        Raises:
            ObjectNotFound: If the key does not exist (on iteration).
            StorageError: If the bucket is missing or access is denied (on iteration).
            StorageUnavailable: If S3 cannot be reached or the transfer breaks (on iteration).
        """
        location = _s3(uri)
        with self._translated(location, "read"):
            body = self.client.get_object(Bucket=location.bucket, Key=location.key)["Body"]
            try:
                yield from body.iter_chunks(chunk_size)
            finally:
                body.close()

    def read_head(self, uri: URI | str, n: int) -> bytes:
        """Return the first ``n`` bytes of an object with one ranged GET.

        Args:
            uri: The object.
            n: How many bytes to read; at least 0.

        Returns:
            At most ``n`` bytes (fewer, or none, for a shorter object).

        Raises:
            ValueError: If ``n`` is negative.
            ObjectNotFound: If the key does not exist.
            StorageError: If the bucket is missing or access is denied.
            StorageUnavailable: If S3 cannot be reached.
        """
        if n < 0:
            raise ValueError(f"cannot read {n} bytes")
        location = _s3(uri)
        if n == 0:
            self.stat(location)
            return b""
        return self._get(location, f"bytes=0-{n - 1}")

    def _get(self, location: URI, byte_range: str | None) -> bytes:
        extra = {"Range": byte_range} if byte_range else {}
        with self._translated(location, "read"):
            try:
                response = self.client.get_object(Bucket=location.bucket, Key=location.key, **extra)
            except boto.ClientError as exc:
                if byte_range and error_code(exc) == "InvalidRange":
                    return b""  # the range starts past the end: the object is empty
                raise
            body = response["Body"]
            try:
                return bytes(body.read())
            finally:
                body.close()

    def write(
        self,
        uri: URI | str,
        data: Data,
        *,
        content_type: str | None = None,
        overwrite: bool = True,
        replaceable: Collection[str] = (),
    ) -> None:
        """Write an object: one PUT below ``multipart_threshold``, else a multipart upload.

        With ``overwrite=False`` the object is looked up first (HEAD). A missing one is
        written with ``If-None-Match: *``; an existing one is replaced only if the
        SHA-256 of its content (one GET) is one of ``replaceable``, and then with
        ``If-Match`` on the ETag that was read, so that an object changed meanwhile is
        not replaced. A precondition that fails is looked at again once (the store may
        have kept a write whose answer was lost, and its retry then finds our object).

        Args:
            uri: The object to write.
            data: The content: bytes, or a binary file object read to its end. An exception
                raised by the file object propagates unchanged (a started multipart upload is
                aborted first).
            content_type: The object's ``Content-Type``.
            overwrite: Whether to replace an existing object unconditionally.
            replaceable: With ``overwrite=False``, SHA-256 digests of contents that may be
                replaced.

        Raises:
            OutputExists: If the key exists and may not be replaced; it is left untouched.
            StorageError: If the bucket is missing or access is denied.
            StorageUnavailable: If S3 cannot be reached; nothing has become visible.
        """
        location = _s3(uri)
        if not location.key:
            raise InvalidURI(f"cannot write to a whole bucket: {location}")
        stream: BinaryIO = (
            io.BytesIO(data) if isinstance(data, bytes | bytearray | memoryview) else data
        )
        extra: dict[str, str] = {"ContentType": content_type} if content_type else {}
        if overwrite:
            self._put(location, stream, extra, {})
            return
        allowed = frozenset(replaceable)
        start = stream.tell() if stream.seekable() else None
        tries = 2 if start is not None else 1
        for tried in range(1, tries + 1):
            condition = self._write_condition(location, allowed)
            try:
                self._put(location, stream, extra, condition)
                return
            except OutputExists:
                if tried == tries:
                    raise
            assert start is not None
            stream.seek(start)

    def _write_condition(self, location: URI, replaceable: frozenset[str]) -> dict[str, str]:
        """Return the precondition of a write that may replace only ``replaceable`` contents."""
        try:
            self.stat(location)
        except ObjectNotFound:
            return {"IfNoneMatch": "*"}
        if not replaceable:
            raise OutputExists(f"{location} exists and overwriting is not allowed")
        with self._translated(location, "read"):
            response = self.client.get_object(Bucket=location.bucket, Key=location.key)
            body = response["Body"]
            try:
                digest = sha256_of_chunks(body.iter_chunks(CHECK_CHUNK_SIZE))
            finally:
                body.close()
        if digest not in replaceable:
            raise OutputExists(
                f"{location} exists with other content (sha256 {digest})", sha256=digest
            )
        return {"IfMatch": str(response["ETag"])}

    def _put(
        self, location: URI, stream: BinaryIO, extra: dict[str, str], condition: dict[str, str]
    ) -> None:
        with self._translated(location, "write"):
            first = read_up_to(stream, self.limits.multipart_threshold)
            if len(first) < self.limits.multipart_threshold:
                self.client.put_object(
                    Bucket=location.bucket, Key=location.key, Body=first, **extra, **condition
                )
                logger.debug("put %s (%d bytes)", location, len(first))
            else:
                self._upload_parts(location, first, stream, extra, condition)

    def _upload_parts(
        self,
        location: URI,
        first: bytes,
        stream: BinaryIO,
        extra: dict[str, str],
        condition: dict[str, str],
    ) -> None:
        client = self.client
        chunk = self.limits.multipart_chunksize
        upload_id = client.create_multipart_upload(
            Bucket=location.bucket, Key=location.key, **extra
        )["UploadId"]
        try:
            parts = []
            for number, body in enumerate(exact_chunks(first, stream, chunk), start=1):
                response = client.upload_part(
                    Bucket=location.bucket,
                    Key=location.key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=body,
                )
                parts.append({"ETag": response["ETag"], "PartNumber": number})
            client.complete_multipart_upload(
                Bucket=location.bucket,
                Key=location.key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                **condition,
            )
        except BaseException:
            self._abort(location, upload_id)
            raise
        logger.debug("uploaded %s in %d parts", location, len(parts))

    def _abort(self, location: URI, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(
                Bucket=location.bucket, Key=location.key, UploadId=upload_id
            )
        except (boto.ClientError, boto.BotoCoreError) as exc:
            # The upload stays invisible; a bucket lifecycle rule removes abandoned parts.
            logger.warning("cannot abort multipart upload of %s: %s", location, exc)

    def exists(self, uri: URI | str) -> bool:
        """Return whether an object exists at ``uri`` (one HEAD request).

        Args:
            uri: The object.

        Returns:
            True if the key exists.

        Raises:
            StorageError: If access is denied (S3 then cannot tell).
            StorageUnavailable: If S3 cannot be reached.
        """
        try:
            self.stat(uri)
        except ObjectNotFound:
            return False
        return True

    def stat(self, uri: URI | str) -> ObjectInfo:
        """Return size, ETag and modification time of one object (one HEAD request).

        Args:
            uri: The object.

        Returns:
            Its :class:`ObjectInfo`, with ``relative`` set to the last segment of the key.

        Raises:
            ObjectNotFound: If the key does not exist.
            StorageError: If access is denied.
            StorageUnavailable: If S3 cannot be reached.
        """
        location = _s3(uri)
        with self._translated(location, "inspect"):
            head = self.client.head_object(Bucket=location.bucket, Key=location.key)
        return _info(location, location.name, head, "ContentLength")

    def check_writable(self, prefix: URI | str) -> None:
        """Check that this process may write below a prefix, leaving nothing behind.

        A multipart upload is started and aborted: no object ever becomes visible, and no
        delete permission is needed (the workers have none).

        Args:
            prefix: An S3 prefix, or a whole bucket.

        Raises:
            AccessDenied: If the credentials may not write there.
            StorageMisconfigured: If there are no credentials or the bucket does not exist.
            StorageUnavailable: If S3 cannot be reached.
        """
        location = _s3(prefix)
        head = location.key + "/" if location.key else ""
        target = URI(S3, location.bucket, f"{head}{WRITE_CHECK_PREFIX}{uuid.uuid4().hex}")
        with self._translated(target, "write"):
            upload_id = self.client.create_multipart_upload(Bucket=target.bucket, Key=target.key)[
                "UploadId"
            ]
        self._abort(target, upload_id)

    def visible_buckets(self) -> int:
        """Return how many buckets the credentials see (``panchro doctor``'s check).

        Returns:
            The number of buckets.

        Raises:
            StorageError: If the service refuses or cannot be reached.
        """
        with self._translated(URI(S3, "", ""), "list the buckets of"):
            return len(self.client.list_buckets().get("Buckets", []))

    @contextmanager
    def _translated(self, location: URI, action: str) -> Iterator[None]:
        """Raise the botocore errors of the block as the StorageError that says what happened."""
        try:
            yield
        except (boto.ClientError, boto.BotoCoreError) as exc:
            raise translate(
                exc,
                location,
                action,
                endpoint_url=self.options.endpoint_url,
                attempts=self.limits.max_attempts,
            ) from exc


def _s3(location: URI | str) -> URI:
    uri = parse_uri(location)
    if uri.scheme != S3:
        raise InvalidURI(f"S3Storage cannot handle {uri}")
    return uri


def _info(uri: URI, relative: str, fields: dict[str, Any], size_field: str) -> ObjectInfo:
    """Build an ObjectInfo from a listed item or a HEAD response (they name the size apart)."""
    etag = str(fields["ETag"]).strip('"')
    modified: datetime = fields["LastModified"]
    return ObjectInfo(
        uri, relative, int(fields[size_field]), etag, CHECKSUM_ETAG, modified.astimezone(UTC)
    )
