"""Start windows: a collection submitted with ``--not-before HH:MM`` waits until then.

The window of a collection opens once, at ``HH:MM`` local time (of the dispatcher) on the
day the collection was submitted, and then stays open until the collection is finished:

- ``--not-before 22:00`` submitted at 09:30 holds everything until 22:00 that evening;
  the dispatcher then keeps sending through midnight and the next day, so a night's work
  is never cut off at 00:00.
- Submitted at 23:10 with ``--not-before 22:00``, the window has already opened: the
  images are sent at once. To start at 06:00 the next morning, submit after midnight or
  give a time later than the moment of submission on the same day.

"The day the collection was submitted" is the local date of the collection's
``updated_at``. It moves whenever a submission changes the collection's settings (a new
``--not-before`` included) or wakes a cancelled or finished collection up, so such a
resubmission waits for the window again; a resubmission that changes nothing does not
hold a collection whose window has already opened.
"""

from __future__ import annotations

import re
from datetime import datetime, time, tzinfo

#: Shape of ``not_before``: a local wall-clock time "HH:MM", 24-hour.
NOT_BEFORE_PATTERN = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")


def parse_not_before(not_before: str) -> time:
    """Parse a ``--not-before`` value.

    Args:
        not_before: A 24-hour local time, ``"HH:MM"``.

    Returns:
        The wall-clock time.

    Raises:
        ValueError: If the text is not ``"HH:MM"``.
    """
    match = NOT_BEFORE_PATTERN.match(not_before)
    if match is None:
        raise ValueError(f"not_before must be a 24-hour local time HH:MM, not {not_before!r}")
    return time(int(match.group(1)), int(match.group(2)))


def window_opens_at(
    not_before: str | None, submitted_at: datetime, *, tz: tzinfo | None = None
) -> datetime | None:
    """Return the moment a collection's window opens.

    Args:
        not_before: The collection's ``"HH:MM"``, or None for no window.
        submitted_at: When the collection was submitted (aware; the catalog's
            ``updated_at``).
        tz: The local time zone that ``not_before`` is read in; None means the time zone
            of this machine.

    Returns:
        The aware moment ``not_before`` on the local date of ``submitted_at``, or None if
        there is no window.

    Raises:
        ValueError: If ``not_before`` is not ``"HH:MM"`` or ``submitted_at`` is naive.
    """
    if not_before is None:
        return None
    if submitted_at.tzinfo is None:
        raise ValueError(f"submitted_at must be timezone-aware, not {submitted_at!r}")
    wall = parse_not_before(not_before)
    local = submitted_at.astimezone(tz)
    zone = tz if tz is not None else local.tzinfo
    return datetime.combine(local.date(), wall, tzinfo=zone)
