"""panchro's rooms and the check that each one is panchro's own.

panchro keeps DESIGN.md's rooms as top-level import names (``ddcolor``, ``catalog``,
``storage``, ``scheduler``, ``workers``, ``migrations``, beside ``panchro``). Names as
plain as ``storage`` or ``workers`` can also belong to another installed distribution;
pip would then let one overwrite the other's files, or the one earlier on ``sys.path``
would shadow the other. Rather than fail later with an ``ImportError`` or an
``AttributeError`` deep inside a worker, the CLI checks at start-up, without importing
anything, that every room lies next to the ``panchro`` package that is running.
docs/architecture.md explains why the rooms were not moved under one namespace.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

#: The top-level import names of panchro's rooms (DESIGN.md, "Packages"), in layer order.
ROOMS = ("ddcolor", "catalog", "storage", "scheduler", "workers", "exports", "migrations")


@dataclass(frozen=True)
class StrayRoom:
    """A room whose import name resolves somewhere other than beside ``panchro``.

    Attributes:
        name: The import name (``storage``).
        found: Where Python finds it, or ``None`` when it is not importable at all.
    """

    name: str
    found: Path | None

    def describe(self) -> str:
        """Return one sentence a person can act on.

        Returns:
            The problem and its fix.
        """
        if self.found is None:
            return f"panchro's package {self.name!r} is not installed; reinstall panchro"
        return (
            f"the import name {self.name!r} resolves to {self.found}, which is not panchro's; "
            "another installed package uses the same name: install panchro in its own "
            "virtual environment (see README, Install)"
        )


def stray_rooms(home: Path | None = None) -> list[StrayRoom]:
    """Return the rooms that do not lie beside the ``panchro`` package.

    Uses ``importlib.util.find_spec`` on top-level names only, which locates a package
    without importing it, so the check costs a few stat calls.

    Args:
        home: The folder that must hold every room; the parent of the running
            ``panchro`` package by default.

    Returns:
        One ``StrayRoom`` per room found elsewhere or not at all; empty when all is well.
    """
    if home is None:
        home = Path(__file__).resolve().parent.parent
    strays: list[StrayRoom] = []
    for name in ROOMS:
        spec = importlib.util.find_spec(name)
        locations = list(spec.submodule_search_locations or []) if spec is not None else []
        if not locations:
            strays.append(StrayRoom(name, None))
            continue
        found = Path(locations[0]).resolve()
        if found.parent != home:
            strays.append(StrayRoom(name, found))
    return strays
