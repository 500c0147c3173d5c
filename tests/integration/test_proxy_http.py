"""The fault proxy in HTTP mode, driven by real clients (httpx, curl, toxiproxy-python):
shares of aborted requests inside a binomial interval, delays to ±2 ms at p50, route,
method and header matching, fail-first-N and every-Nth, header rewrite, truncation,
keep-alive and chunked bodies passing through, TCP toxics still acting, and the lease
ending each HTTP fault with the runner SIGKILLed."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from chaoslab.drivers.base import DriverContext, RevertRecord, check_args
from chaoslab.drivers.proxy.http_driver import HttpDriver
from chaoslab.errors import DriverError, InvalidInput
from tests.conftest import require, wait_until
from tests.integration.proxykit import ProxyRef
from tests.statepaths import env_state

Z_999 = 3.2905  # two-sided 99.9 % normal quantile: a correct proxy fails 1 run in 1000


class _Service(ThreadingHTTPServer):
    daemon_threads = True
    requests: list[tuple[str, str]]
    connections: int


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Head and body are two writes: without TCP_NODELAY, Nagle holds the body until the
    # head's delayed ACK (40 ms), which would swamp the delays measured here.
    disable_nagle_algorithm = True
    server: _Service

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1

    def _answer(self, body: bytes, *, chunked: bool = False) -> None:
        self.server.requests.append((self.command, self.path))
        self.send_response(200)
        self.send_header("X-Service", "up")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for part in (body[:3], body[3:]):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.write(b"0\r\n\r\n")
            return
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._answer(f"path={self.path};".encode() * 4, chunked=self.path.startswith("/chunked"))

    do_HEAD = do_GET

    def do_POST(self) -> None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            for _ in range(10_000):
                size = int(self.rfile.readline(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                body += self.rfile.read(size)
                self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self._answer(b"echo:" + body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def service() -> Iterator[_Service]:
    server = _Service(("127.0.0.1", 0), _Handler)
    server.requests, server.connections = [], 0
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def api(proxy_api: str) -> Iterator[str]:
    """The proxy server's API; every proxy a test made is deleted afterwards."""
    yield proxy_api
    for name in httpx.get(f"{proxy_api}/proxies").json():
        httpx.delete(f"{proxy_api}/proxies/{name}")


@pytest.fixture
def web(api: str, service: _Service) -> ProxyRef:
    """An HTTP-mode proxy named ``web`` in front of ``service``."""
    upstream = f"127.0.0.1:{service.server_address[1]}"
    resp = httpx.post(f"{api}/proxies", json={"name": "web", "upstream": upstream, "mode": "http"})
    assert resp.status_code == 201, resp.text
    assert resp.json()["mode"] == "http"
    return ProxyRef(api=api, name="web", port=int(resp.json()["listen"].rsplit(":", 1)[1]))


def _client(web: ProxyRef) -> httpx.Client:
    return httpx.Client(base_url=f"http://127.0.0.1:{web.port}", timeout=10)


def _inside_binomial(k: int, n: int, p: float) -> bool:
    return abs(k - n * p) <= Z_999 * math.sqrt(n * p * (1 - p))


def test_no_fault_passes_requests_through_on_one_kept_alive_connection(
    web: ProxyRef, service: _Service
) -> None:
    with _client(web) as client:
        assert client.get("/a?q=1").text == "path=/a?q=1;" * 4
        head = client.head("/a")
        assert head.status_code == 200 and head.headers["content-length"] == str(len("path=/a;") * 4)
        assert client.post("/p", content=b"xyz").text == "echo:xyz"
        assert client.post("/p", content=iter([b"ab", b"cd"])).text == "echo:abcd"  # chunked upload
        chunked = client.get("/chunked")
        assert chunked.text == "path=/chunked;" * 4 and chunked.headers["transfer-encoding"] == "chunked"
        assert client.get("/b").status_code == 200
    assert service.connections == 1  # keep-alive kept through the proxy
    assert [p for _, p in service.requests] == ["/a?q=1", "/a", "/p", "/p", "/chunked", "/b"]


