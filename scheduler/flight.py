"""The one max-in-flight of a cluster, and how many tasks it lets a dispatch pass send now.

``panchro scheduler`` and ``panchro submit`` both dispatch, and both must keep to the
same limit. The scheduler is where the limit is set (``--max-in-flight`` or
``PANCHRO_MAX_IN_FLIGHT``), so it announces it in the broker at every pass
(:func:`announce_max_in_flight`); a submission uses the announced limit when a scheduler
runs and its own setting otherwise (:func:`shared_max_in_flight`). Every pass, the
scheduler's and a submission's alike, computes its room with :func:`room`.

The announcement expires (:func:`announce_ttl`) a few intervals after the scheduler's last
pass, so a stopped scheduler's limit does not outlive it.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from sqlalchemy.orm import Session

from catalog import count_in_flight
from workers.broker import read_setting, write_setting

__all__ = [
    "MAX_IN_FLIGHT_KEY",
    "announce_max_in_flight",
    "announce_ttl",
    "room",
    "shared_max_in_flight",
]

logger = logging.getLogger(__name__)

#: Redis key under which the running scheduler announces its max-in-flight.
MAX_IN_FLIGHT_KEY: Final = "panchro:max-in-flight"
#: Dispatch intervals the announcement outlives the pass that wrote it by.
ANNOUNCE_INTERVALS: Final = 3
#: Seconds an announcement lasts at least, whatever the interval.
ANNOUNCE_MIN_TTL_S: Final = 60.0


def room(db: Session, max_in_flight: int) -> tuple[int, int]:
    """Return how many images are in flight and how many more may be sent now.

    Call it under the dispatch lock (``scheduler._queries.lock_dispatch``), so that two
    dispatchers never count the same free room.

    Args:
        db: A catalog session.
        max_in_flight: Most images queued at once, over all collections.

    Returns:
        Images ``queued`` now, and the room left (never negative).
    """
    in_flight = count_in_flight(db)
    return in_flight, max(0, max_in_flight - in_flight)


def announce_ttl(interval: float) -> float:
    """Return how long an announcement lasts for a scheduler passing every ``interval`` s.

    Args:
        interval: Seconds between two dispatch passes.

    Returns:
        Seconds.
    """
    return max(ANNOUNCE_MIN_TTL_S, ANNOUNCE_INTERVALS * interval)


def announce_max_in_flight(app: Any, max_in_flight: int, *, interval: float) -> None:
    """Tell every submission the scheduler's limit, until a few intervals from now.

    A broker that cannot be reached is only logged: the pass fails on it anyway.

    Args:
        app: The Celery app.
        max_in_flight: The scheduler's limit.
        interval: Seconds between the scheduler's passes.
    """
    try:
        write_setting(app, MAX_IN_FLIGHT_KEY, str(max_in_flight), announce_ttl(interval))
    except Exception as exc:  # noqa: BLE001 - the pass reports the broker's failure
        logger.debug("cannot announce max-in-flight %d: %s", max_in_flight, exc)


def shared_max_in_flight(app: Any, configured: int) -> int:
    """Return the limit a submission dispatches to: the running scheduler's, else its own.

    Args:
        app: The Celery app the submission sends with; None (it sends nothing) gives
            ``configured``.
        configured: The submission's own setting (``PANCHRO_MAX_IN_FLIGHT``).

    Returns:
        The announced limit while a scheduler runs, otherwise ``configured``.
    """
    if app is None:
        return configured
    try:
        announced = read_setting(app, MAX_IN_FLIGHT_KEY)
    except Exception as exc:  # noqa: BLE001 - sending reports the broker's failure
        logger.debug("cannot read the scheduler's max-in-flight: %s", exc)
        return configured
    if announced is None:
        return configured
    try:
        limit = int(announced)
    except ValueError:
        logger.warning("ignoring max-in-flight %r announced in the broker", announced)
        return configured
    if limit < 1:
        return configured
    if limit != configured:
        logger.info(
            "dispatching to the scheduler's max-in-flight %d (this process's setting: %d)",
            limit,
            configured,
        )
    return limit
