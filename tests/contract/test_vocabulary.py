"""Contract over the fault vocabulary: every operation has the same name, parameters and
units on every platform that offers it, and each platform's translation lands on a real
driver operation that accepts it (checked with the installed drivers, no mocks)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chaoslab.drivers import vocabulary as v
from chaoslab.drivers.base import check_args
from chaoslab.drivers.registry import DriverRegistry
from chaoslab.drivers.selection import SELECTION_NAMES

REGISTRY = DriverRegistry()
PAIRS = [(op, b) for op in v.OPERATIONS for b in op.bindings]
IDS = [f"{op.name}@{b.platform}" for op, b in PAIRS]

# a value of each canonical parameter, in the canonical unit
SAMPLE: dict[str, Any] = {
    "signal": "SIGTERM",
    "timeout": 5,
    "workers": 2,
    "load": 50,
    "mib": 16,
    "percent_free": 5,
    "percent_used": 50,
    "path": "/tmp",
    "port": 8080,
    "protocol": "udp",
    "direction": "egress",
    "peer": "10.0.0.0/8",
    "network": "bridge",
    "delay": "100ms",
    "jitter": "10ms",
    "percent": 5,
    "grace": "2s",
    "replicas": 0,
    "cpus": 0.5,
    "rate": 100,
    "average_size": 10,
    "size_variation": 1,
    "delay_us": 10,
    "bytes": 100,
    "stream": "upstream",
    "toxicity": 0.5,
    # http.* (request-level faults)
    "method": ["GET", "POST"],
    "path_regex": "^/api/",
    "headers": {"X-Canary": "yes"},
    "first": 3,
    "every": 2,
    "share": 0.25,
    "status": 502,
    "body": "down",
    "response_headers": {"Retry-After": "1"},
    "distribution": "normal",
    "where": "response",
    "set_headers": {"Cache-Control": "no-store"},
    "remove_headers": ["ETag"],
}


def _driver_op(driver: str, operation: str) -> Any:
    return REGISTRY.get(driver).operation(operation)


def test_names_are_unique_and_every_platform_has_a_syntax() -> None:
    assert len(v.BY_NAME) == len(v.OPERATIONS)
    assert set(v.TARGET_SYNTAX) == set(v.PLATFORMS)
    for scheme, platform in v.SCHEME_PLATFORM.items():
        assert scheme in v.PLATFORMS[platform]
    required = {"kill", "suspend", "stress.cpu", "stress.memory", "stress.disk", "net.drop"}
    required |= {"net.partition", "net.latency", "net.loss", "restart", "scale"}
    required |= {"net.bandwidth", "net.timeout", "net.reset", "net.slicer", "net.slow_close"}
    required |= {"net.limit_data", "net.down"}
    assert required <= set(v.BY_NAME)


@pytest.mark.parametrize(("vop", "binding"), PAIRS, ids=IDS)
def test_each_platform_lands_on_a_real_driver_operation_with_the_canonical_units(
    vop: v.VOperation, binding: v.Binding
) -> None:
    dop = _driver_op(binding.driver, binding.operation)
    assert dop is not None, f"{binding.driver}.{binding.operation} does not exist"
    driver_params = {p.name: p for p in dop.params}
    for canon in vop.params:
        name = canon.param.name
        if name in binding.unsupported:
            continue
        target_name = binding.rename.get(name, name)
        assert target_name in driver_params, f"{vop.name}.{name} -> {target_name} is not a driver param"
        if name not in binding.convert:
            # same unit on both sides when no conversion is declared
            assert driver_params[target_name].duration == canon.param.duration, (vop.name, name)
    for name in binding.unsupported:
        assert vop.canon(name) is not None, f"{name} is not a parameter of {vop.name}"
    if binding.selects:
        assert SELECTION_NAMES <= set(driver_params), f"{binding.driver}.{binding.operation} cannot pick"
    if binding.ssh_pick:
        assert {"pick", "seed", "max", "allow_fewer"} <= set(driver_params)


@pytest.mark.parametrize(("vop", "binding"), PAIRS, ids=IDS)
def test_every_canonical_argument_translates_to_arguments_the_driver_accepts(
    vop: v.VOperation, binding: v.Binding
) -> None:
    dop = _driver_op(binding.driver, binding.operation)
    args = {c.param.name: SAMPLE[c.param.name] for c in vop.params if c.param.name not in binding.unsupported}
    if vop.name in ("stress.memory", "stress.disk"):
        args.pop("percent_free", None), args.pop("percent_used", None)
    translated = v.translate(vop, binding, args)
    if dop.param("interface") is not None and dop.param("interface").required:
        translated["interface"] = "lo"  # a driver-specific argument, under its own name
    assert check_args(dop, translated) == []
    # the canonical defaults are applied on every platform alike
    for canon in vop.params:
        if canon.param.default is not None and canon.param.name not in binding.unsupported:
            assert binding.rename.get(canon.param.name, canon.param.name) in v.translate(vop, binding, {})


@pytest.mark.parametrize("vop", v.OPERATIONS, ids=[op.name for op in v.OPERATIONS])
def test_an_operation_shows_the_same_parameters_on_every_platform(vop: v.VOperation) -> None:
    seen: dict[str, tuple[Any, ...]] = {}
    for b in vop.bindings:
        eff = v.effective_operation(vop, b, _driver_op(b.driver, b.operation))
        for canon in vop.params:
            if canon.param.name in b.unsupported:
                continue
            p = eff.param(canon.param.name)
            assert p is not None
            shape = (p.type, p.default, p.duration, p.minimum, p.maximum, p.choices, p.required)
            assert seen.setdefault(canon.param.name, shape) == shape, (vop.name, b.platform)
        if b.selects or b.ssh_pick:
            for name in SELECTION_NAMES:
                assert eff.param(name) is not None


def test_a_platform_that_cannot_do_an_operation_names_the_ones_that_can() -> None:
    resolved, problems = v.resolve("scale", "docker:web", {"replicas": 1})
    assert resolved is None and problems[0].path == "target"
    assert "kubernetes (k8s:)" in str(problems[0].hint)
    resolved, problems = v.resolve("kill", "pod:shop/app=web", {"signal": "TERM"})
    assert resolved is None and problems[0].path == "with.signal"
    assert "local" in str(problems[0].hint) and "docker" in str(problems[0].hint)


@pytest.mark.parametrize(
    ("target", "driver", "operation", "driver_target"),
    [
        ("docker:label=app=web", "docker", "kill", "label=app=web"),
        ("docker:web-*", "docker", "kill", "name:web-*"),
        ("ssh:tag=eu", "ssh", "kill", "ssh:tag=eu"),
        ("pod:shop/app=web", "kubernetes", "delete_pods", "k8s:shop/app=web"),
        ("pid:42", "process", "kill", "pid:42"),
        ("pattern:worker", "process", "kill", "pattern:worker"),
        ("lab:replica-1", "process", "kill", "lab:replica-1"),
    ],
)
def test_the_scheme_picks_the_platform(target: str, driver: str, operation: str, driver_target: str) -> None:
    resolved, problems = v.resolve("kill", target, {}, driver_op=_driver_op)
    assert problems == [] and resolved is not None
    assert (resolved.driver, resolved.driver_operation, resolved.target) == (driver, operation, driver_target)
    dop = _driver_op(driver, operation)
    assert check_args(dop, resolved.args) == []


def test_kill_waits_as_long_on_every_platform() -> None:
    waits = set()
    for b in v.BY_NAME["kill"].bindings:
        args = v.translate(v.BY_NAME["kill"], b, {})
        waits.add(args[b.rename.get("timeout", "timeout")])
    assert waits == {"60s"}


@given(
    sel=st.one_of(
        st.fixed_dictionaries({"count": st.integers(1, 50)}),
        st.fixed_dictionaries({"percent": st.floats(0.01, 100)}),
        st.just({"all": True}),
        st.just({}),
    )
)
def test_ssh_selection_translates_to_a_valid_pick(sel: dict[str, Any]) -> None:
    from chaoslab.drivers.ssh.inventory import check_pick

    ssh = v.BY_NAME["kill"].binding("ssh")
    assert ssh is not None
    pick = v.translate(v.BY_NAME["kill"], ssh, sel)["pick"]
    assert check_pick(pick) is None
    if not sel:
        assert pick == 1  # one target by default, as on every platform


def test_legacy_names_suggest_the_vocabulary() -> None:
    assert v.suggest("ssh", "stress_cpu", "ssh:all") == "'ssh.stress_cpu' is now 'do: stress.cpu'"
    assert "do: kill" in str(v.suggest("docker", "kill", "name:web"))
    assert "pod:shop/app=web" in str(v.suggest("kubernetes", "delete_pods", "k8s:shop/app=web"))
    assert v.suggest("stress", "cpu", None) is None  # already the vocabulary's spelling


_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.just("${var}"),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
_NAMES = sorted(
    {c.param.name for op in v.OPERATIONS for c in op.params} | SELECTION_NAMES | {"pick", "bogus"}
)


@given(
    name=st.sampled_from([*v.BY_NAME, "nope", "kill.now"]),
    target=st.one_of(
        st.none(),
        st.sampled_from(
            [
                "host",
                "pid:1",
                "docker:web",
                "ssh:eu",
                "pod:ns/a=b",
                "k8s:n/deployment/w",
                "proxy:x@127.0.0.1:1",
                "lab:x",
                "zz:1",
                "",
            ]
        ),
        st.text(max_size=20),
    ),
    args=st.dictionaries(st.sampled_from(_NAMES), _VALUES, max_size=5),
    check=st.booleans(),
)
def test_resolve_never_raises_on_any_input(
    name: str, target: str | None, args: dict[str, Any], check: bool
) -> None:
    resolved, problems = v.resolve(name, target, args, driver_op=_driver_op, check=check)
    assert (resolved is None) == bool(problems)
    for p in problems:
        assert p.path and p.message
