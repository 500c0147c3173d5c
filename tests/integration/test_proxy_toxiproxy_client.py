"""An unmodified Toxiproxy client library from PyPI (``toxiproxy-python``) drives the
chaoslab proxy server: proxies, toxics, down, reset, populate, version."""

# ruff: noqa: F811  (pytest fixtures imported from test_proxy_helpers are re-bound as
# test parameters by name; that is how pytest shares them)
from __future__ import annotations

from collections.abc import Iterator

import pytest
from test_proxy_helpers import (  # noqa: F401  (fixtures are used by name)
    connect,
    echo_port,
    median_rtt,
    proxy_api,
)

toxiproxy = pytest.importorskip("toxiproxy", reason="pip install toxiproxy-python")


@pytest.fixture
def client(proxy_api: str) -> Iterator[object]:
    server = toxiproxy.Toxiproxy()
    host, port = proxy_api.removeprefix("http://").split(":")
    server.update_api_consumer(host, int(port))  # the library keeps host/port on a class
    yield server
    server.destroy_all()


def test_toxiproxy_python_drives_the_server(client: object, echo_port: int) -> None:
    server = client
    assert server.running() is True  # type: ignore[attr-defined]
    assert b"version" in server.version()  # type: ignore[attr-defined]

    p = server.create(upstream=f"127.0.0.1:{echo_port}", name="tp")  # type: ignore[attr-defined]
    port = int(p.listen.rsplit(":", 1)[1])
    assert port > 0 and p.enabled is True
    assert set(server.proxies()) == {"tp"}  # type: ignore[attr-defined]
    base = median_rtt(port, n=3)

    p.add_toxic(type="latency", attributes={"latency": 100})
    assert 0.098 <= median_rtt(port, n=3) - base <= 0.115
    toxic = p.get_toxic("latency_downstream")
    assert toxic.type == "latency" and toxic.attributes["latency"] == 100
    p.destroy_toxic("latency_downstream")
    assert p.toxics() == {}
    assert median_rtt(port, n=3) < 0.03

    with p.down():
        with pytest.raises(ConnectionRefusedError):
            connect(port).close()
    assert median_rtt(port, n=2) < 0.05

    p.add_toxic(type="bandwidth", stream="upstream", attributes={"rate": 10})
    p.disable()
    server.reset()  # type: ignore[attr-defined]
    again = server.get_proxy("tp")  # type: ignore[attr-defined]
    assert again.enabled is True and p.toxics() == {}

    made = server.populate(  # type: ignore[attr-defined]
        [
            {"name": "tp", "upstream": f"127.0.0.1:{echo_port}", "listen": p.listen},
            {"name": "tp2", "upstream": f"127.0.0.1:{echo_port}", "listen": "127.0.0.1:0"},
        ]
    )
    assert [m.name for m in made] == ["tp2"]  # "tp" unchanged, kept as it was
    assert set(server.proxies()) == {"tp", "tp2"}  # type: ignore[attr-defined]
    assert p.destroy() is True
    assert set(server.proxies()) == {"tp2"}  # type: ignore[attr-defined]
