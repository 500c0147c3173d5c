"""The fault proxy answers as Toxiproxy 2.x does (its ``api.go``, ``proxy.go``,
``toxic_collection.go``, ``stream/direction.go`` and ``toxics/`` read side by side):
listen addresses of any form, atomic updates, ``/version``, ``/metrics``, every toxic
type, stream parsing, and the router's status codes. Listeners may bind the wildcard;
the tests only ever connect through 127.0.0.1 or ::1."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import require
from tests.integration.proxykit import ProxyRef, connect, median_rtt, round_trip

# Every toxic Toxiproxy registers, with the attribute names of its Go struct (toxics/*.go).
TOXIPROXY_TOXICS: dict[str, set[str]] = {
    "noop": set(),
    "latency": {"latency", "jitter"},
    "bandwidth": {"rate"},
    "slow_close": {"delay"},
    "timeout": {"timeout"},
    "reset_peer": {"timeout"},
    "slicer": {"average_size", "size_variation", "delay"},
    "limit_data": {"bytes"},
}


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def _echo_through(family: socket.AddressFamily, host: str, port: int) -> bytes:
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect((host, port))
        sock.sendall(b"hello")
        return sock.recv(5)


@pytest.fixture
def api(proxy_api: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=proxy_api, timeout=10) as client:
        yield client


def _create(api: httpx.Client, name: str, upstream: str, listen: str) -> dict[str, Any]:
    resp = api.post("/proxies", json={"name": name, "upstream": upstream, "listen": listen})
    assert resp.status_code == 201, resp.text
    made: dict[str, Any] = resp.json()
    return made


# -- listen addresses ---------------------------------------------------------------------


def test_listen_on_all_ipv4_interfaces_reports_the_bound_address(api: httpx.Client, echo_port: int) -> None:
    made = _create(api, "all4", f"127.0.0.1:{echo_port}", "0.0.0.0:0")
    try:
        host, port = made["listen"].rsplit(":", 1)
        assert host == "0.0.0.0" and int(port) > 0
        assert _echo_through(socket.AF_INET, "127.0.0.1", int(port)) == b"hello"
    finally:
        api.delete("/proxies/all4")


def test_listen_ipv6_wildcard_and_loopback(api: httpx.Client, echo_port: int) -> None:
    if not _ipv6_loopback():
        pytest.skip("this kernel has no IPv6 loopback")
    wild = _create(api, "all6", f"127.0.0.1:{echo_port}", "[::]:0")
    loop6 = _create(api, "lo6", f"127.0.0.1:{echo_port}", "[::1]:0")
    try:
        assert re.fullmatch(r"\[::\]:\d+", wild["listen"]), wild
        port = int(wild["listen"].rsplit(":", 1)[1])
        # Go's wildcard listener is dual-stack: reachable over IPv6 and IPv4 loopback.
        assert _echo_through(socket.AF_INET6, "::1", port) == b"hello"
        assert _echo_through(socket.AF_INET, "127.0.0.1", port) == b"hello"
        assert re.fullmatch(r"\[::1\]:\d+", loop6["listen"]), loop6
        assert _echo_through(socket.AF_INET6, "::1", int(loop6["listen"].rsplit(":", 1)[1])) == b"hello"
    finally:
        api.delete("/proxies/all6")
        api.delete("/proxies/lo6")


def test_listen_hostname_resolves_and_bad_addresses_are_refused(api: httpx.Client, echo_port: int) -> None:
    made = _create(api, "byname", f"localhost:{echo_port}", "localhost:0")
    try:
        assert made["listen"].startswith("127.0.0.1:")
        assert _echo_through(socket.AF_INET, "127.0.0.1", int(made["listen"].rsplit(":", 1)[1])) == b"hello"
    finally:
        api.delete("/proxies/byname")
    for listen in ("::1:80", "127.0.0.1", "127.0.0.1:99999", "[::1:80"):
        resp = api.post(
            "/proxies", json={"name": "bad", "upstream": f"127.0.0.1:{echo_port}", "listen": listen}
        )
        assert resp.status_code == 400, (listen, resp.text)
        assert resp.json()["status"] == 400
    assert "bad" not in api.get("/proxies").json()


# -- atomic updates --------------------------------------------------------------------


def test_a_proxy_update_answering_400_changes_nothing(proxy: ProxyRef, echo_port: int) -> None:
    before = proxy.http("GET", f"/proxies/{proxy.name}").json()
    with connect(proxy.port) as live:
        round_trip(live)
        for body in (
            {"listen": "127.0.0.1:0", "enabled": "yes"},  # a valid move, then a bad field
            {"upstream": "127.0.0.1:1", "lease_s": -1},
            {"listen": "127.0.0.1:0", "upstream": "no port"},
            {"enabled": False, "lease_s": "soon"},
        ):
            resp = proxy.http("PATCH", f"/proxies/{proxy.name}", body)
            assert resp.status_code == 400, (body, resp.text)
            assert proxy.http("GET", f"/proxies/{proxy.name}").json() == before, body
        round_trip(live)  # the live connection was never dropped by a restart


def test_a_toxic_update_answering_400_changes_nothing(proxy: ProxyRef) -> None:
    proxy.add_toxic(name="slow", type="latency", toxicity=0.5, attributes={"latency": 10})
    before = proxy.http("GET", f"/proxies/{proxy.name}/toxics/slow").json()
    for body in (
        {"toxicity": 1.0, "attributes": {"latency": "x"}},
        {"attributes": {"latency": 20}, "toxicity": 7},
        {"attributes": {"jitter": 3}, "lease_s": 0},
    ):
        resp = proxy.http("PATCH", f"/proxies/{proxy.name}/toxics/slow", body)
        assert resp.status_code == 400, (body, resp.text)
        assert proxy.http("GET", f"/proxies/{proxy.name}/toxics/slow").json() == before


def test_a_valid_move_restarts_on_the_new_address(proxy: ProxyRef, echo_port: int) -> None:
    resp = proxy.http("PATCH", f"/proxies/{proxy.name}", {"listen": "127.0.0.1:0"})
    assert resp.status_code == 200, resp.text
    port = int(resp.json()["listen"].rsplit(":", 1)[1])
    assert port != proxy.port
    assert _echo_through(socket.AF_INET, "127.0.0.1", port) == b"hello"
    same = proxy.http("PATCH", f"/proxies/{proxy.name}", {"listen": resp.json()["listen"]})
    assert same.json()["listen"] == resp.json()["listen"]  # the bound address: not a move


# -- /version, /metrics ----------------------------------------------------------------


def test_version_is_a_release_version_as_toxiproxy_reports_it(api: httpx.Client) -> None:
    resp = api.get("/version")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/json")
    assert re.fullmatch(r"\d+\.\d+\.\d+", resp.json()["version"]), resp.text


def test_metrics_are_prometheus_text_and_count_bytes(proxy: ProxyRef) -> None:
    with connect(proxy.port) as sock:
        for _ in range(10):
            round_trip(sock, b"x" * 100)
    resp = httpx.get(proxy.api + "/metrics", timeout=10)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = resp.text
    listen = proxy.http("GET", f"/proxies/{proxy.name}").json()["listen"]

    def value(metric: str, direction: str) -> int:
        pattern = (
            rf'^{metric}\{{direction="{direction}",listener="{re.escape(listen)}",'
            rf'proxy="{proxy.name}",upstream="[^"]+"\}} (\d+)$'
        )
        found = re.search(pattern, text, re.MULTILINE)
        assert found, (metric, direction, text)
        return int(found.group(1))

    for metric in ("toxiproxy_proxy_received_bytes_total", "toxiproxy_proxy_sent_bytes_total"):
        assert value(metric, "upstream") == 1000
        assert value(metric, "downstream") == 1000
    promtool = shutil.which("promtool")
    require(promtool is not None, "promtool (Debian package prometheus)")
    assert promtool is not None
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr


# -- toxics ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(TOXIPROXY_TOXICS))
def test_every_toxiproxy_toxic_type_is_accepted(proxy: ProxyRef, kind: str) -> None:
    toxic = proxy.add_toxic(type=kind)
    assert toxic["name"] == f"{kind}_downstream" and toxic["type"] == kind
    assert set(toxic["attributes"]) == TOXIPROXY_TOXICS[kind]
    assert all(v == 0 for v in toxic["attributes"].values())


def test_noop_passes_data_unchanged(proxy: ProxyRef) -> None:
    proxy.add_toxic(type="noop", stream="upstream")
    proxy.add_toxic(type="noop")
    with connect(proxy.port) as sock:
        for _ in range(3):
            assert round_trip(sock, b"through") < 1.0


def test_stream_is_case_insensitive_and_empty_is_invalid(proxy: ProxyRef) -> None:
    base = median_rtt(proxy.port, n=3)
    toxic = proxy.add_toxic(type="latency", stream="UpStream", attributes={"latency": 100})
    assert toxic["name"] == "latency_UpStream"  # Toxiproxy names it from the stream as sent
    assert median_rtt(proxy.port, n=3) - base >= 0.095  # it acts on the upstream direction
    for stream in ("", "sideways"):
        resp = proxy.http("POST", f"/proxies/{proxy.name}/toxics", {"type": "latency", "stream": stream})
        assert resp.status_code == 400
        assert resp.json() == {
            "error": "stream was invalid, can be either upstream or downstream",
            "status": 400,
        }
    # The stream is checked before the type, as in Toxiproxy.
    resp = proxy.http("POST", f"/proxies/{proxy.name}/toxics", {"type": "nope", "stream": ""})
    assert resp.json()["error"].startswith("stream was invalid")
    resp = proxy.http("POST", f"/proxies/{proxy.name}/toxics", {"type": "nope"})
    assert resp.status_code == 400 and resp.json()["error"].startswith("invalid toxic type")


# -- the router ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("PUT", "/proxies", 405),
        ("PUT", "/proxies/{name}", 405),
        ("PUT", "/proxies/{name}/toxics/t", 405),
        ("DELETE", "/proxies", 405),
        ("GET", "/reset", 405),
        ("POST", "/version", 405),
        ("HEAD", "/proxies", 405),
        ("OPTIONS", "/proxies/{name}", 405),
        ("GET", "/nope", 404),
        ("GET", "/proxies/", 404),
        ("GET", "/proxies/{name}/toxics/t/extra", 404),
    ],
)
def test_router_answers_like_toxiproxy(proxy: ProxyRef, method: str, path: str, status: int) -> None:
    resp = proxy.http(method, path.format(name=proxy.name))
    assert resp.status_code == status
    if status == 405 or method == "HEAD":
        assert resp.content == b""
    else:
        assert resp.text == "404 page not found\n"
        assert resp.headers["content-type"].startswith("text/plain")


def test_metrics_take_any_method_and_head_has_no_body(api: httpx.Client) -> None:
    head = api.head("/metrics")
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["content-length"]) > 0
    assert api.post("/metrics").text.startswith("# HELP toxiproxy_proxy_received_bytes_total")


def test_browsers_are_refused_on_routes_only(api: httpx.Client) -> None:
    mozilla = {"User-Agent": "Mozilla/5.0"}
    refused = api.get("/proxies", headers=mozilla)
    assert refused.status_code == 403 and refused.text == "User agent not allowed\n"
    assert api.get("/nope", headers=mozilla).status_code == 404


def test_status_codes_of_api_errors(api: httpx.Client, proxy: ProxyRef) -> None:
    path = f"/proxies/{proxy.name}"
    cases = [
        ("POST", "/proxies", {"upstream": "127.0.0.1:1"}, 400, "missing required field: name"),
        ("POST", "/proxies", {"name": proxy.name, "upstream": "127.0.0.1:1"}, 409, "proxy already exists"),
        ("GET", "/proxies/missing", None, 404, "proxy not found"),
        ("GET", f"{path}/toxics/missing", None, 404, "toxic not found"),
        ("PATCH", f"{path}/toxics/missing", {"toxicity": 1}, 404, "toxic not found"),
        ("DELETE", f"{path}/toxics/missing", None, 404, "toxic not found"),
    ]
    for method, url, body, status, message in cases:
        resp = api.request(method, url, json=body)
        assert resp.status_code == status, (method, url, resp.text)
        assert resp.json() == {"error": message, "status": status}
    bad = api.post("/proxies", content=b"{not json", headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"].startswith("bad request body")


def test_the_api_itself_can_listen_on_ipv6(echo_port: int) -> None:
    if not _ipv6_loopback():
        pytest.skip("this kernel has no IPv6 loopback")
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "chaoslab.drivers.proxy", "--api", "[::1]:0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    try:
        line = proc.stdout.readline()
        assert re.match(r"chaoslab-proxy api=\[::1\]:\d+ ", line), line
        base = "http://" + line.split("api=")[1].split()[0]
        with httpx.Client(base_url=base, timeout=10) as api:
            assert api.get("/version").json() == {"version": "2.12.0"}
            made = api.post(
                "/proxies", json={"name": "v6", "upstream": f"127.0.0.1:{echo_port}", "listen": "[::1]:0"}
            )
            assert made.status_code == 201, made.text
            port = int(made.json()["listen"].rsplit(":", 1)[1])
            assert _echo_through(socket.AF_INET6, "::1", port) == b"hello"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()
