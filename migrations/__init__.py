"""Alembic migrations of the catalog schema; ``catalog.models`` is their source.

The revisions in ``versions/`` are the only way the catalog's tables are created or
changed. ``upgrade(database_url)`` is what ``panchro db upgrade`` runs.

Names load on first use (PEP 562): :mod:`migrations.schema`, which every command uses to
check a catalog's revision, needs no Alembic, whose import costs a tenth of a second.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from migrations.runner import check, current, downgrade, head, make_config, revision, upgrade

#: The module of each public name.
_SOURCES = {
    name: "runner"
    for name in ("check", "current", "downgrade", "head", "make_config", "revision", "upgrade")
}


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access (PEP 562)."""
    module = _SOURCES.get(name)
    if module is None:
        raise AttributeError(f"module 'migrations' has no attribute {name!r}")
    return getattr(import_module(f"migrations.{module}"), name)


__all__ = ["check", "current", "downgrade", "head", "make_config", "revision", "upgrade"]
