"""An unmodified Toxiproxy client library from PyPI (``toxiproxy-python``) drives the
chaoslab proxy server: proxies, toxics, down, reset, populate, version."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import require
from tests.integration.proxykit import connect, median_rtt

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


def test_toxiproxy_python_every_toxic_and_its_errors(client: object, echo_port: int) -> None:
    from toxiproxy.exceptions import InvalidToxic, NotFound, ProxyExists

    p = client.create(upstream=f"127.0.0.1:{echo_port}", name="every")  # type: ignore[attr-defined]
    for kind in (
        "noop",
        "latency",
        "bandwidth",
        "slow_close",
        "timeout",
        "reset_peer",
        "slicer",
        "limit_data",
    ):
        p.add_toxic(type=kind, stream="upstream", name=f"t-{kind}")
    assert {t.type for t in p.toxics().values()} >= {"noop", "limit_data", "slicer"}
    with pytest.raises(InvalidToxic):
        p.add_toxic(type="latency", stream="")
    with pytest.raises(ProxyExists):
        toxiproxy.api.APIConsumer.post("/proxies", json={"name": "every", "upstream": "127.0.0.1:1"})
    assert p.get_toxic("missing") is None
    with pytest.raises(NotFound):
        toxiproxy.api.APIConsumer.get("/proxies/every/toxics/missing")
    assert client.version().decode().strip() == '{"version": "2.12.0"}'  # type: ignore[attr-defined]


def test_chaostoolkit_toxiproxy_with_its_defaults(
    proxy_api: str, echo_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """chaostoolkit-toxiproxy's actions as an experiment calls them: ``listen_host``
    defaults to 0.0.0.0 and the bound port is read back from the answer."""
    pytest.importorskip("chaostoxi", reason="pip install chaostoolkit-toxiproxy")
    from chaostoxi.proxy import actions as proxy_actions
    from chaostoxi.proxy import probes as proxy_probes
    from chaostoxi.toxic import actions as toxic_actions

    monkeypatch.setenv("ctk_PORT", "")  # create_proxy writes NAME_PORT into os.environ
    host, port = proxy_api.removeprefix("http://").split(":")
    config: dict[str, object] = {"toxiproxy_host": host, "toxiproxy_port": int(port)}
    assert proxy_actions.create_proxy("ctk", "127.0.0.1", echo_port, configuration=config) is True
    try:
        shown = proxy_probes.get_proxy_attribute("ctk", "listen", configuration=config)
        assert shown == f"0.0.0.0:{config['ctk_PORT']}"
        listen_port = int(str(config["ctk_PORT"]))
        base = median_rtt(listen_port, n=3)
        toxic_actions.create_latency_toxic("ctk", "lag", 100, configuration=config)
        assert median_rtt(listen_port, n=3) - base >= 0.095
        assert toxic_actions.delete_toxic("ctk", "lag", configuration=config) is True
        assert proxy_actions.disable_proxy("ctk", configuration=config) is True
        with pytest.raises(ConnectionRefusedError):
            connect(listen_port).close()
        assert proxy_actions.enable_proxy("ctk", configuration=config) is True
        assert median_rtt(listen_port, n=2) < 0.05
        for create in (
            lambda: toxic_actions.create_bandwith_degradation_toxic("ctk", "bw", 100, configuration=config),
            lambda: toxic_actions.create_slicer_toxic("ctk", "sl", 100, 10, 0, configuration=config),
            lambda: toxic_actions.create_limiter_toxic("ctk", "lim", 10_000_000, configuration=config),
            lambda: toxic_actions.create_timeout_toxic("ctk", "to", 0, configuration=config),
        ):
            assert create() is True
        assert proxy_actions.reset(configuration=config) is True
        assert proxy_probes.proxy_exist("ctk", configuration=config) is True
    finally:
        proxy_actions.delete_proxy("ctk", configuration=config)
    assert proxy_probes.proxy_exist("ctk", configuration=config) is False


def test_chaos_run_with_chaostoolkit_toxiproxy(proxy_api: str, echo_port: int, tmp_path: Path) -> None:
    """The way a Chaos Toolkit user drives Toxiproxy: ``chaos run`` of an experiment whose
    activities are chaostoolkit-toxiproxy's, with its defaults (listen on 0.0.0.0)."""
    pytest.importorskip("chaostoxi", reason="pip install chaostoolkit-toxiproxy")
    host, port = proxy_api.removeprefix("http://").split(":")

    def call(kind: str, module: str, func: str, **arguments: object) -> dict[str, object]:
        name = f"{func}-{len(arguments)}"
        provider = {"type": "python", "module": module, "func": func, "arguments": arguments}
        return {"type": kind, "name": name, "provider": provider}

    experiment = {
        "title": "chaostoolkit-toxiproxy against chaoslab's proxy",
        "description": "created with the extension's defaults, toxic added and removed",
        "configuration": {"toxiproxy_host": host, "toxiproxy_port": int(port)},
        "steady-state-hypothesis": {
            "title": "the API answers",
            "probes": [
                {
                    "type": "probe",
                    "name": "api-up",
                    "tolerance": 200,
                    "provider": {"type": "http", "url": f"{proxy_api}/version"},
                }
            ],
        },
        "method": [
            call(
                "action",
                "chaostoxi.proxy.actions",
                "create_proxy",
                proxy_name="ctkrun",
                upstream_host="127.0.0.1",
                upstream_port=echo_port,
            ),
            call(
                "action",
                "chaostoxi.toxic.actions",
                "create_latency_toxic",
                for_proxy="ctkrun",
                toxic_name="lag",
                latency=50,
            ),
            call(
                "probe",
                "chaostoxi.proxy.probes",
                "get_proxy_attribute",
                proxy_name="ctkrun",
                attribute="listen",
            ),
            call("action", "chaostoxi.proxy.actions", "disable_proxy", proxy_name="ctkrun"),
            call("action", "chaostoxi.proxy.actions", "enable_proxy", proxy_name="ctkrun"),
        ],
        "rollbacks": [call("action", "chaostoxi.proxy.actions", "delete_proxy", proxy_name="ctkrun")],
    }
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps(experiment), "utf-8")
    chaos = Path(sys.executable).parent / "chaos"
    require(chaos.exists(), "the chaos CLI (chaostoolkit, a dev dependency)")
    done = subprocess.run(
        [
            str(chaos),
            "--no-version-check",
            "run",
            "--rollback-strategy=always",
            "--journal-path",
            str(tmp_path / "journal.json"),
            str(path),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    journal = json.loads((tmp_path / "journal.json").read_text("utf-8"))
    assert journal["status"] == "completed", done.stdout + done.stderr
    runs = {r["activity"]["provider"]["func"]: r for r in journal["run"]}
    assert all(r["status"] == "succeeded" for r in runs.values()), runs
    assert str(runs["get_proxy_attribute"]["output"]).startswith("0.0.0.0:")
    assert runs["create_latency_toxic"]["output"] is True
    assert [r["status"] for r in journal["rollbacks"]] == ["succeeded"]
    with httpx.Client(base_url=proxy_api, timeout=10) as api:
        assert api.get("/proxies/ctkrun").status_code == 404  # the rollback removed it
