"""Presigned GET links to S3 objects: opened by a browser with no credentials, until they expire.

A report of an S3 collection links its thumbnails and outputs this way. Links are signed
with Signature Version 4, the only one AWS accepts for buckets created since 2020, which
limits their life to :data:`MAX_EXPIRY_S` (7 days). Signing happens here, offline: no
request is sent, and whoever holds a link may read that one object until it expires.
Part of the S3 backend, so it may import boto3.
"""

from __future__ import annotations

import logging
from typing import Any, Final

import boto3
from botocore import exceptions as boto
from botocore.config import Config

from storage.errors import InvalidURI, StorageMisconfigured
from storage.options import StorageOptions
from storage.s3_errors import translate
from storage.uri import URI, parse_uri

__all__ = ["MAX_EXPIRY_S", "Presigner"]

logger = logging.getLogger(__name__)

#: Longest life of a Signature Version 4 link, in seconds (7 days).
MAX_EXPIRY_S: Final = 7 * 24 * 3600


class Presigner:
    """Signs GET links to S3 objects with the credentials of this process.

    Args:
        options: Endpoint, region and addressing style (those of the stores).
        expires_s: Life of each link, in seconds (1 to :data:`MAX_EXPIRY_S`).

    Raises:
        ValueError: If ``expires_s`` is out of range.
        StorageMisconfigured: If botocore refuses the endpoint.
    """

    def __init__(self, options: StorageOptions | None = None, *, expires_s: int) -> None:
        if not 1 <= expires_s <= MAX_EXPIRY_S:
            raise ValueError(f"a link lives 1 to {MAX_EXPIRY_S} seconds, not {expires_s}")
        self.options = options if options is not None else StorageOptions()
        self.expires_s = expires_s
        config = Config(
            signature_version="s3v4",
            s3={"addressing_style": self.options.addressing_style},
        )
        session = boto3.session.Session(region_name=self.options.region)
        try:
            self._client: Any = session.client(
                "s3", endpoint_url=self.options.endpoint_url, config=config
            )
        except ValueError as exc:  # botocore's "Invalid endpoint: ..."
            raise StorageMisconfigured(
                f"cannot sign S3 links for the endpoint {self.options.endpoint_url!r}: {exc}"
            ) from exc

    def url(self, uri: URI | str) -> str:
        """Return a link that reads one object without credentials until it expires.

        Args:
            uri: The ``s3://`` object.

        Returns:
            The presigned HTTPS (or the endpoint's scheme) URL.

        Raises:
            InvalidURI: If ``uri`` is not an S3 object.
            StorageMisconfigured: If this process has no credentials to sign with.
            StorageError: If signing fails otherwise.
        """
        location = parse_uri(uri)
        if not location.is_s3 or not location.key:
            raise InvalidURI(f"only S3 objects get presigned links, not {location}")
        try:
            url: str = self._client.generate_presigned_url(
                "get_object",
                Params={"Bucket": location.bucket, "Key": location.key},
                ExpiresIn=self.expires_s,
            )
        except (boto.BotoCoreError, boto.ClientError) as exc:
            endpoint = self.options.endpoint_url
            raise translate(
                exc, location, "sign a link to", endpoint_url=endpoint, attempts=1
            ) from exc
        return url
