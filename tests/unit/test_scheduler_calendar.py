"""Windows, blackouts, cron/interval triggers, jitter and the monkey's kill times."""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from chaoslab.scheduler.calendar import Blackout, Calendar, Window, day_range, whole_days
from chaoslab.scheduler.monkey import MonkeySpec, MonkeyTarget, MonkeyTrigger, pick_victim
from chaoslab.scheduler.triggers import CronTrigger, IntervalTrigger, jitter_s, run_at, slot_key

BERLIN = ZoneInfo("Europe/Berlin")
WEEKDAYS = Window(days=frozenset(range(5)), start=time(10), end=time(16))


def test_day_ranges() -> None:
    assert day_range("mon-fri") == frozenset({0, 1, 2, 3, 4})
    assert day_range("fri-mon") == frozenset({4, 5, 6, 0})
    assert day_range("sat,sun") == frozenset({5, 6})
    assert day_range("funday") is None


def test_weekday_window_in_local_time() -> None:
    cal = Calendar(tz=BERLIN, windows=(WEEKDAYS,))
    # Wednesday 2025-01-15: 10:00 Berlin is 09:00 UTC (CET, +1).
    assert cal.allows(datetime(2025, 1, 15, 9, 0, tzinfo=UTC))
    assert not cal.allows(datetime(2025, 1, 15, 8, 59, tzinfo=UTC))
    assert not cal.allows(datetime(2025, 1, 15, 15, 0, tzinfo=UTC))  # 16:00 local: end is exclusive
    # Saturday: never.
    why = cal.refusal(datetime(2025, 1, 18, 11, 0, tzinfo=UTC))
    assert why is not None and "outside the allowed windows" in why and "Sat" in why


def test_window_follows_the_wall_clock_across_dst() -> None:
    cal = Calendar(tz=BERLIN, windows=(WEEKDAYS,))
    # Monday 2025-03-31 is summer time (+2): 10:00 local is 08:00 UTC.
    assert cal.allows(datetime(2025, 3, 31, 8, 0, tzinfo=UTC))
    assert not cal.allows(datetime(2025, 3, 28, 8, 0, tzinfo=UTC))  # Friday before: +1, 09:00 local


def test_window_spanning_midnight_belongs_to_its_start_day() -> None:
    night = Window(days=frozenset({4}), start=time(22), end=time(2))  # fri 22:00-02:00
    cal = Calendar(tz=ZoneInfo("UTC"), windows=(night,))
    assert cal.allows(datetime(2025, 1, 17, 23, 0, tzinfo=UTC))  # Friday 23:00
    assert cal.allows(datetime(2025, 1, 18, 1, 59, tzinfo=UTC))  # Saturday 01:59
    assert not cal.allows(datetime(2025, 1, 18, 2, 0, tzinfo=UTC))
    assert not cal.allows(datetime(2025, 1, 16, 23, 0, tzinfo=UTC))  # Thursday


def test_blackouts_win_over_windows_and_dates_are_whole_days() -> None:
    start, end = whole_days(
        BERLIN, datetime(2025, 12, 24, tzinfo=BERLIN), datetime(2025, 12, 26, tzinfo=BERLIN)
    )
    cal = Calendar(tz=BERLIN, windows=(WEEKDAYS,), blackouts=(Blackout(start=start, end=end, reason="xmas"),))
    assert not cal.allows(datetime(2025, 12, 24, 10, 0, tzinfo=UTC))
    why = cal.refusal(datetime(2025, 12, 26, 14, 0, tzinfo=UTC))
    assert why is not None and "xmas" in why
    # 23:30 UTC on the 26th is 00:30 on the 27th in Berlin: a Saturday, refused by the window only.
    assert "blackout" not in (cal.refusal(datetime(2025, 12, 26, 23, 30, tzinfo=UTC)) or "")
    assert cal.allows(datetime(2025, 12, 29, 10, 0, tzinfo=UTC))  # Monday after


