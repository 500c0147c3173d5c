"""The fault proxy server on real sockets: forwarding, each toxic observed from a client,
leases enforced by the server alone, and Toxiproxy's API shapes."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import wait_until
from tests.integration.proxykit import (
    ProxyRef,
    connect,
    median_rtt,
    proxy_process,
    recv_all,
    recv_exactly,
    round_trip,
)


@pytest.fixture(scope="module", params=["uvloop", "asyncio"])
def proxy_api(request: pytest.FixtureRequest) -> Iterator[str]:
    """Every test here runs against the proxy on each event loop it supports."""
    with proxy_process(request.param) as url:
        yield url


def test_forwards_bytes_unchanged_and_half_close(proxy: ProxyRef) -> None:
    payload = os.urandom(2 * 1024 * 1024)
    with connect(proxy.port) as sock:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)  # the echo service sees EOF, finishes, closes
        assert recv_all(sock) == payload


def test_large_transfer_through_toxics_keeps_order_under_backpressure(proxy: ProxyRef) -> None:
    # Latency on both streams plus a slicer: every byte goes through the queued path, and
    # 8 MiB is far more than the queue's high-water mark, so reading must pause and resume.
    proxy.add_toxic(name="up", type="latency", stream="upstream", attributes={"latency": 5})
    proxy.add_toxic(name="down", type="latency", attributes={"latency": 5})
    proxy.add_toxic(type="slicer", attributes={"average_size": 60000, "size_variation": 1000})
    payload = os.urandom(8 * 1024 * 1024)
    with connect(proxy.port, timeout=20) as sock:
        sender = threading.Thread(target=sock.sendall, args=(payload,))
        sender.start()
        received = recv_exactly(sock, len(payload))
        sender.join()
    assert received == payload


def test_unreachable_upstream_closes_the_client(proxy_api: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # bound but not listening: connection refused
        with httpx.Client(base_url=proxy_api, timeout=10) as api:
            made = api.post("/proxies", json={"name": "dead", "upstream": f"127.0.0.1:{dead}"})
            port = int(made.json()["listen"].rsplit(":", 1)[1])
            try:
                with connect(port) as sock:
                    assert sock.recv(10) == b""
            finally:
                api.delete("/proxies/dead")


def test_latency_applies_to_new_and_live_connections_then_goes(proxy: ProxyRef) -> None:
    live = connect(proxy.port)
    with live:
        base = median_rtt(proxy.port, sock=live)
        assert base < 0.02
        proxy.add_toxic(type="latency", attributes={"latency": 100})
        for rtt in (median_rtt(proxy.port, n=5, sock=live), median_rtt(proxy.port, n=5)):
            assert 0.098 <= rtt - base <= 0.115, rtt
        proxy.http("DELETE", f"/proxies/{proxy.name}/toxics/latency_downstream")
        assert median_rtt(proxy.port, sock=live) < 0.02


def test_latency_upstream_with_jitter(proxy: ProxyRef) -> None:
    proxy.add_toxic(type="latency", stream="upstream", attributes={"latency": 60, "jitter": 10})
    with connect(proxy.port) as sock:
        rtts = [round_trip(sock) for _ in range(8)]
    assert all(0.049 <= r <= 0.080 for r in rtts), rtts
    assert max(rtts) - min(rtts) > 0.002  # jitter varies the delay


def test_toxicity_zero_never_applies(proxy: ProxyRef) -> None:
    proxy.add_toxic(type="latency", toxicity=0.0, attributes={"latency": 300})
    assert median_rtt(proxy.port, n=3) < 0.05


def test_bandwidth_limits_throughput(proxy: ProxyRef) -> None:
    proxy.add_toxic(type="bandwidth", attributes={"rate": 200})  # 200 KB/s downstream
    payload = os.urandom(100_000)
    with connect(proxy.port) as sock:
        t0 = time.perf_counter()
        sock.sendall(payload)
        assert recv_exactly(sock, len(payload)) == payload
        elapsed = time.perf_counter() - t0
    assert 0.45 <= elapsed <= 0.8, elapsed  # 100 KB at 200 KB/s = 0.5 s


def test_timeout_zero_blackholes_until_removed_then_closes(proxy: ProxyRef) -> None:
    proxy.add_toxic(type="timeout", attributes={"timeout": 0})
    with connect(proxy.port, timeout=0.3) as sock:
        sock.sendall(b"hello")
        with pytest.raises(TimeoutError):
            sock.recv(10)
        proxy.http("DELETE", f"/proxies/{proxy.name}/toxics/timeout_downstream")
        sock.settimeout(2)
        assert sock.recv(10) == b""  # the blackholed connection is closed on removal
    assert median_rtt(proxy.port, n=2) < 0.05


def test_timeout_closes_connection_after_n_ms(proxy: ProxyRef) -> None:
    proxy.add_toxic(type="timeout", attributes={"timeout": 200})
    with connect(proxy.port) as sock:
        t0 = time.perf_counter()
        sock.sendall(b"hello")
        assert sock.recv(10) == b""
        assert 0.18 <= time.perf_counter() - t0 <= 0.6


def test_reset_peer_resets_the_client(proxy: ProxyRef) -> None:
    proxy.add_toxic(type="reset_peer", attributes={"timeout": 0})
    with connect(proxy.port) as sock:
        sock.sendall(b"hello")
        with pytest.raises(ConnectionResetError):
            sock.recv(10)


def test_slicer_delivers_data_in_small_segments(proxy: ProxyRef) -> None:
    proxy.add_toxic(type="slicer", attributes={"average_size": 100, "size_variation": 20, "delay": 3000})
    payload = os.urandom(3000)
    with connect(proxy.port) as sock:
        sock.sendall(payload)
        reads: list[bytes] = []
        while sum(map(len, reads)) < len(payload):
            reads.append(sock.recv(65536))
    assert b"".join(reads) == payload
    assert len(reads) >= 15 and max(map(len, reads)) <= 400, [len(r) for r in reads]


def test_slow_close_holds_the_close(proxy: ProxyRef) -> None:
    proxy.add_toxic(type="slow_close", attributes={"delay": 300})
    with connect(proxy.port) as sock:
        sock.sendall(b"bye")
        t0 = time.perf_counter()
        sock.shutdown(socket.SHUT_WR)
        assert recv_exactly(sock, 3) == b"bye"
        assert sock.recv(10) == b""
        assert 0.28 <= time.perf_counter() - t0 <= 0.8


def test_limit_data_closes_after_n_bytes(proxy: ProxyRef) -> None:
    proxy.add_toxic(type="limit_data", attributes={"bytes": 1000})
    payload = os.urandom(5000)
    with connect(proxy.port) as sock:
        sock.sendall(payload)
        assert recv_all(sock) == payload[:1000]


def test_down_with_lease_is_reenabled_by_the_server(proxy: ProxyRef) -> None:
    live = connect(proxy.port)
    with live:
        resp = proxy.http("POST", f"/proxies/{proxy.name}", {"enabled": False, "lease_s": 0.6})
        assert resp.json()["enabled"] is False and "lease_expires_at" in resp.json()
        assert live.recv(10) == b""  # live connections are dropped
    with pytest.raises(ConnectionRefusedError):
        connect(proxy.port).close()
    wait_until(
        lambda: proxy.http("GET", f"/proxies/{proxy.name}").json()["enabled"],
        timeout_s=2,
        what="the lease to re-enable it",
    )
    assert median_rtt(proxy.port, n=2) < 0.05  # same port again


def test_a_down_whose_port_was_taken_keeps_its_lease_and_comes_back_once_free(proxy: ProxyRef) -> None:
    """While the proxy is down another socket takes its port: re-enabling fails (500) and
    leaves the down *with its lease*; when the unrenewed lease ends it the server keeps
    trying, and listens again as soon as the port is free."""
    down = {"enabled": False, "lease_s": 60, "heartbeat_s": 1}
    assert proxy.http("POST", f"/proxies/{proxy.name}", down).json()["heartbeat_s"] == 1
    squatter = socket.socket()
    try:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # despite TIME_WAIT
        squatter.bind(("127.0.0.1", proxy.port))
        squatter.listen(1)
        failed = proxy.http("POST", f"/proxies/{proxy.name}", {"enabled": True})
        assert failed.status_code == 500 and "cannot listen" in failed.json()["error"], failed.text
        state = proxy.http("GET", f"/proxies/{proxy.name}").json()
        assert state["enabled"] is False and state["heartbeat_s"] == 1, state  # the lease is kept
        assert proxy.http("POST", f"/proxies/{proxy.name}/renew").status_code == 200
        # Unrenewed, the lease ends while the port is still taken (read, never renewed).
        wait_until(
            lambda: "heartbeat_s" not in proxy.http("GET", f"/proxies/{proxy.name}").json(),
            timeout_s=5,
            what="the unrenewed lease to end",
        )
        assert proxy.http("POST", f"/proxies/{proxy.name}/renew").status_code == 410
        assert proxy.http("GET", f"/proxies/{proxy.name}").json()["enabled"] is False
        # A client's re-enable failing meanwhile does not stop the server's retrying.
        assert proxy.http("POST", f"/proxies/{proxy.name}", {"enabled": True}).status_code == 500
    finally:
        squatter.close()
    wait_until(
        lambda: proxy.http("GET", f"/proxies/{proxy.name}").json()["enabled"],
        timeout_s=3,
        what="the server to listen again once the port is free",
    )
    assert median_rtt(proxy.port, n=2) < 0.05


def test_toxic_lease_ends_in_the_server(proxy: ProxyRef) -> None:
    # Lease inside attributes: the form clients that only pass attributes can send.
    toxic = proxy.add_toxic(type="latency", attributes={"latency": 200, "lease_s": 0.5})
    assert toxic["lease_s"] == 0.5 and toxic["attributes"] == {"latency": 200, "jitter": 0}
    with connect(proxy.port) as sock:
        assert round_trip(sock) > 0.19
        wait_until(lambda: proxy.toxics() == [], timeout_s=2, what="the toxic's lease to end")
        assert round_trip(sock) < 0.05


def test_heartbeat_lease_holds_while_renewed_and_ends_once_renewals_stop(proxy: ProxyRef) -> None:
    """chaoslab's heartbeat lease: renewed (POST …/renew) it outlives its window many
    times over; unrenewed it ends heartbeat_s after the last renewal, long before its
    ceiling, and a late renewal is told why (410 Gone)."""
    toxic = proxy.add_toxic(name="hb", type="latency", attributes={"latency": 1}, lease_s=60, heartbeat_s=1)
    assert toxic["heartbeat_s"] == 1 and toxic["lease_s"] == 60
    renew = f"/proxies/{proxy.name}/toxics/hb/renew"
    with httpx.Client(base_url=proxy.api, timeout=10) as api:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3.0:  # three windows: held all along while renewed
            resp = api.post(renew)
            last = time.monotonic()
            assert resp.status_code == 200, resp.text
            assert resp.json()["heartbeat_s"] == 1 and resp.json()["renewed_at"] <= time.time()
            assert [t["name"] for t in api.get(f"/proxies/{proxy.name}/toxics").json()] == ["hb"]
            time.sleep(0.2)
        wait_until(lambda: proxy.toxics() == [], timeout_s=5, what="the unrenewed lease to end the toxic")
        assert time.monotonic() - last < 1.0 + 0.5
        late = api.post(renew)
        assert late.status_code == 410 and "no renewal for" in late.json()["error"], late.text
        # Not there at all (never made, or deleted by a client) is 404; there without a
        # heartbeat lease is 409: nothing to renew.
        assert api.post(f"/proxies/{proxy.name}/toxics/nope/renew").status_code == 404
        proxy.add_toxic(name="plain", type="latency", attributes={"latency": 1})
        assert api.post(f"/proxies/{proxy.name}/toxics/plain/renew").status_code == 409
        api.delete(f"/proxies/{proxy.name}/toxics/plain")
        # A toxic made again under a lapsed name starts afresh.
        proxy.add_toxic(name="hb", type="latency", attributes={"latency": 1}, heartbeat_s=5)
        assert api.post(renew).status_code == 200


def test_down_heartbeat_lease_ends_once_renewals_stop(proxy: ProxyRef) -> None:
    resp = proxy.http("POST", f"/proxies/{proxy.name}", {"enabled": False, "lease_s": 60, "heartbeat_s": 1})
    assert resp.json()["enabled"] is False and resp.json()["heartbeat_s"] == 1
    renew = f"/proxies/{proxy.name}/renew"
    with httpx.Client(base_url=proxy.api, timeout=10) as api:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.0:  # renewed: still down
            assert api.post(renew).status_code == 200
            assert api.get(f"/proxies/{proxy.name}").json()["enabled"] is False
            time.sleep(0.2)
        wait_until(
            lambda: api.get(f"/proxies/{proxy.name}").json()["enabled"],
            timeout_s=3,
            what="the unrenewed lease to re-enable the proxy",
        )
        assert median_rtt(proxy.port, n=2) < 0.05
        late = api.post(renew)
        assert late.status_code == 410 and "no renewal for" in late.json()["error"], late.text
        for bad in ({"enabled": False, "heartbeat_s": 0}, {"enabled": False, "heartbeat_s": "4s"}):
            assert api.post(f"/proxies/{proxy.name}", json=bad).status_code == 400
        assert api.get(f"/proxies/{proxy.name}").json()["enabled"] is True


def test_toxic_update_merges_attributes_and_keeps_name(proxy: ProxyRef) -> None:
    proxy.add_toxic(name="slow", type="latency", attributes={"latency": 10, "jitter": 5})
    resp = proxy.http("PATCH", f"/proxies/{proxy.name}/toxics/slow", {"attributes": {"latency": 150}})
    assert resp.json()["attributes"] == {"latency": 150, "jitter": 5}
    assert median_rtt(proxy.port, n=3) > 0.14


def test_api_shapes_match_toxiproxy(proxy: ProxyRef, echo_port: int) -> None:
    with httpx.Client(base_url=proxy.api, timeout=10) as api:
        assert "version" in api.get("/version").json()
        dup = api.post("/proxies", json={"name": proxy.name, "upstream": "127.0.0.1:1"})
        assert dup.status_code == 409
        assert dup.json() == {"error": "proxy already exists", "status": 409}
        assert api.get("/proxies/nope").status_code == 404
        assert api.post("/proxies", json={"name": "x"}).status_code == 400
        bad = api.post(f"/proxies/{proxy.name}/toxics", json={"type": "nope"})
        assert bad.status_code == 400
        bad = api.post(f"/proxies/{proxy.name}/toxics", json={"type": "latency", "stream": "x"})
        assert bad.status_code == 400
        assert api.get("/proxies", headers={"User-Agent": "Mozilla/5.0"}).status_code == 403

        toxic = api.post(f"/proxies/{proxy.name}/toxics", json={"type": "bandwidth"}).json()
        assert toxic == {
            "name": "bandwidth_downstream",
            "type": "bandwidth",
            "stream": "downstream",
            "toxicity": 1.0,
            "attributes": {"rate": 0},
        }
        again = api.post(f"/proxies/{proxy.name}/toxics", json={"type": "bandwidth"})
        assert again.status_code == 409
        shown = api.get(f"/proxies/{proxy.name}").json()
        assert set(shown) == {"name", "listen", "upstream", "enabled", "toxics"}
        assert api.get(f"/proxies/{proxy.name}/toxics/bandwidth_downstream").json() == toxic
        assert api.get("/proxies").json()[proxy.name] == shown

        pop = [{"name": "pop1", "upstream": f"127.0.0.1:{echo_port}"}]
        first = api.post("/populate", json=pop)
        assert first.status_code == 201 and first.json()["proxies"][0]["name"] == "pop1"
        listen = first.json()["proxies"][0]["listen"]
        # As Toxiproxy's Differs: the address it is bound to is the same proxy (kept), an
        # ephemeral port 0 is not (replaced by a new proxy).
        kept = api.post("/populate", json=[{**pop[0], "listen": listen}]).json()["proxies"][0]
        assert kept["listen"] == listen

        api.post(f"/proxies/{proxy.name}", json={"enabled": False})
        assert api.post("/reset").status_code == 204
        shown = api.get(f"/proxies/{proxy.name}").json()
        assert shown["enabled"] is True and shown["toxics"] == []
        assert api.delete("/proxies/pop1").status_code == 204
        assert api.delete("/proxies/pop1").status_code == 404
