"""How botocore's errors become ``StorageError`` values that say what happened.

A missing key is ``ObjectNotFound``; connection errors, timeouts, 5xx and throttling are
``StorageUnavailable``; refused access and unknown or expired keys are ``AccessDenied``;
missing credentials, a missing bucket or a wrong endpoint (TLS errors, redirects to another
region) are ``StorageMisconfigured``: faults of this process's configuration, not of an
object, each naming bucket and key; a conditional write that finds the key taken is
``OutputExists``. Part of the S3 backend, so it may import botocore.
"""

from __future__ import annotations

from typing import Final

from botocore import exceptions as boto

from storage.errors import (
    AccessDenied,
    ObjectNotFound,
    OutputExists,
    StorageError,
    StorageMisconfigured,
    StorageUnavailable,
)
from storage.uri import URI

__all__ = ["error_code", "translate"]

#: Error codes of a missing key (HEAD requests carry no body, only the status).
_NOT_FOUND_CODES: Final = frozenset("NoSuchKey NotFound 404".split())
#: Error codes of refused access or credentials that will not pass by retrying.
_DENIED_CODES: Final = frozenset(
    "AccessDenied Forbidden 403 AllAccessDisabled AccountProblem InvalidAccessKeyId "
    "SignatureDoesNotMatch ExpiredToken InvalidToken".split()
)
#: Error codes of an endpoint or region that does not fit the bucket.
_MISDIRECTED_CODES: Final = frozenset(
    "PermanentRedirect AuthorizationHeaderMalformed IllegalLocationConstraintException".split()
)
#: Error codes of a conditional write (If-None-Match) that found the key taken.
_TAKEN_CODES: Final = frozenset("PreconditionFailed 412".split())
#: Error codes that may pass (besides any 5xx or 429 status).
_TRANSIENT_CODES: Final = frozenset(
    "SlowDown Throttling ThrottlingException TooManyRequestsException RequestLimitExceeded "
    "BandwidthLimitExceeded RequestTimeout ServiceUnavailable InternalError OperationAborted "
    "ConditionalRequestConflict".split()
)


def translate(
    exc: Exception, location: URI, action: str, *, endpoint_url: str | None, attempts: int
) -> StorageError:
    """Translate a botocore error into the StorageError subclass that says what happened.

    Args:
        exc: A ``botocore`` ``ClientError`` or ``BotoCoreError``.
        location: The object or prefix the request was about.
        action: What was being done (``"read"``, ``"write"``, ...), for the message.
        endpoint_url: The endpoint asked; None for AWS.
        attempts: Tries the client made, for the message.

    Returns:
        The error to raise in its place.
    """
    where = endpoint_url or "AWS"
    if isinstance(exc, boto.ClientError):
        code = error_code(exc)
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        message = exc.response.get("Error", {}).get("Message") or code
        if code in _NOT_FOUND_CODES:
            return ObjectNotFound(f"{location} does not exist")
        if code in _TAKEN_CODES:  # only conditional writes send a precondition
            return OutputExists(f"{location} was created or changed while it was written")
        if code == "NoSuchBucket":
            return StorageMisconfigured(
                f"cannot {action} {location}: bucket {location.bucket!r} does not exist "
                f"at {where}; check PANCHRO_S3_ENDPOINT_URL"
            )
        if code in _MISDIRECTED_CODES:
            return StorageMisconfigured(
                f"cannot {action} {location}: {where} answered {code} ({message}); check "
                "PANCHRO_S3_ENDPOINT_URL and PANCHRO_S3_REGION"
            )
        if code in _DENIED_CODES:
            return AccessDenied(
                f"cannot {action} {location}: access denied to bucket "
                f"{location.bucket!r}, key {location.key!r} ({code}); check the "
                "credentials and the bucket policy"
            )
        if code in _TRANSIENT_CODES or status >= 500 or status == 429:
            return StorageUnavailable(
                f"cannot {action} {location} now: S3 answered {code} after "
                f"{attempts} tries: {message}"
            )
        return StorageError(f"cannot {action} {location}: {code}: {message}")
    if isinstance(exc, boto.NoCredentialsError | boto.PartialCredentialsError):
        return StorageMisconfigured(
            f"cannot {action} {location}: no usable AWS credentials ({exc}); set "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile or an instance role"
        )
    if isinstance(exc, boto.SSLError):
        return StorageMisconfigured(f"cannot {action} {location}: TLS error with {where}: {exc}")
    if isinstance(
        exc,
        boto.ConnectionError
        | boto.HTTPClientError
        | boto.IncompleteReadError
        | boto.CredentialRetrievalError,
    ):
        return StorageUnavailable(
            f"cannot {action} {location} now: {where} unreachable after {attempts} tries: {exc}"
        )
    return StorageError(f"cannot {action} {location}: {exc}")


def error_code(exc: boto.ClientError) -> str:
    """Return the error code of a botocore ``ClientError`` (empty if it has none).

    Args:
        exc: The error.

    Returns:
        The code, e.g. ``"NoSuchKey"``.
    """
    return str(exc.response.get("Error", {}).get("Code", ""))
