"""A real Prometheus for tests: Debian's ``/usr/bin/prometheus`` with a temp config and TSDB.

``running_prometheus(targets)`` starts it on 127.0.0.1 at a free port, scraping
``targets`` (``host:port`` of ``/metrics`` endpoints) every second, waits until every
target is up, yields the base URL and stops it by pid. It writes only under the temp
directory it is given.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx

from chaoslab.lab.supervisor import free_port
from tests.conftest import poll

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def available() -> bool:
    return Path(PROMETHEUS).is_file() and Path(PROMTOOL).is_file()


def _up_count(url: str) -> int:
    try:
        resp = httpx.get(f"{url}/api/v1/query", params={"query": "sum(up)"}, timeout=2.0)
        result = resp.json()["data"]["result"]
    except (httpx.HTTPError, ValueError, KeyError):
        return -1
    return int(float(result[0]["value"][1])) if result else 0


def last_scraped(url: str) -> float | None:
    """When the target scraped least recently was last scraped (unix time), or None.

    Scrapes of one target are ingested in order, so a scrape after ``t`` of every target
    means Prometheus holds every sample up to ``t``."""
    try:
        resp = httpx.get(f"{url}/api/v1/query", params={"query": "min(timestamp(up))"}, timeout=2.0)
        result = resp.json()["data"]["result"]
    except (httpx.HTTPError, ValueError, KeyError):
        return None
    return float(result[0]["value"][1]) if result else None


@contextlib.contextmanager
def running_prometheus(
    targets: Sequence[str], workdir: Path, *, scrape_interval: str = "1s", timeout_s: float = 30.0
) -> Iterator[str]:
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = workdir / "prometheus.yml"
    quoted = ", ".join(f"'{t}'" for t in targets)
    config.write_text(
        f"""global:
  scrape_interval: {scrape_interval}
  evaluation_interval: {scrape_interval}
scrape_configs:
  - job_name: lab
    scrape_interval: {scrape_interval}
    scrape_timeout: {scrape_interval}
    static_configs:
      - targets: [{quoted}]
""",
        encoding="utf-8",
    )
    with open(workdir / "prometheus.log", "wb") as log:  # the child keeps its own copy of the fd
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:

        def all_up() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"prometheus exited with {proc.returncode}: {(workdir / 'prometheus.log').read_text()[-2000:]}"
                )
            return _up_count(url) >= len(targets)

        if poll(all_up, timeout_s=timeout_s, interval_s=0.2) is None:
            raise RuntimeError(f"prometheus did not see {len(targets)} targets up in {timeout_s}s")
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
