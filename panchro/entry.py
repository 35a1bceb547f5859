"""The ``panchro`` console script: check the rooms, then hand over to the click group.

It imports nothing of panchro's rooms before ``panchro.rooms`` has checked that each one
is panchro's own, so a shadowing package gives one clear line instead of a traceback
from somewhere inside it.
"""

from __future__ import annotations

from panchro.rooms import stray_rooms


def main() -> None:
    """Console-script entry point.

    Raises:
        SystemExit: A room is shadowed by another package or missing (exit status 1).
    """
    strays = stray_rooms()
    if strays:
        raise SystemExit("panchro: " + "; ".join(stray.describe() for stray in strays))
    from panchro.cli import main as run_cli

    run_cli()
