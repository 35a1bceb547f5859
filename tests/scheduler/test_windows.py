"""Tests of scheduler.windows: when a collection's ``--not-before`` window opens."""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest

from scheduler import parse_not_before, window_opens_at

BERLIN = ZoneInfo("Europe/Berlin")


def test_parse_not_before_reads_a_24_hour_time() -> None:
    assert parse_not_before("22:05") == time(22, 5)
    assert parse_not_before("00:00") == time(0, 0)


@pytest.mark.parametrize("text", ["24:00", "7:00", "22:60", "22h00", "", "22:00:00"])
def test_parse_not_before_refuses_other_shapes(text: str) -> None:
    with pytest.raises(ValueError, match="HH:MM"):
        parse_not_before(text)


def test_window_opens_at_the_local_time_on_the_day_of_submission() -> None:
    submitted = datetime(2024, 6, 3, 7, 30, tzinfo=UTC)  # 09:30 in Berlin (summer time)
    assert window_opens_at("22:00", submitted, tz=BERLIN) == datetime(
        2024, 6, 3, 22, 0, tzinfo=BERLIN
    )


def test_window_uses_the_local_date_not_the_utc_date() -> None:
    submitted = datetime(2024, 6, 3, 23, 30, tzinfo=UTC)  # already 4 June, 01:30 in Berlin
    opens = window_opens_at("06:00", submitted, tz=BERLIN)
    assert opens == datetime(2024, 6, 4, 6, 0, tzinfo=BERLIN)


def test_window_stays_open_across_midnight_and_the_next_day() -> None:
    submitted = datetime(2024, 6, 3, 9, 0, tzinfo=BERLIN)
    before = datetime(2024, 6, 3, 21, 59, tzinfo=BERLIN)
    after_midnight = datetime(2024, 6, 4, 0, 30, tzinfo=BERLIN)
    next_morning = datetime(2024, 6, 4, 9, 0, tzinfo=BERLIN)
    opens = window_opens_at("22:00", submitted, tz=BERLIN)
    assert opens == datetime(2024, 6, 3, 22, 0, tzinfo=BERLIN)
    # The dispatcher holds a collection while now < opens, and only then.
    assert before < opens <= after_midnight <= next_morning


def test_window_submitted_after_its_time_is_open_at_once() -> None:
    submitted = datetime(2024, 6, 3, 23, 10, tzinfo=BERLIN)
    opens = window_opens_at("22:00", submitted, tz=BERLIN)
    assert opens is not None and opens <= submitted


def test_no_window_is_always_open() -> None:
    submitted = datetime(2024, 6, 3, 9, 0, tzinfo=UTC)
    assert window_opens_at(None, submitted) is None


def test_window_opens_at_refuses_a_naive_submission_time() -> None:
    with pytest.raises(ValueError, match="aware"):
        window_opens_at("22:00", datetime(2024, 6, 3, 9, 0))


def test_window_without_a_time_zone_uses_this_machines_local_time() -> None:
    submitted = datetime(2024, 6, 3, 12, 0, tzinfo=UTC)
    opens = window_opens_at("12:00", submitted)
    assert opens is not None
    local = submitted.astimezone()
    assert opens.date() == local.date()
    assert (opens.hour, opens.minute) == (12, 0)
    assert opens.utcoffset() == local.utcoffset()