def test_abort_share_is_binomial_and_aborted_requests_never_reach_the_service(
    web: ProxyRef, service: _Service
) -> None:
    web.add_toxic(name="a", type="http_abort", toxicity=0.3, attributes={"status": 503, "body": "no"})
    n = 1000
    with _client(web) as client:
        codes = [client.get(f"/r{i}").status_code for i in range(n)]
    aborted = codes.count(503)
    assert set(codes) == {200, 503}
    assert _inside_binomial(aborted, n, 0.3), aborted
    assert len(service.requests) == n - aborted
    metrics = httpx.get(f"{web.api}/metrics").text
    assert f'chaoslab_proxy_http_requests_total{{proxy="web"}} {n}' in metrics
    assert (
        f'chaoslab_proxy_http_toxic_hits_total{{proxy="web",toxic="a",type="http_abort"}} {aborted}'
        in metrics
    )
    promtool = shutil.which("promtool")
    require(promtool is not None, "promtool is not installed (Debian: prometheus)")
    assert promtool is not None
    check = subprocess.run(
        [promtool, "check", "metrics"], input=metrics, capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_abort_answer_carries_status_body_and_headers(web: ProxyRef) -> None:
    web.add_toxic(
        name="teapot",
        type="http_abort",
        attributes={"status": 429, "body": "slow down", "headers": {"Retry-After": "3"}},
    )
    with _client(web) as client:
        resp = client.get("/x")
        assert (resp.status_code, resp.text, resp.headers["retry-after"]) == (429, "slow down", "3")
        assert resp.headers["x-chaoslab-fault"] == "teapot"
        assert client.get("/y").status_code == 429  # the connection stays usable


def _median_latency(client: httpx.Client, path: str, n: int) -> float:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        assert client.get(path).status_code == 200
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


@pytest.mark.parametrize("where", ["request", "response"])
def test_delay_adds_its_value_at_p50_within_2ms(web: ProxyRef, where: str) -> None:
    """Requests to a delayed route and to an untouched one alternate, so both medians see
    the same machine load; the difference is what the delay added."""
    web.add_toxic(
        name="slow", type="http_delay", attributes={"delay": 100, "where": where, "path_prefix": "/slow"}
    )
    slow, fast = [], []
    with _client(web) as client:
        for _ in range(31):
            for path, samples in (("/slow", slow), ("/fast", fast)):
                t = time.perf_counter()
                assert client.get(path).status_code == 200
                samples.append(time.perf_counter() - t)
    added = statistics.median(slow) - statistics.median(fast)
    assert 0.098 <= added <= 0.102, added
    assert statistics.median(fast) < 0.05  # the other route is not delayed


def test_delay_jitter_distribution_centres_on_the_delay(web: ProxyRef) -> None:
    web.add_toxic(
        name="j", type="http_delay", attributes={"delay": 60, "jitter": 10, "distribution": "normal"}
    )
    with _client(web) as client:
        samples = []
        for _ in range(41):
            t = time.perf_counter()
            client.get("/j")
            samples.append(time.perf_counter() - t)
    assert 0.055 <= statistics.median(samples) <= 0.068
    assert statistics.pstdev(samples) > 0.004  # jitter is really drawn


def _curl(port: int, *args: str) -> str:
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", *args],
        capture_output=True,
        text=True,
        timeout=10,
    )
    return out.stdout.replace("URL", str(port))


def test_route_method_and_header_matching_with_curl(web: ProxyRef) -> None:
    require(shutil.which("curl") is not None, "curl is not installed")
    base = f"http://127.0.0.1:{web.port}"
    web.add_toxic(name="checkout", type="http_abort", attributes={"status": 503, "path_prefix": "/checkout"})
    web.add_toxic(
        name="posts",
        type="http_abort",
        attributes={"status": 502, "method": "POST", "path_regex": r"^/api/v\d+/"},
    )
    web.add_toxic(
        name="canary",
        type="http_abort",
        attributes={"status": 418, "match_headers": {"X-Canary": "yes|true"}},
    )
    assert _curl(web.port, f"{base}/checkout/pay") == "503"
    assert _curl(web.port, f"{base}/catalogue/items") == "200"
    assert _curl(web.port, "-X", "POST", "-d", "x", f"{base}/api/v2/orders") == "502"
    assert _curl(web.port, f"{base}/api/v2/orders") == "200"  # GET: the method does not match
    assert _curl(web.port, "-X", "POST", "-d", "x", f"{base}/api/vX/orders") == "200"
    assert _curl(web.port, "-H", "X-Canary: true", f"{base}/catalogue") == "418"
    assert _curl(web.port, "-H", "X-Canary: truely", f"{base}/catalogue") == "200"  # whole value


