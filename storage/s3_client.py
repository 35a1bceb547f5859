"""The S3 backend's defaults, and its boto3 client: built from plain values, once per process.

The client is built from :class:`~storage.options.StorageOptions` (endpoint, region,
addressing style) and :class:`S3Limits` (retries, timeouts, multipart sizes: the options'
values, or this module's ``S3_*`` defaults where they are unset) on first use, once per
process: a forked worker notices the new process id and builds its own, since a client's
connection pool must not be shared across a fork.

Checksums: request and response checksums are computed only where S3 requires them, because
several S3-compatible services reject the CRC headers newer botocore versions add by default.
Part of the S3 backend, so it may import boto3.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from typing import Any, Final

import boto3
from botocore.config import Config

from storage.errors import StorageMisconfigured
from storage.options import StorageOptions

__all__ = [
    "S3_CONNECT_TIMEOUT",
    "S3_MAX_ATTEMPTS",
    "S3_MIN_PART_SIZE",
    "S3_MULTIPART_CHUNKSIZE",
    "S3_MULTIPART_THRESHOLD",
    "S3_READ_TIMEOUT",
    "ProcessClient",
    "S3Limits",
]

logger = logging.getLogger(__name__)

#: Tries per S3 request, the first included.
S3_MAX_ATTEMPTS: Final = 5
#: Seconds to wait for an S3 connection (TCP and TLS).
S3_CONNECT_TIMEOUT: Final = 10.0
#: Seconds to wait for S3 data on an open connection.
S3_READ_TIMEOUT: Final = 60.0
#: Bytes from which an S3 write is a multipart upload instead of one PUT.
S3_MULTIPART_THRESHOLD: Final = 64 * 1024 * 1024
#: Bytes per part of a multipart upload (S3 allows 10,000 parts: objects up to 160 GiB).
S3_MULTIPART_CHUNKSIZE: Final = 16 * 1024 * 1024
#: Bytes: S3's smallest allowed part of a multipart upload, except the last one.
S3_MIN_PART_SIZE: Final = 5 * 1024 * 1024
#: Connections kept per client; a scan reads object heads from several threads.
MAX_POOL_CONNECTIONS: Final = 32


@dataclass(frozen=True, slots=True)
class S3Limits:
    """Retries, timeouts and multipart sizes of the S3 backend, every one of them set.

    Attributes:
        max_attempts: Tries per request, the first included.
        connect_timeout: Seconds to wait for a connection.
        read_timeout: Seconds to wait for data on an open connection.
        multipart_threshold: Bytes from which a write is a multipart upload.
        multipart_chunksize: Bytes per part; at least S3's 5 MiB minimum.

    Raises:
        ValueError: If the part size is below S3's minimum.
    """

    max_attempts: int = S3_MAX_ATTEMPTS
    connect_timeout: float = S3_CONNECT_TIMEOUT
    read_timeout: float = S3_READ_TIMEOUT
    multipart_threshold: int = S3_MULTIPART_THRESHOLD
    multipart_chunksize: int = S3_MULTIPART_CHUNKSIZE

    def __post_init__(self) -> None:
        if self.multipart_chunksize < S3_MIN_PART_SIZE:
            raise ValueError(
                f"multipart_chunksize must be at least {S3_MIN_PART_SIZE} bytes "
                f"(S3's smallest part), not {self.multipart_chunksize}"
            )

    @classmethod
    def from_options(cls, options: StorageOptions) -> S3Limits:
        """Take the options' values, and the defaults for those unset.

        Args:
            options: The storage options.

        Returns:
            The limits.

        Raises:
            ValueError: If the part size is below S3's minimum.
        """
        given = {
            name: getattr(options, name)
            for name in cls.__dataclass_fields__
            if getattr(options, name) is not None
        }
        return cls(**given)


class ProcessClient:
    """The boto3 S3 client of the current process, built on first use.

    Args:
        options: Endpoint, region and addressing style.
        limits: Retries and timeouts.
    """

    def __init__(self, options: StorageOptions, limits: S3Limits) -> None:
        self.options = options
        self.limits = limits
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._client: Any = None

    def get(self) -> Any:
        """Return this process's client, building it if this process has none yet.

        Returns:
            A boto3 S3 client.

        Raises:
            StorageMisconfigured: If botocore refuses the endpoint.
        """
        pid = os.getpid()
        if self._pid != pid:
            if self._pid is not None:
                # Forked: the parent's lock may be held by a thread that does not exist here.
                self._lock = threading.Lock()
            with self._lock:
                if self._pid != pid:
                    self._client = self._build()
                    self._pid = pid
        return self._client

    def _build(self) -> Any:
        options, limits = self.options, self.limits
        config = Config(
            connect_timeout=limits.connect_timeout,
            read_timeout=limits.read_timeout,
            retries={"mode": "standard", "max_attempts": limits.max_attempts},
            s3={"addressing_style": options.addressing_style},
            max_pool_connections=MAX_POOL_CONNECTIONS,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        # A session per storage: boto3's default session is not safe to share across threads.
        session = boto3.session.Session(region_name=options.region)
        logger.debug("creating S3 client for endpoint %s", options.endpoint_url or "AWS")
        try:
            return session.client("s3", endpoint_url=options.endpoint_url, config=config)
        except ValueError as exc:  # botocore's "Invalid endpoint: ..."
            raise StorageMisconfigured(
                f"cannot use the S3 endpoint {options.endpoint_url!r}: {exc}; set "
                "PANCHRO_S3_ENDPOINT_URL to http(s)://host[:port]"
            ) from exc
