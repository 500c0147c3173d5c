"""The event bus: a consumer that raises is reported once and never stops the others."""

from __future__ import annotations

import pytest

from chaoslab.engine import events as ev


def test_a_failing_consumer_is_reported_once_and_the_others_go_on(capsys: pytest.CaptureFixture[str]) -> None:
    bus = ev.EventBus()
    seen: list[str] = []

    def broken(event: ev.Event) -> None:
        raise RuntimeError("console gone")

    bus.subscribe(broken)
    bus.subscribe(lambda e: seen.append(e.kind))
    for _ in range(3):
        bus.emit(ev.PhaseStarted(run_id="r", phase=ev.Phase.METHOD))
    assert seen == ["phase-started"] * 3
    assert len(bus.errors) == 3 and all(c is broken for c, _ in bus.errors)
    err = capsys.readouterr().err
    assert err.count("event consumer") == 1
    assert "broken" in err and "RuntimeError: console gone" in err