def test_fail_first_n_then_pass_and_every_nth(web: ProxyRef) -> None:
    web.add_toxic(
        name="first", type="http_abort", attributes={"status": 503, "first": 3, "path_prefix": "/f"}
    )
    web.add_toxic(
        name="every", type="http_abort", attributes={"status": 500, "every": 4, "path_prefix": "/e"}
    )
    with _client(web) as client:
        assert [client.get("/f").status_code for _ in range(6)] == [503, 503, 503, 200, 200, 200]
        assert [client.get("/e").status_code for _ in range(8)] == [200, 200, 200, 500] * 2
    # An update restarts the count (a new toxic version), as Toxiproxy redraws toxicity.
    resp = web.http("POST", "/proxies/web/toxics/first", {"attributes": {"first": 1}})
    assert resp.status_code == 200 and resp.json()["attributes"]["first"] == 1
    with _client(web) as client:
        assert [client.get("/f").status_code for _ in range(3)] == [503, 200, 200]


def test_rewrite_and_truncate_responses(web: ProxyRef) -> None:
    web.add_toxic(
        name="rw",
        type="http_rewrite",
        attributes={
            "set_headers": {"Cache-Control": "no-store"},
            "remove_headers": ["X-Service"],
            "path_prefix": "/rw",
        },
    )
    web.add_toxic(name="cut", type="http_truncate", attributes={"bytes": 5, "path_prefix": "/cut"})
    with _client(web) as client:
        resp = client.get("/rw")
        assert resp.headers["cache-control"] == "no-store" and "x-service" not in resp.headers
        assert client.get("/other").headers["x-service"] == "up"
        with pytest.raises(httpx.RemoteProtocolError, match="received 5 bytes"):
            client.get("/cut")


def test_tcp_toxics_still_act_on_an_http_mode_proxy(web: ProxyRef) -> None:
    with _client(web) as client:
        base = _median_latency(client, "/t", 9)
        web.add_toxic(name="lat", type="latency", attributes={"latency": 50})
        assert 0.045 <= _median_latency(client, "/t", 9) - base <= 0.06


def test_api_refuses_bad_http_toxics_and_http_toxics_on_tcp_proxies(api: str, service: _Service) -> None:
    upstream = f"127.0.0.1:{service.server_address[1]}"
    assert httpx.post(f"{api}/proxies", json={"name": "t", "upstream": upstream}).status_code == 201
    resp = httpx.post(f"{api}/proxies/t/toxics", json={"type": "http_abort"})
    assert resp.status_code == 400 and "HTTP mode" in resp.json()["error"]
    resp = httpx.post(f"{api}/proxies", json={"name": "m", "upstream": upstream, "mode": "h2"})
    assert resp.status_code == 400 and "mode" in resp.json()["error"]
    assert (
        httpx.post(f"{api}/proxies", json={"name": "h", "upstream": upstream, "mode": "http"}).status_code
        == 201
    )
    for attributes, field in (
        ({"pathprefix": "/x"}, "unknown attributes"),
        ({"status": 99}, "status"),
        ({"path_regex": "("}, "path_regex"),
        ({"first": 2, "every": 2}, "exclude"),
        ({"headers": {"X-A": "a\r\nInjected: 1"}}, "headers.X-A"),
    ):
        resp = httpx.post(f"{api}/proxies/h/toxics", json={"type": "http_abort", "attributes": attributes})
        assert resp.status_code == 400 and field in resp.json()["error"], (attributes, resp.text)
    assert httpx.get(f"{api}/proxies/h/toxics").json() == []


