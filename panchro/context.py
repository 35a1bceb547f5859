"""The validated Settings of a running command: the environment, then the group's options.

The commands call :func:`load_settings`; it lives apart from ``panchro.cli`` so that the
commands never import the group that registers them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from panchro.settings import Settings

__all__ = ["SETTING_OPTIONS", "load_settings"]

#: Options of the group that override a Settings field of the same name.
SETTING_OPTIONS = ("database_url", "broker_url", "s3_endpoint_url")


def load_settings(ctx: click.Context, **overrides: Any) -> Settings:
    """Build the validated Settings: environment, then the group's options, then ``overrides``.

    Args:
        ctx: The click context of the running command.
        **overrides: Command options that replace a setting; ``None`` values are ignored.

    Returns:
        The validated settings.

    Raises:
        click.ClickException: The configuration is invalid; the message names the field.
    """
    from pydantic import ValidationError

    from panchro.settings import Settings

    values: dict[str, Any] = dict((ctx.find_root().obj or {}).get("overrides", {}))
    values.update({key: value for key, value in overrides.items() if value is not None})
    try:
        return Settings(**values)
    except ValidationError as exc:
        problems = "; ".join(
            ": ".join(
                part
                for part in (
                    ".".join(str(part) for part in err["loc"]),
                    err["msg"].removeprefix("Value error, "),
                )
                if part
            )
            for err in exc.errors()
        )
        raise click.ClickException(f"invalid configuration: {problems}") from exc
