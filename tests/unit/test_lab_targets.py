"""``lab:`` targets resolve under the run's own lab directory (DriverContext.lab_dir),
never under the home the environment names: two runs with two homes must not reach
each other's labs."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from chaoslab.drivers.base import DriverContext
from chaoslab.drivers.proxy.driver import ProxyDriver
from chaoslab.drivers.proxy.http_driver import HttpDriver
from chaoslab.errors import DriverError
from chaoslab.lab.state import write_state


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("driver", "op", "args"),
    [
        (ProxyDriver(), "latency", {"latency": "10ms"}),
        (HttpDriver(), "abort", {"status": 503}),
    ],
    ids=["proxy", "http"],
)
def test_lab_targets_resolve_under_the_contexts_lab_dir(
    driver: ProxyDriver, op: str, args: dict[str, object], tmp_path: Path
) -> None:
    # the environment's home (the autouse chaoslab_home fixture) has no lab at all; the
    # run's lab dir has one whose proxy API listens nowhere
    port = _closed_port()
    lab_dir = tmp_path / "run-home" / "lab"
    write_state(
        lab_dir,
        {
            "proxy": {"pid": 1, "api_port": port},
            "components": {"replica-1": {"kind": "replica", "pid": 1, "port": 1, "proxy": "replica-1"}},
        },
    )
    ctx = DriverContext(run_id="r1", state_dir=tmp_path / "state", lab_dir=lab_dir)
    operation = driver.operation(op)
    assert operation is not None
    # resolved through the run's lab: the record names that lab's proxy API, and the
    # driver goes on to call it (nobody listens there: not applied)
    record = driver.prepare(ctx, operation, args, "lab:replica-1", 10)
    assert (record.data["api"], record.data["proxy"]) == (f"http://127.0.0.1:{port}", "replica-1")
    with pytest.raises(DriverError, match=f"127.0.0.1:{port}") as refused:
        driver.inject(ctx, record)
    assert refused.value.not_applied