def test_toxiproxy_python_lists_http_mode_proxies_and_http_toxics(web: ProxyRef) -> None:
    toxiproxy = pytest.importorskip("toxiproxy", reason="pip install toxiproxy-python")
    web.add_toxic(name="ab", type="http_abort", attributes={"status": 503, "path_prefix": "/x"})
    server = toxiproxy.Toxiproxy()
    host, port = web.api.removeprefix("http://").split(":")
    server.update_api_consumer(host, int(port))
    proxies = server.proxies()
    assert set(proxies) == {"web"}
    proxy = proxies["web"]
    toxics = proxy.toxics()
    assert set(toxics) == {"ab"} and toxics["ab"].type == "http_abort"
    proxy.add_toxic(type="latency", attributes={"latency": 1})  # a TCP toxic, as ever
    proxy.destroy_toxic("ab")
    assert set(proxy.toxics()) == {"latency_downstream"}


# --- the driver ----------------------------------------------------------------------


@pytest.fixture
def ctx(tmp_path: Path) -> DriverContext:
    return DriverContext(run_id="t", state_dir=tmp_path, lab_dir=env_state().lab)


def test_driver_abort_reverts_and_checks_clean(ctx: DriverContext, web: ProxyRef) -> None:
    driver = HttpDriver()
    op = driver.operation("abort")
    assert op is not None
    args = {"status": 500, "path": "/checkout", "share": 1.0}
    assert check_args(op, args) == [] and driver.validate(op, args, web.target) == []
    record = driver.inject(ctx, driver.prepare(ctx, op, args, web.target, 30.0))
    assert record.lease_expires_at is not None
    with _client(web) as client:
        assert client.get("/checkout").status_code == 500
        assert client.get("/catalogue").status_code == 200
        assert not driver.check_clean(ctx, record).clean
        assert driver.revert(ctx, record).reverted
        assert driver.revert(ctx, record).detail == "already clean"  # idempotent
        assert driver.check_clean(ctx, record).clean
        assert client.get("/checkout").status_code == 200


def test_driver_refuses_bad_input_and_tcp_proxies(ctx: DriverContext, api: str, service: _Service) -> None:
    driver = HttpDriver()
    op = driver.operation("abort")
    assert op is not None
    assert driver.validate(op, {"path": "checkout"}, "lab:replica-1")[0].message.endswith("must start with /")
    assert driver.validate(op, {"first": 1, "every": 2}, "lab:replica-1")
    delay = driver.operation("delay")
    assert delay is not None and check_args(delay, {}) != []  # delay is required
    upstream = f"127.0.0.1:{service.server_address[1]}"
    httpx.post(f"{api}/proxies", json={"name": "tcp", "upstream": upstream})
    with pytest.raises(InvalidInput, match="HTTP mode"):
        driver.prepare(ctx, op, {}, f"proxy:tcp@{api.removeprefix('http://')}", 5.0)


def test_a_proxy_switched_to_tcp_after_the_plan_is_not_applied(ctx: DriverContext, web: ProxyRef) -> None:
    """Planned on an HTTP-mode proxy that another client then replaced by a TCP one: the
    server refuses the http_* toxic (400), so nothing changed: "not applied", no revert."""
    driver = HttpDriver()
    op = driver.operation("abort")
    assert op is not None
    record = driver.prepare(ctx, op, {}, web.target, 5.0)
    upstream = web.http("GET", f"/proxies/{web.name}").json()["upstream"]
    web.http("POST", "/populate", [{"name": web.name, "upstream": upstream, "listen": "127.0.0.1:0"}])
    with pytest.raises(DriverError, match="HTTP mode") as refused:
        driver.inject(ctx, record)
    assert refused.value.not_applied
    assert web.toxics() == []


