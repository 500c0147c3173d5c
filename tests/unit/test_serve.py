"""The control room's application, in process (Starlette's TestClient over real files).

Run directories, ledger entries and halt files are the ones chaoslab writes (made here
through ``EventLog``, ``Ledger`` and ``halt``); the browser tests with a real lab run are
in tests/e2e/test_serve_browser.py.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.exceptions import StarletteDeprecationWarning

with warnings.catch_warnings():
    # Starlette 1.x would rather its test client ran on 'httpx2'; httpx is what chaoslab has.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

from chaoslab import paths
from chaoslab.drivers.base import RevertRecord
from chaoslab.engine import events as ev
from chaoslab.engine.journal import EventLog
from chaoslab.safety.halt import halt_path, is_halted
from chaoslab.safety.ledger import Ledger
from chaoslab.serve.app import Control, _safe_next, create_app, is_loopback
from chaoslab.serve.auth import Auth, clean_name
from chaoslab.serve.runs import EventTail, RunIndex
from chaoslab.serve.views import Sources
from tests.conftest import run_cli

TOKEN = "a-long-enough-token-0123456789"
REPO = Path(__file__).resolve().parents[2]


def write_run(
    root: Path,
    name: str,
    *,
    title: str = "t",
    tags: tuple[str, ...] = (),
    verdict: str | None = "passed",
    ts: float | None = None,
) -> Path:
    d = root / name
    log = EventLog(d / "events.ndjson")
    run_id = f"run-{name}"
    t0 = ts if ts is not None else time.time()
    log(
        ev.RunStarted(
            run_id=run_id, ts=t0, title=title, source="x.yaml", pid=1, experiment={"tags": list(tags)}
        )
    )
    log(
        ev.SLITick(
            run_id=run_id, ts=t0 + 1, source="load", rate=10.0, availability=1.0, p50_ms=1.0, p99_ms=2.0
        )
    )
    if verdict is not None:
        log(ev.RunFinished(run_id=run_id, ts=t0 + 2, verdict=verdict, exit_code=0, reason="", duration_s=2.0))
    log.close()
    return d


@pytest.fixture
def home(chaoslab_home: Path) -> Path:
    return chaoslab_home


def client(home: Path, runs: Path, *, open_views: bool = True, **kw: object) -> TestClient:
    sources = Sources(home=home, run_roots=(runs,), **kw)  # type: ignore[arg-type]
    control = Control(sources=sources, auth=Auth(TOKEN), open_views=open_views, halt_grace_s=1.0)
    control.masker.add(TOKEN)
    return TestClient(create_app(control), base_url="http://127.0.0.1:8765", follow_redirects=False)


def login(c: TestClient, name: str = "alice") -> str:
    """Log in through the form; return the CSRF token of the halt page."""
    r = c.post("/login", data={"name": name, "token": TOKEN, "next": "/halt"})
    assert r.status_code == 303 and r.headers["location"] == "/halt"
    page = c.get("/halt").text
    marker = 'name="csrf" value="'
    return page[page.index(marker) + len(marker) :].split('"', 1)[0]


def audit(home: Path) -> list[dict[str, object]]:
    p = home / "serve-audit.ndjson"
    return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []


def test_every_page_renders_with_security_headers(home: Path, tmp_path: Path) -> None:
    write_run(tmp_path, "a", title="Slow replica", tags=("lab",))
    c = client(home, tmp_path)
    for path in ("/", "/history", "/calendar", "/budgets", "/halt", "/login", "/runs/run-a"):
        r = c.get(path)
        assert r.status_code == 200, (path, r.text)
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert r.headers["x-frame-options"] == "DENY"
        # Everything is served from here: no other origin in any page.
        assert "http://" not in r.text.replace("http://127.0.0.1:8765", "")
        assert "https://" not in r.text
    assert c.get("/runs/nope").status_code == 404


def test_an_unauthenticated_halt_is_refused_and_recorded(home: Path, tmp_path: Path) -> None:
    c = client(home, tmp_path)
    r = c.post("/halt", data={"confirm": "yes", "reason": "x"})
    assert r.status_code == 401 and "not authenticated" in r.text
    assert is_halted(home) is None and not halt_path(home).exists()
    assert [a["action"] for a in audit(home)] == ["halt-refused"]
    # a wrong token over Basic is no better
    bad = base64.b64encode(b"mallory:wrong-token").decode()
    r = c.post("/halt", data={"confirm": "yes"}, headers={"authorization": f"Basic {bad}"})
    assert r.status_code == 401 and is_halted(home) is None


def test_csrf_and_origin_are_checked_for_session_logins(home: Path, tmp_path: Path) -> None:
    c = client(home, tmp_path)
    csrf = login(c)
    r = c.post("/halt", data={"confirm": "yes"})  # no CSRF token
    assert r.status_code == 403 and "CSRF" in r.text
    r = c.post("/halt", data={"confirm": "yes", "csrf": "0" * 64})
    assert r.status_code == 403
    r = c.post("/halt", data={"confirm": "yes", "csrf": csrf}, headers={"origin": "http://evil.example"})
    assert r.status_code == 403 and "cross-origin" in r.text
    r = c.post("/halt", data={"csrf": csrf})  # not confirmed
    assert r.status_code == 400
    assert is_halted(home) is None
    assert [a["action"] for a in audit(home)] == ["halt-refused"] * 3


def test_halt_and_release_from_the_page_are_audited_with_who(home: Path, tmp_path: Path) -> None:
    c = client(home, tmp_path)
    csrf = login(c, "alice")
    r = c.post("/halt", data={"confirm": "yes", "csrf": csrf, "reason": "INC-7"})
    assert r.status_code == 200 and "halt done" in r.text
    state = is_halted(home)
    assert state is not None and state.reason == "INC-7" and state.by.startswith("alice via chaoslab serve")
    assert 'id="halt-banner"' in c.get("/").text
    r = c.post("/release", data={"confirm": "yes", "csrf": csrf})
    assert r.status_code == 200 and "released the halt" in r.text
    assert is_halted(home) is None
    entries = audit(home)
    assert [(a["action"], a["by"], a["remote"]) for a in entries] == [
        ("halt", "alice", "testclient"),
        ("release", "alice", "testclient"),
    ]
    assert entries[0]["reason"] == "INC-7"


def test_a_bearer_token_acts_without_csrf_and_basic_names_the_user(home: Path, tmp_path: Path) -> None:
    c = client(home, tmp_path)
    r = c.post(
        "/halt",
        data={"confirm": "yes"},
        headers={"authorization": f"Bearer {TOKEN}", "accept": "application/json"},
    )
    assert r.status_code == 200 and r.json()["by"] == "bearer-token"
    assert TOKEN not in r.text
    basic = base64.b64encode(f"bob:{TOKEN}".encode()).decode()
    c2 = client(home, tmp_path)
    page = c2.get("/halt", headers={"authorization": f"Basic {basic}"}).text
    csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    r = c2.post(
        "/release", data={"confirm": "yes", "csrf": csrf}, headers={"authorization": f"Basic {basic}"}
    )
    assert r.status_code == 200 and is_halted(home) is None
    assert audit(home)[-1]["by"] == "bob"


def test_off_loopback_every_page_needs_the_token(home: Path, tmp_path: Path) -> None:
    write_run(tmp_path, "a")
    c = client(home, tmp_path, open_views=False)
    r = c.get("/api/now")
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
    assert "www-authenticate" not in c.get("/api/now", headers={"sec-fetch-mode": "cors"}).headers
    r = c.get("/history", headers={"accept": "text/html"})
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    assert c.get("/runs/run-a/stream").status_code == 401
    assert c.get("/login").status_code == 200 and c.get("/static/app.js").status_code == 200
    login(c)
    assert c.get("/api/now").status_code == 200


def test_wrong_login_is_refused_and_next_never_leaves_the_site(home: Path, tmp_path: Path) -> None:
    c = client(home, tmp_path)
    r = c.post("/login", data={"name": "eve", "token": "nope", "next": "/"})
    assert r.status_code == 401 and "chaoslab_session" not in r.headers.get("set-cookie", "")
    r = c.post("/login", data={"name": "eve", "token": TOKEN, "next": "//evil.example/x"})
    assert r.headers["location"] == "/"
    assert "HttpOnly" in r.headers["set-cookie"] and "SameSite=strict" in r.headers["set-cookie"]


def test_history_filters_pages_and_counts(home: Path, tmp_path: Path) -> None:
    t0 = time.time() - 1000
    for i in range(130):
        write_run(
            tmp_path,
            f"r{i:03d}",
            title="Kill replica" if i % 2 else "Slow replica",
            tags=("lab", "kill") if i % 2 else ("lab",),
            verdict="deviated" if i % 3 == 0 else "passed",
            ts=t0 + i,
        )
    write_run(tmp_path, "dead", title="Killed runner", verdict=None, ts=t0 + 500)
    c = client(home, tmp_path)
    r = c.get("/history")
    assert "100 of 131 runs" not in r.text and "131 of 131 runs · page 1 of 2" in r.text
    table = r.text[r.text.index('id="history"') :]
    assert table.index("Killed runner") < table.index("Kill replica")  # newest first
    assert "unfinished" in r.text
    r = c.get("/history", params={"experiment": "kill rep", "tag": "kill", "verdict": "deviated"})
    expected = sum(1 for i in range(130) if i % 2 and i % 3 == 0)
    assert f"{expected} of 131 runs" in r.text
    assert r.text.count('href="/runs/run-r') == expected
    r = c.get("/history", params={"page": "2"})
    assert "page 2 of 2" in r.text and r.text.count('href="/runs/run-r') == 31


def test_the_stream_replays_ticks_and_ends_with_the_run(home: Path, tmp_path: Path) -> None:
    write_run(tmp_path, "a")
    c = client(home, tmp_path)
    with c.stream("GET", "/runs/run-a/stream") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        body = "".join(r.iter_text())
    kinds = [line.split(": ", 1)[1] for line in body.splitlines() if line.startswith("event: ")]
    assert kinds == ["sli-tick", "run-finished"]


def test_no_secret_reaches_a_page(home: Path, tmp_path: Path) -> None:
    secret_url = "https://ops:hunter2-secret@prom.internal:9090/"
    write_run(tmp_path, "a", title=f"scrape {secret_url}")
    # A fault whose argument holds a secret from the environment: the ledger seals it,
    # scan puts it back in memory, the page must still show it masked.
    os.environ["H21_SERVE_SECRET"] = "s3cret-value-42"
    try:
        from chaoslab.masking import Masker

        masker = Masker()
        masker.add("s3cret-value-42", {"env": "H21_SERVE_SECRET"})
        ledger = Ledger(paths.ledger_dir(home), masker=masker)
        ledger.open_entry(
            RevertRecord(
                driver="proxy",
                operation="latency",
                target="lab:replica-1",
                args={"password": "s3cret-value-42"},
            )
        )
        c = client(home, tmp_path, store_url="postgresql://u:pg-pass-987@db/x")
        pages = [c.get(p).text for p in ("/", "/api/now", "/history", "/runs/run-a", "/calendar")]
        with c.stream("GET", "/runs/run-a/stream") as r:
            pages.append("".join(r.iter_text()))
    finally:
        del os.environ["H21_SERVE_SECRET"]
    text = "\n".join(pages)
    assert "lab:replica-1" in text  # the fault is shown...
    for secret in ("hunter2-secret", "s3cret-value-42", "pg-pass-987", TOKEN):
        assert secret not in text  # ...its secrets are not


def test_event_tail_waits_for_the_end_of_a_line(tmp_path: Path) -> None:
    p = tmp_path / "events.ndjson"
    p.write_text('{"kind": "a"}\n{"kind": "b"')
    tail = EventTail(p)
    assert [e["kind"] for e in tail.read()] == ["a"]
    with p.open("a") as f:
        f.write("}\n")
    assert [e["kind"] for e in tail.read()] == ["b"]
    assert tail.read() == []


def test_run_index_reads_a_changed_log_again(tmp_path: Path) -> None:
    d = write_run(tmp_path, "a", verdict=None)
    index = RunIndex((tmp_path,))
    assert not index.runs()[0].finished
    with (d / "events.ndjson").open("a") as f:
        f.write(json.dumps({"kind": "run-finished", "run_id": "run-a", "ts": 1, "verdict": "aborted"}) + "\n")
    got = index.runs()[0]
    assert got.finished and got.verdict == "aborted"


@given(st.text(max_size=80))
@settings(max_examples=200, deadline=None)
def test_next_is_always_a_local_path(value: str) -> None:
    got = _safe_next(value)
    assert got.startswith("/") and not got.startswith("//") and "://" not in got.split("?", 1)[0]


@given(st.text(max_size=200))
@settings(max_examples=200, deadline=None)
def test_a_name_is_safe_in_a_cookie_and_a_log(name: str) -> None:
    got = clean_name(name)
    assert 0 < len(got) <= 64 and "|" not in got and all(c.isprintable() for c in got)


@given(st.text(min_size=1, max_size=60))
@settings(max_examples=200, deadline=None)
def test_only_the_token_authenticates(guess: str) -> None:
    auth = Auth(TOKEN)
    headers = {"authorization": f"Bearer {guess}"}
    assert (auth.identify(headers, {}) is not None) == (guess.strip() == TOKEN)
    forged = auth.session_cookie("alice").rsplit("|", 1)[0] + "|" + guess
    assert auth.identify({}, {"chaoslab_session": forged}) is None


def test_loopback_addresses() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.1")


def test_serve_off_loopback_without_a_token_is_invalid_input(tmp_path: Path) -> None:
    env_token = os.environ.pop("CHAOSLAB_SERVE_TOKEN", None)
    try:
        proc = run_cli("serve", "--host", "0.0.0.0", "--port", "0", cwd=tmp_path, timeout=60)
    finally:
        if env_token is not None:
            os.environ["CHAOSLAB_SERVE_TOKEN"] = env_token
    assert proc.returncode == 2 and "needs a token" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("serve", "--slo", str(tmp_path / "missing.yaml"), cwd=tmp_path, timeout=60)
    assert proc.returncode == 2 and "missing.yaml" in proc.stderr and "Traceback" not in proc.stderr


def test_chaoslab_run_never_imports_the_web_stack(tmp_path: Path) -> None:
    code = (
        "import sys, runpy\n"
        "sys.argv = ['chaoslab', 'run', sys.argv[1]]\n"
        "try:\n"
        "    runpy.run_module('chaoslab.cli', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('starlette', 'uvicorn') or m.startswith('chaoslab.serve')]\n"
        "print('IMPORTED', bad)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(REPO / "benchmarks" / "trivial.json")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("IMPORTED []")


def test_history_shows_gate_results_with_their_score_trend(home: Path, tmp_path: Path) -> None:
    for n, score in ((1, 62.5), (2, 71.0), (3, 88.25)):
        out = tmp_path / f"gate-{n}"
        out.mkdir()
        (out / "gate.json").write_text(
            json.dumps({"suite": "lab-suite", "result": "pass", "score": score, "class": "B"})
        )
        os.utime(out / "gate.json", (1_800_000_000 + n, 1_800_000_000 + n))
    page = client(home, tmp_path).get("/history").text
    table = page[page.index('id="gates"') :]
    assert table.index("88.2") < table.index("71.0") < table.index("62.5")  # newest first
    trend = page.split('class="trend" data-points="', 1)[1].split('"', 1)[0]
    assert json.loads(trend.replace("&#34;", '"')) == [
        [1_800_000_001.0, 62.5],
        [1_800_000_002.0, 71.0],
        [1_800_000_003.0, 88.25],
    ]


def test_calendar_shows_slots_windows_blackouts_and_misfires(home: Path, tmp_path: Path) -> None:
    from chaoslab.scheduler.store import SlotRecord, default_url, open_store

    store = open_store(default_url(home))
    try:
        store.insert(
            SlotRecord(
                scenario="lab-weekday-gameday",
                slot="2026-11-30T09:30:00Z",
                run_at="2026-11-30T09:30:00Z",
                kind="gameday",
                status="missed",
                scheduler="s1",
                token="t1",
                detail="found 3h late (misfire grace 10m)",
            )
        )
    finally:
        store.close()
    page = client(home, tmp_path, scenarios=(REPO / "scenarios",)).get("/calendar").text
    upcoming = page[page.index('id="upcoming"') : page.index('id="scenarios"')]
    assert "lab-weekday-gameday" in upcoming and "lab-monkey" in upcoming
    scenarios = page[page.index('id="scenarios"') : page.index('id="misfires"')]
    assert "mon,tue,wed,thu,fri 10:00-16:00" in scenarios and "year-end change freeze" in scenarios
    misfires = page[page.index('id="misfires"') :]
    assert "2026-11-30T09:30:00Z" in misfires and "found 3h late" in misfires and "missed" in misfires


def test_budgets_say_what_is_missing_instead_of_a_healthy_budget(home: Path, tmp_path: Path) -> None:
    page = client(home, tmp_path).get("/budgets").text
    assert "no SLO files (give --slo FILE)" in page
    slo = tmp_path / "slo.yaml"
    slo.write_text(
        "slos:\n  - name: lab-latency\n    service: lab\n    objective: 0.99\n    window: 1d\n"
        "    latency: {metric: lab_request_duration_seconds, threshold: 100ms}\n"
    )
    page = client(home, tmp_path, slo_files=(slo,)).get("/budgets").text
    assert "lab-latency: no Prometheus URL (give --prometheus)" in page
    assert "of the budget left" not in page
