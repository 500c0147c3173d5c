"""HTTP faults from an experiment, as a user runs it: ``http.abort`` on one route of the
lab, judged per route ("checkout breaks, the catalogue holds" in one verdict)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import ROOT, chaoslab, poll, wait_until


def test_http_abort_on_one_route_breaks_that_route_only(tmp_path: Path) -> None:
    proc = chaoslab(
        "run",
        "--output",
        "json",
        "--run-dir",
        str(tmp_path / "run"),
        str(ROOT / "experiments" / "lab-http-abort-checkout.yaml"),
        cwd=tmp_path,
    )
    result = json.loads(proc.stdout)
    assert proc.returncode == 1, proc.stderr
    assert result["verdict"] == "deviated"
    slo = {(r["objective"], r["window"]): r for r in result["slo"]}
    failed = sorted(key for key, r in slo.items() if r["verdict"] == "fail")
    assert failed == [("checkout-availability", "during")]
    during = slo[("checkout-availability", "during")]
    # Half the checkout requests aborted on each replica; the balancer's retries over the
    # three replicas leave about 1/8 failing: far from 0 and far from 1/2.
    assert 0.75 < during["estimate"] < 0.97, during
    assert slo[("catalogue-availability", "during")]["estimate"] == 1.0
    assert slo[("catalogue-availability", "during")]["samples"] > 300
    assert "on route checkout" in during["detail"]["slo"]
    journal = json.loads(Path(result["journal"]).read_text())
    faults = journal["chaoslab"]["faults"]
    assert len([f for f in faults if f["kind"] == "fault-reverted"]) == 3
    status = chaoslab("lab", "status", "--output", "json", cwd=tmp_path)
    assert json.loads(status.stdout)["running"] is False


def test_objective_on_an_unknown_route_is_invalid_input(tmp_path: Path) -> None:
    text = (ROOT / "experiments" / "lab-http-abort-checkout.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("route: catalogue,", "route: catalog,"))
    proc = chaoslab("validate", str(bad), cwd=tmp_path)
    assert proc.returncode == 2
    assert "slo[1].route" in proc.stdout + proc.stderr and "catalog" in proc.stdout + proc.stderr


def test_sigkilled_run_leaves_its_http_fault_to_the_lease(tmp_path: Path) -> None:
    """``chaoslab run`` injects http.abort (duration 30 s, so a lease ceiling of 35 s) and
    is SIGKILLed: nobody reverts, the proxy alone ends the fault once the run's renewals
    stop (within ``lease.LAPSE_S``, not at the ceiling), and ``chaoslab recover`` then
    finds the target clean."""
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import httpx

    from chaoslab.drivers.lease import LAPSE_S
    from tests.integration.proxykit import proxy_process

    class Ok(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: object) -> None:
            pass

    service = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    service.daemon_threads = True
    thread = threading.Thread(target=service.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        with proxy_process() as api:
            upstream = f"127.0.0.1:{service.server_address[1]}"
            made = httpx.post(f"{api}/proxies", json={"name": "web", "upstream": upstream, "mode": "http"})
            url = f"http://{made.json()['listen']}/checkout"
            experiment = tmp_path / "exp.yaml"
            experiment.write_text(
                "title: killed mid-fault\n"
                "description: the runner dies while checkout is aborted\n"
                "method:\n"
                "  - name: abort-checkout\n"
                "    do: http.abort\n"
                f"    target: proxy:web@{api.removeprefix('http://')}\n"
                "    with: {path: /checkout, status: 503}\n"
                "    duration: 30s\n"
            )
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            runner = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "chaoslab.cli",
                    "run",
                    "--run-dir",
                    str(tmp_path / "run"),
                    str(experiment),
                ],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                toxics: list[dict[str, object]] = wait_until(
                    lambda: httpx.get(f"{api}/proxies/web/toxics").json(),
                    timeout_s=30,
                    what="the run to inject its fault",
                )
                os.kill(runner.pid, signal.SIGKILL)
            finally:
                runner.wait(timeout=10)
            killed = time.monotonic()
            expires = float(str(toxics[0]["lease_expires_at"]))
            assert toxics[0]["heartbeat_s"] == LAPSE_S and expires > time.time() + 25
            assert httpx.get(url).status_code == 503  # nobody reverted it
            poll(
                lambda: not httpx.get(f"{api}/proxies/web/toxics").json(),
                timeout_s=max(0.0, LAPSE_S + 5 - (time.monotonic() - killed)),
                interval_s=0.05,
            )
            assert httpx.get(f"{api}/proxies/web/toxics").json() == []
            # The last renewal came before the kill: ended within LAPSE_S of it.
            assert time.monotonic() - killed <= LAPSE_S + 1.0
            assert httpx.get(url).status_code == 200
            recovered = chaoslab("recover", cwd=tmp_path)
            assert recovered.returncode == 0, recovered.stdout + recovered.stderr
            assert "1 reverted and verified clean" in recovered.stdout
            # The proxy remembers why the toxic went, and recover says so.
            assert "http.abort" in recovered.stdout and "already ended" in recovered.stdout
            assert "no renewal for" in recovered.stdout, recovered.stdout
    finally:
        service.shutdown()
        service.server_close()
        thread.join(timeout=5)