@pytest.mark.parametrize(
    ("op", "args", "path"),
    [
        ("abort", {"path": "/k"}, "/k"),
        ("delay", {"delay": "2s"}, "/k"),
        ("rewrite", {"set_headers": {"X-Service": "down"}}, "/k"),
        ("truncate", {"bytes": 1}, "/k"),
    ],
)
def test_sigkilled_runner_http_fault_ends_with_the_lease(
    ctx: DriverContext, web: ProxyRef, op: str, args: dict[str, Any], path: str
) -> None:
    """The runner injects with a 1 s lease and is SIGKILLed: the proxy alone ends the fault."""
    code = (
        "import json, sys, time, pathlib\n"
        "from chaoslab.drivers.base import DriverContext\n"
        "from chaoslab.drivers.proxy.http_driver import HttpDriver\n"
        "from chaoslab.paths import StatePaths\n"
        "lab = StatePaths.from_environment().lab\n"
        "d = HttpDriver(); c = DriverContext(run_id='doomed', state_dir=pathlib.Path('.'), lab_dir=lab)\n"
        f"op = d.operation({op!r})\n"
        f"r = d.inject(c, d.prepare(c, op, {args!r}, sys.argv[1], 1.0))\n"
        "print(r.to_json(), flush=True)\n"
        "time.sleep(60)\n"
    )
    runner = subprocess.Popen([sys.executable, "-c", code, web.target], stdout=subprocess.PIPE, text=True)
    assert runner.stdout is not None
    try:
        record = RevertRecord.from_dict(json.loads(runner.stdout.readline()))
        injected_at = time.monotonic()
        os.kill(runner.pid, signal.SIGKILL)
    finally:
        runner.wait(timeout=10)
        runner.stdout.close()
    driver = HttpDriver()
    assert not driver.check_clean(ctx, record).clean
    wait_until(lambda: driver.check_clean(ctx, record).clean, timeout_s=2.0, what="a clean check")
    assert time.monotonic() - injected_at <= 2.0  # within lease + 1 s
    with _client(web) as client:
        resp = client.get(path)
        assert resp.status_code == 200 and resp.headers["x-service"] == "up" and resp.text == "path=/k;" * 4


def test_curl_expect_100_continue_passes_through(web: ProxyRef, tmp_path: Path) -> None:
    """curl sends ``Expect: 100-continue`` for a large body: the interim 100 answer goes
    back and the final answer is still the one owed for the request."""
    require(shutil.which("curl") is not None, "curl is not installed")
    body = tmp_path / "body.bin"
    body.write_bytes(b"z" * 200_000)
    out = subprocess.run(
        [
            "curl",
            "-s",
            "-H",
            "Expect: 100-continue",
            "--data-binary",
            f"@{body}",
            f"http://127.0.0.1:{web.port}/up",
        ],
        capture_output=True,
        timeout=10,
    )
    assert out.stdout == b"echo:" + b"z" * 200_000


def test_pipelined_head_waits_for_the_answers_before_it(web: ProxyRef, service: _Service) -> None:
    """GET, HEAD, GET in one write: the HEAD request reaches the service only after the
    first answer came back, the last GET only after the HEAD answer, and the client gets
    three whole answers in order (the HEAD one without a body)."""
    import socket

    with socket.create_connection(("127.0.0.1", web.port), timeout=5) as sock:
        sock.sendall(
            b"GET /a HTTP/1.1\r\nHost: t\r\n\r\nHEAD /b HTTP/1.1\r\nHost: t\r\n\r\n"
            b"GET /c HTTP/1.1\r\nHost: t\r\n\r\n"
        )
        want = b"path=/a;" * 4 + b"path=/c;" * 4
        got = b""
        for _ in range(100):
            chunk = sock.recv(65536)
            if not chunk:
                break
            got += chunk
            if got.endswith(b"path=/c;" * 4):
                break
    heads = got.split(b"HTTP/1.1 200 OK")[1:]
    assert len(heads) == 3, got
    assert b"path=/b;" not in got and got.count(b"path=") == 8
    assert b"".join(part.split(b"\r\n\r\n", 1)[1] for part in heads) == want
    assert [p for _, p in service.requests] == ["/a", "/b", "/c"]
