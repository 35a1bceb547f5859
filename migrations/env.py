"""Alembic environment of the catalog: migrates the tables that ``catalog.models`` describes.

``migrations.runner`` builds the Alembic configuration in code and normally hands this
script an open connection (``config.attributes["connection"]``); otherwise it connects
to ``sqlalchemy.url`` itself. Type changes are compared, and on SQLite every operation
is rendered in batch mode, since SQLite can alter a table only by copying it.
"""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import Connection, DateTime, TypeDecorator, engine_from_config, pool

from catalog.models import Base

config = context.config
target_metadata = Base.metadata


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Render the catalog's UTC timestamp type as the plain column type it stores.

    Revisions must not import ``catalog``: they describe the schema as it was when they
    were written, whatever the models look like later.

    Args:
        type_: What is being rendered ("type", "column", "index"...).
        obj: The object being rendered.
        autogen_context: Alembic's rendering context.

    Returns:
        The source text of the type, or False for Alembic's default rendering.
    """
    if type_ == "type" and isinstance(obj, TypeDecorator) and isinstance(obj.impl, DateTime):
        return f"sa.DateTime(timezone={obj.impl.timezone!r})"
    return False


def _options(dialect_name: str) -> dict[str, Any]:
    return {
        "target_metadata": target_metadata,
        "compare_type": True,
        "render_as_batch": dialect_name == "sqlite",
        "render_item": render_item,
    }


def run_migrations_offline() -> None:
    """Write the migration SQL for ``sqlalchemy.url`` instead of running it."""
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None, "sqlalchemy.url is not set"
    context.configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **_options(url.split(":", 1)[0].split("+", 1)[0]),
    )
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    context.configure(connection=connection, **_options(connection.dialect.name))
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run the migrations on the given connection, or on a new one to ``sqlalchemy.url``."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    try:
        with engine.begin() as own_connection:
            _run(own_connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
