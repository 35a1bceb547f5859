"""``StorageOptions``: how to reach the stores, one value from the settings to every backend.

``panchro`` builds it once from its settings (``Settings.storage_options()``) and hands it
down as it is: to :func:`~storage.registry.open_storage`, to the workers (in their
``WorkerConfig``) and to the commands. Each backend reads the fields it needs and checks their
ranges itself; a local store needs none. The values are plain, so the object pickles into
worker processes, which build their own clients from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = ["ADDRESSING_STYLES", "StorageOptions"]

#: Addressing styles of S3 requests: bucket in the path, in the host name, or chosen by botocore.
ADDRESSING_STYLES: Final = ("auto", "path", "virtual")


@dataclass(frozen=True, slots=True)
class StorageOptions:
    """The plain values the backends are built from.

    The tuning fields default to None: the backend's own default (the S3 ones are in
    :mod:`storage.s3_client`).

    Attributes:
        endpoint_url: Endpoint of an S3-compatible service (MinIO, Ceph, moto); None for AWS.
        region: S3 region name; None uses the standard AWS configuration chain.
        addressing_style: ``"auto"``, ``"path"`` or ``"virtual"``.
        max_attempts: Tries per request, the first included.
        connect_timeout: Seconds to wait for a connection.
        read_timeout: Seconds to wait for data on an open connection.
        multipart_threshold: Bytes from which a write is a multipart upload.
        multipart_chunksize: Bytes per part of a multipart upload.

    Raises:
        ValueError: If the addressing style is unknown or a number is not positive.
    """

    endpoint_url: str | None = None
    region: str | None = None
    addressing_style: str = "auto"
    max_attempts: int | None = None
    connect_timeout: float | None = None
    read_timeout: float | None = None
    multipart_threshold: int | None = None
    multipart_chunksize: int | None = None

    def __post_init__(self) -> None:
        if self.addressing_style not in ADDRESSING_STYLES:
            raise ValueError(
                f"addressing_style must be one of {', '.join(ADDRESSING_STYLES)}, "
                f"not {self.addressing_style!r}"
            )
        for name in ("max_attempts", "connect_timeout", "read_timeout", "multipart_threshold"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, not {value}")
