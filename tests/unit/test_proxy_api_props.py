"""Property tests of the fault proxy's API semantics, in process on a real event loop:
addresses round-trip through Go's syntax, stream parsing is Toxiproxy's, and an update
answered with 400 leaves the proxy exactly as it was, whatever the body."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from chaoslab.drivers.proxy.errors import ApiError
from chaoslab.drivers.proxy.server import ProxyServer, join_address, split_address
from chaoslab.drivers.proxy.toxics import parse_toxic

ports = st.integers(min_value=0, max_value=65535)
hosts = st.one_of(
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(str),
    st.just(""),
    st.from_regex(r"[a-z][a-z0-9-]{0,20}(\.[a-z][a-z0-9-]{0,10}){0,2}", fullmatch=True),
)


@given(hosts, ports)
def test_addresses_round_trip_in_go_syntax(host: str, port: int) -> None:
    text = join_address(host, port)
    assert split_address(text, what="listen") == (host, port)
    if ":" in host:
        assert text.startswith("[") and ipaddress.ip_address(host)


@given(st.text(max_size=12))
@example("²")  # str.isdigit() is true for it, int() refuses it: found by this test
def test_unbracketed_or_portless_addresses_are_refused(junk: str) -> None:
    for text in (f"::1:{junk}", junk.replace(":", "")):
        try:
            host, port = split_address(text, what="listen")
        except ApiError as exc:
            assert exc.status == 400
        else:
            assert ":" not in host and 0 <= port <= 65535


@given(st.sampled_from(["upstream", "downstream"]), st.lists(st.booleans(), min_size=10, max_size=10))
def test_stream_is_case_insensitive(stream: str, upper: list[bool]) -> None:
    spelled = "".join(c.upper() if u else c for c, u in zip(stream, upper, strict=False))
    spec = parse_toxic({"type": "latency", "stream": spelled}, uid=1)
    assert spec.direction == stream and spec.stream == spelled
    assert spec.name == f"latency_{spelled}"


@given(st.text(max_size=12))
def test_any_other_stream_is_refused_before_the_type(stream: str) -> None:
    if stream.lower() in ("upstream", "downstream"):
        return
    with pytest.raises(ApiError) as err:
        parse_toxic({"type": "no-such-type", "stream": stream}, uid=1)
    assert err.value.status == 400
    assert err.value.message == "stream was invalid, can be either upstream or downstream"


values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-5, max_value=100_000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        ["", "127.0.0.1:0", "127.0.0.1:1", "[::1", "no port", "::1:80", "127.0.0.1:99999", "yes"]
    ),
    st.lists(st.integers(), max_size=2),
)
bodies = st.dictionaries(
    st.sampled_from(["listen", "upstream", "enabled", "lease_s", "heartbeat_s", "name"]), values, max_size=4
)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[asyncio.AbstractEventLoop, ProxyServer]]:
    loop = asyncio.new_event_loop()
    proxies = ProxyServer(loop)
    loop.run_until_complete(proxies.create_proxy({"name": "p", "upstream": "127.0.0.1:1"}))
    yield loop, proxies
    loop.run_until_complete(proxies.close())
    loop.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies)
def test_an_update_answered_400_changes_nothing(
    server: tuple[asyncio.AbstractEventLoop, ProxyServer], body: dict[str, Any]
) -> None:
    loop, proxies = server
    before = loop.run_until_complete(proxies.get_proxy("p"))
    try:
        loop.run_until_complete(proxies.update_proxy("p", body))
    except ApiError as exc:
        assert exc.status == 400, exc.message
        assert loop.run_until_complete(proxies.get_proxy("p")) == before
    # Back to a known state for the next example (an accepted body may have moved it).
    loop.run_until_complete(
        proxies.update_proxy("p", {"listen": "127.0.0.1:0", "upstream": "127.0.0.1:1", "enabled": True})
    )