def test_no_windows_means_any_time() -> None:
    assert Calendar(tz=BERLIN).allows(datetime(2025, 1, 18, 3, 0, tzinfo=UTC))


def test_cron_in_a_time_zone_and_across_dst() -> None:
    t = CronTrigger(expression="30 10 * * mon-fri", tz=BERLIN)
    first = t.next_after(datetime(2025, 3, 28, 12, 0, tzinfo=UTC))  # Friday afternoon
    assert first == datetime(2025, 3, 31, 8, 30, tzinfo=UTC)  # Monday 10:30 CEST
    assert t.next_after(datetime(2025, 3, 27, 0, 0, tzinfo=UTC)) == datetime(2025, 3, 27, 9, 30, tzinfo=UTC)
    assert CronTrigger.problem("61 * * * *") is not None
    assert CronTrigger.problem("* * *") is not None


def test_interval_slots_are_anchored_not_relative_to_start() -> None:
    t = IntervalTrigger(every_s=300)
    a = t.next_after(datetime(2025, 1, 1, 10, 2, 17, tzinfo=UTC))
    b = t.next_after(datetime(2025, 1, 1, 10, 4, 59, tzinfo=UTC))
    assert a == b == datetime(2025, 1, 1, 10, 5, tzinfo=UTC)
    assert t.next_after(a) == datetime(2025, 1, 1, 10, 10, tzinfo=UTC)  # strictly after


def test_jitter_is_deterministic_bounded_and_spread() -> None:
    slots = [datetime(2025, 1, 1, tzinfo=UTC) + timedelta(hours=h) for h in range(400)]
    values = [jitter_s("s", s, 600) for s in slots]
    assert values == [jitter_s("s", s, 600) for s in slots]  # every scheduler agrees
    assert all(0 <= v < 600 and v == int(v) for v in values)
    assert 200 < statistics.mean(values) < 400  # uniform-ish over [0, 600)
    assert len(set(values)) > 200
    assert jitter_s("other", slots[0], 600) != jitter_s("s", slots[0], 600) or jitter_s(
        "other", slots[1], 600
    ) != jitter_s("s", slots[1], 600)
    assert run_at("s", slots[0], 0) == slots[0]
    assert slot_key(slots[0]) == "2025-01-01T00:00:00Z"


def test_monkey_kills_keep_the_min_gap_and_the_mean() -> None:
    t = MonkeyTrigger(scenario="m", seed="seed", mean_s=1200, min_gap_s=300)
    cursor = datetime(2025, 1, 1, tzinfo=UTC)
    kills = []
    for _ in range(2000):
        nxt = t.next_after(cursor)
        assert nxt is not None
        kills.append(nxt)
        cursor = nxt
    gaps = [(b - a).total_seconds() for a, b in zip(kills, kills[1:], strict=False)]
    assert min(gaps) >= 300
    assert 1100 < statistics.mean(gaps) < 1300
    # Pure function of time: asking from the middle gives the same kills.
    assert t.next_after(kills[500] - timedelta(seconds=1)) == kills[500]
    with pytest.raises(ValueError):
        MonkeyTrigger(scenario="m", seed="s", mean_s=500, min_gap_s=300)


def test_victims_are_opted_in_by_label_and_spread() -> None:
    spec = MonkeySpec(
        targets=(
            MonkeyTarget(target="lab:replica-1", labels={"chaos": "opt-in"}),
            MonkeyTarget(target="lab:replica-2", labels={"chaos": "opt-in"}),
            MonkeyTarget(target="lab:lb", labels={"chaos": "opt-out"}),
        ),
        select={"chaos": "opt-in"},
        mean_s=600,
        min_gap_s=60,
    )
    slots = [datetime(2025, 1, 1, tzinfo=UTC) + timedelta(minutes=m) for m in range(200)]
    victims = [pick_victim(spec, "m", s) for s in slots]
    assert set(victims) == {"lab:replica-1", "lab:replica-2"}
    assert victims == [pick_victim(spec, "m", s) for s in slots]
