"""The one configuration object of panchro, read from ``PANCHRO_*`` environment variables.

Only the ``panchro`` package reads the environment. Everything else receives plain values
built from :class:`Settings` (``create_app(broker_url=...)``, ``make_sessionmaker(url)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ddcolor.errors import InvalidSize
from ddcolor.registry import (
    BACKENDS,
    DEFAULT_BACKEND,
    DEFAULT_SIZE,
    PRECISION_CHOICES,
    validate_size,
)
from storage.options import ADDRESSING_STYLES, StorageOptions
from workers.app import SOFT_TIME_LIMIT_S, TIME_LIMIT_S, check_limits

#: Database used when none is configured: a SQLite file in the working directory.
DEFAULT_DATABASE_URL = "sqlite:///panchro.sqlite3"
#: Broker used when none is configured.
DEFAULT_BROKER_URL = "redis://127.0.0.1:6379/0"
#: Broker URL schemes: Redis (``rediss`` with TLS), and ``memory`` for one process.
BROKER_SCHEMES = ("redis", "rediss", "memory")
#: Fewest characters of a Flower or metrics password: Flower can cancel and shut down workers.
MIN_PASSWORD_LENGTH = 12
#: The catalog URLs panchro supports, as said in errors.
DATABASE_FORMS = "postgresql+psycopg://USER@HOST/DB or sqlite:///PATH"


class Settings(BaseSettings):
    """Validated configuration; each field is also a command-line option."""

    model_config = SettingsConfigDict(env_prefix="PANCHRO_", extra="ignore")

    database_url: str = Field(DEFAULT_DATABASE_URL, description="SQLAlchemy URL of the catalog")
    broker_url: str = Field(DEFAULT_BROKER_URL, description="Celery broker URL (Redis)")
    s3_endpoint_url: str | None = Field(None, description="S3 endpoint for non-AWS stores")
    s3_region: str | None = Field(None, description="S3 region name")
    s3_addressing_style: str = Field("auto", description="S3 addressing: auto, path or virtual")
    weights: Path | None = Field(None, description="DDColor checkpoint file")
    weights_dir: Path = Field(
        Path.home() / ".cache" / "panchro" / "weights",
        description="Folder where `panchro weights fetch` stores checkpoints",
    )
    device: str = Field("auto", description="auto, cpu, cuda or cuda:N")
    precision: str = Field("auto", description="auto, fp16, bf16 or fp32")
    backend: str = Field(DEFAULT_BACKEND, description="What runs the network: torch or onnx")
    max_in_flight: int = Field(200, ge=1, description="Most tasks kept in the broker at once")
    flower_user: str | None = Field(None, description="Flower basic-auth user")
    flower_password: str | None = Field(None, description="Flower basic-auth password")
    metrics_user: str | None = Field(None, description="`panchro metrics` basic-auth user")
    metrics_password: str | None = Field(
        None,
        description=f"`panchro metrics` basic-auth password, at least "
        f"{MIN_PASSWORD_LENGTH} characters",
    )
    soft_time_limit: float = Field(
        SOFT_TIME_LIMIT_S, gt=0, description="Seconds after which a task is asked to stop"
    )
    time_limit: float = Field(
        TIME_LIMIT_S, gt=0, description="Seconds after which the process of a task is killed"
    )
    visibility_timeout: int | None = Field(
        None,
        gt=0,
        description="Seconds Redis waits for an acknowledgement before redelivering a message; "
        "default twice the time limit",
    )
    worker_size: int | None = Field(
        None,
        description=f"Input size in pixels of the workers for collections submitted without "
        f"--size or --preset, and of their warm-up pass; default {DEFAULT_SIZE}",
    )
    batch_size: int | None = Field(
        None,
        ge=1,
        le=64,
        description="Images of a collection colorized together in one forward of the "
        "network; default 4 on a GPU, 1 on the CPU",
    )
    retry_backoff: int | None = Field(
        None,
        ge=1,
        description="Seconds before a worker retries an image whose catalog, broker or store "
        "was unavailable; each further retry waits up to twice as long; default 10",
    )
    retry_backoff_max: int | None = Field(
        None, ge=1, description="Seconds that no such retry waits longer than; default 60"
    )

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        return check_database_url(value)

    @field_validator("broker_url")
    @classmethod
    def _check_broker_url(cls, value: str) -> str:
        scheme = urlsplit(value).scheme if "://" in value else ""
        if scheme not in BROKER_SCHEMES:
            raise ValueError(
                f"{redact_url(value)!r} is not a broker URL: use redis://HOST:6379/0 "
                "(rediss:// with TLS)"
            )
        if scheme != "memory" and not urlsplit(value).hostname:
            raise ValueError(f"{redact_url(value)!r} names no host: use redis://HOST:6379/0")
        return value

    @field_validator("s3_endpoint_url")
    @classmethod
    def _check_s3_endpoint_url(cls, value: str | None) -> str | None:
        if not value:  # an empty variable (compose's ${VAR:-}) means unset
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"{value!r} is not an S3 endpoint URL: use http(s)://HOST[:PORT] "
                "(or leave it unset for AWS)"
            )
        return value

    @field_validator("flower_password")
    @classmethod
    def _check_flower_password(cls, value: str | None) -> str | None:
        return check_flower_password(value)

    @field_validator("precision")
    @classmethod
    def _check_precision(cls, value: str) -> str:
        if value not in PRECISION_CHOICES:
            choices = ", ".join(PRECISION_CHOICES)
            raise ValueError(f"precision must be one of {choices}, not {value!r}")
        return value

    @field_validator("backend")
    @classmethod
    def _check_backend(cls, value: str) -> str:
        if value not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {value!r}")
        return value

    @field_validator("worker_size")
    @classmethod
    def _check_worker_size(cls, value: int | None) -> int | None:
        if value is None:
            return None
        try:
            return validate_size(value)
        except InvalidSize as exc:
            raise ValueError(str(exc)) from exc

    @field_validator("s3_addressing_style")
    @classmethod
    def _check_addressing(cls, value: str) -> str:
        if value not in ADDRESSING_STYLES:
            raise ValueError(
                f"s3_addressing_style must be {', '.join(ADDRESSING_STYLES)}, not {value!r}"
            )
        return value

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
            return value
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, not {value!r}")

    @field_validator("metrics_user", "metrics_password")
    @classmethod
    def _check_metrics_credential(cls, value: str | None) -> str | None:
        return value or None  # an empty variable (compose's ${VAR:-}) means unset

    @model_validator(mode="after")
    def _check_metrics_auth(self) -> Self:
        if bool(self.metrics_user) != bool(self.metrics_password):
            raise ValueError(
                "set both PANCHRO_METRICS_USER and PANCHRO_METRICS_PASSWORD, or neither"
            )
        if self.metrics_user is not None and ":" in self.metrics_user:
            raise ValueError("the metrics user may not contain ':'")
        password = self.metrics_password
        if password is not None and len(password) < MIN_PASSWORD_LENGTH:
            raise ValueError(
                f"PANCHRO_METRICS_PASSWORD must have at least {MIN_PASSWORD_LENGTH} "
                f"characters, not {len(password)}"
            )
        return self

    @model_validator(mode="after")
    def _check_limits(self) -> Self:
        # One check for the settings and for create_app(), with the same one-line message.
        check_limits(self.soft_time_limit, self.time_limit, self.visibility_timeout)
        return self

    def celery_limits(self) -> dict[str, Any]:
        """Return the time limits and visibility timeout as ``create_app()`` keywords.

        Returns:
            ``soft_time_limit``, ``time_limit`` and ``visibility_timeout``.
        """
        return {
            "soft_time_limit": self.soft_time_limit,
            "time_limit": self.time_limit,
            "visibility_timeout": self.visibility_timeout,
        }

    def storage_options(self) -> StorageOptions:
        """Return how to reach the stores, the one value handed to every backend.

        Returns:
            The S3 endpoint, region and addressing style as :class:`StorageOptions`.
        """
        return StorageOptions(
            endpoint_url=self.s3_endpoint_url,
            region=self.s3_region,
            addressing_style=self.s3_addressing_style,
        )


def check_flower_password(value: str | None) -> str | None:
    """Refuse a Flower password shorter than :data:`MIN_PASSWORD_LENGTH` characters.

    Args:
        value: The password, or None (no password).

    Returns:
        The password, or None for None and for an empty value (unset).

    Raises:
        ValueError: If it is too short.
    """
    if not value:
        return None
    if len(value) < MIN_PASSWORD_LENGTH:
        raise ValueError(
            f"the Flower password has {len(value)} characters; use at least "
            f"{MIN_PASSWORD_LENGTH} (e.g. `openssl rand -base64 18`)"
        )
    return value


def check_database_url(value: str) -> str:
    """Check that a catalog URL is one panchro can use, without connecting.

    Args:
        value: A SQLAlchemy URL.

    Returns:
        ``value``, unchanged.

    Raises:
        ValueError: Saying what to write instead: ``postgres://`` (not a SQLAlchemy
            scheme), other databases (MySQL...), a driver that is not installed, or
            text that is no URL at all.
    """
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        url = make_url(value)
    except (ArgumentError, ValueError) as exc:
        raise ValueError(f"{value!r} is not a database URL: use {DATABASE_FORMS}") from exc
    backend = url.drivername.split("+", 1)[0]
    shown = url.render_as_string(hide_password=True)
    if backend == "postgres":
        raise ValueError(
            f"{shown!r}: SQLAlchemy does not know postgres://; write postgresql+psycopg://"
        )
    if backend not in ("postgresql", "sqlite"):
        raise ValueError(f"{shown!r}: {backend} is not supported; use {DATABASE_FORMS}")
    try:
        url.get_dialect().import_dbapi()
    except (NoSuchModuleError, ImportError) as exc:
        raise ValueError(
            f"{shown!r}: the driver of {url.drivername} cannot be loaded ({exc}); "
            f"use {DATABASE_FORMS}"
        ) from exc
    return value


def redact_url(url: str) -> str:
    """Return a URL fit for messages: its password, if any, masked as ``***``.

    Works on any URL (database, broker, endpoint), parsed or not by SQLAlchemy.

    Args:
        url: A URL, perhaps with a password.

    Returns:
        The URL with ``***`` in place of its password.
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
