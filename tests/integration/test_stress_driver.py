"""The stress driver against the real machine: backends, cgroups, sizes, isolation."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from chaoslab.drivers import _proc
from chaoslab.drivers.base import DriverContext, Operation, RevertRecord
from chaoslab.drivers.lease import lapse_path
from chaoslab.drivers.stress import StressDriver, fill_dir, stressors
from chaoslab.drivers.watchdog import outcome_path
from chaoslab.errors import InvalidInput, UnsafeTarget, Unsupported
from tests.conftest import poll, require, wait_until
from tests.contract.targets import adopting_orphans, stop
from tests.statepaths import env_state

DRIVER = StressDriver()
CPU_CGROUP = Path("/sys/fs/cgroup/cpu")


@pytest.fixture(autouse=True)
def _reap() -> Iterator[None]:
    with adopting_orphans():
        yield


@pytest.fixture
def ctx(tmp_path: Path) -> DriverContext:
    return DriverContext(run_id="t", state_dir=tmp_path / "state", lab_dir=env_state().lab)


def _op(name: str) -> Operation:
    op = DRIVER.operation(name)
    assert op is not None
    return op


@contextlib.contextmanager
def _stress(
    ctx: DriverContext, op: str, args: dict[str, Any], target: str | None = None, lease: float = 10
) -> Iterator[RevertRecord]:
    record = DRIVER.inject(ctx, DRIVER.prepare(ctx, _op(op), args, target, lease))
    try:
        yield record
    finally:
        DRIVER.revert(ctx, record)
        assert DRIVER.check_clean(ctx, record).clean


def _cpu_share(procs: list[psutil.Process], window_s: float = 1.0) -> float:
    """CPU used by ``procs`` over ``window_s``, in percent of one core."""

    def total() -> float:
        t = 0.0
        for p in procs:
            with contextlib.suppress(psutil.Error):
                t += sum(p.cpu_times()[:2])
        return t

    before = total()
    time.sleep(window_s)  # the measurement window itself: a share of CPU needs an interval
    return 100 * (total() - before) / window_s


@pytest.mark.parametrize(
    ("op", "args", "lease", "match"),
    [
        ("memory", {}, 5, "exactly one of mib or percent_free"),
        ("memory", {"mib": 10, "percent_free": 1}, 5, "exactly one"),
        ("memory", {"mib": 10**9}, 5, "not possible"),
        ("memory", {"percent_free": 95}, 5, "above the maximum"),
        ("cpu", {"load": 0}, 5, "below the minimum"),
        ("cpu", {"load": 150}, 5, "above the maximum"),
        ("cpu", {"workers": "2"}, 5, "expected int"),
        ("cpu", {"backend": "magic"}, 5, "is not one of"),
        ("cpu", {}, -3, "negative duration"),
        ("cpu", {}, "forever", "not a duration"),
        ("cpu", {}, 90000, "absurd lease"),
        ("disk", {"mib": 1, "path": "/nonexistent-dir"}, 5, "not a directory"),
        ("disk", {"mib": 10**9, "path": "/tmp"}, 5, "MiB free"),
        ("disk", {"percent_used": 0.01, "path": "/tmp"}, 5, "already"),
        ("disk", {"mib": 1, "backend": "stress-ng"}, 5, "is not one of"),
    ],
)
def test_bad_input_is_refused_before_any_stressor_starts(
    ctx: DriverContext, op: str, args: dict[str, Any], lease: Any, match: str
) -> None:
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(InvalidInput, match=match):
        DRIVER.prepare(ctx, _op(op), args, None, lease)
    assert {p.pid for p in psutil.Process().children(recursive=True)} <= before


def test_a_target_matching_chaoslab_itself_is_refused(ctx: DriverContext) -> None:
    with pytest.raises(UnsafeTarget):
        DRIVER.prepare(ctx, _op("cpu"), {}, f"pid:{os.getpid()}", 5)


def test_backend_is_chosen_and_recorded(ctx: DriverContext, monkeypatch: pytest.MonkeyPatch) -> None:
    require(shutil.which("stress-ng") is not None, "stress-ng (Debian: apt-get install stress-ng)")
    auto = DRIVER.prepare(ctx, _op("cpu"), {}, None, 5)
    assert auto.data["backend"] == "stress-ng" and "found" in auto.data["backend_reason"]
    assert DRIVER.prepare(ctx, _op("cpu"), {"backend": "builtin"}, None, 5).data["backend"] == "builtin"
    assert DRIVER.prepare(ctx, _op("disk"), {"mib": 1}, None, 5).data["backend"] == "builtin"
    monkeypatch.setenv("PATH", "/nonexistent")  # a machine without stress-ng
    fallback = DRIVER.prepare(ctx, _op("memory"), {"mib": 8}, None, 5)
    assert fallback.data["backend"] == "builtin"
    assert fallback.data["backend_reason"] == "stress-ng not installed"
    with pytest.raises(Unsupported, match="apt-get install stress-ng"):
        DRIVER.prepare(ctx, _op("cpu"), {"backend": "stress-ng"}, None, 5)


def test_builtin_cpu_workers_hit_the_requested_load(ctx: DriverContext) -> None:
    # Locally other work may saturate the CPU; in CI the machine is ours, so a saturated
    # host is itself a failure (something this suite started is still burning CPU).
    require(
        os.getloadavg()[0] <= 1.5 * (os.cpu_count() or 1),
        "a host CPU not saturated by others (achieved load is not measurable now)",
    )
    with _stress(ctx, "cpu", {"workers": 2, "load": 40, "backend": "builtin"}) as record:
        assert record.data["backend"] == "builtin"
        procs = [p for p in stressors(record) if p.pid != record.data["keeper"]["pid"]]
        assert len(procs) == 2
        wait_until(
            lambda: all(sum(p.cpu_times()[:2]) > 0 for p in procs),
            timeout_s=5,
            what="both workers to be on the CPU",
        )
        share = _cpu_share(procs, 1.5) / 2
        assert 25 <= share <= 55, share  # the benchmark holds ±5; a busy CI box gets slack


def test_revert_kills_only_this_faults_stressors(ctx: DriverContext) -> None:
    a = DRIVER.inject(ctx, DRIVER.prepare(ctx, _op("cpu"), {"load": 10, "backend": "builtin"}, None, 10))
    b = DRIVER.inject(ctx, DRIVER.prepare(ctx, _op("cpu"), {"load": 10}, None, 10))
    try:
        b_pids = {p.pid for p in stressors(b)}
        assert b_pids and not b_pids & {p.pid for p in stressors(a)}
        assert DRIVER.revert(ctx, a).reverted
        assert DRIVER.check_clean(ctx, a).clean
        # none of b's stressors died (stress-ng may fork a worker late, so b can only grow)
        assert b_pids <= {p.pid for p in stressors(b)}
        assert not DRIVER.check_clean(ctx, b).clean
    finally:
        DRIVER.revert(ctx, a)
        DRIVER.revert(ctx, b)
    assert DRIVER.check_clean(ctx, b).clean


def test_memory_share_of_free_is_resolved_and_resident(ctx: DriverContext) -> None:
    available = psutil.virtual_memory().available
    record = DRIVER.prepare(ctx, _op("memory"), {"percent_free": 0.5, "backend": "builtin"}, None, 10)
    assert abs(record.data["mib"] - available * 0.005 / 2**20) < 64
    record = DRIVER.inject(ctx, record)
    try:
        rss = sum(p.memory_info().rss for p in stressors(record))
        assert rss >= record.data["mib"] * 2**20 * 0.9
    finally:
        DRIVER.revert(ctx, record)
    assert DRIVER.check_clean(ctx, record).clean


@contextlib.contextmanager
def _tmpfs(tmp_path: Path, size_mib: int) -> Iterator[Path]:
    mnt = tmp_path / "fs"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    require(done.returncode == 0, f"mount tmpfs (root): {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.root
def test_disk_fill_up_to_a_percentage_then_removed(ctx: DriverContext, tmp_path: Path) -> None:
    with _tmpfs(tmp_path, 64) as fs:
        record = DRIVER.inject(
            ctx, DRIVER.prepare(ctx, _op("disk"), {"path": str(fs), "percent_used": 50}, None, 10)
        )
        try:
            usage = shutil.disk_usage(fs)
            assert 48 <= 100 * usage.used / usage.total <= 52
            assert fill_dir(str(fs), record.fault_id).is_dir()
            assert record.data["watchdog"]["pid"] > 0
        finally:
            assert DRIVER.revert(ctx, record).reverted
        assert DRIVER.check_clean(ctx, record).clean
        assert shutil.disk_usage(fs).used < 2**20
        assert list(fs.iterdir()) == []


@pytest.mark.root
def test_disk_fill_files_outlive_a_killed_stressor_until_the_watchdog_lease(
    ctx: DriverContext, tmp_path: Path
) -> None:
    record = DRIVER.inject(
        ctx, DRIVER.prepare(ctx, _op("disk"), {"path": str(tmp_path), "mib": 8}, None, 1.5)
    )
    try:
        for p in stressors(record):
            p.kill()  # the stressor is gone; its file is not
        directory = fill_dir(str(tmp_path), record.fault_id)
        assert directory.exists()
        left = (record.lease_expires_at or 0) + 1 - time.time()
        wait_until(
            lambda: DRIVER.check_clean(ctx, record).clean,
            timeout_s=left,
            interval_s=0.05,
            what="the lease to clean up",
        )
        assert not directory.exists()
    finally:
        DRIVER.revert(ctx, record)


@contextlib.contextmanager
def _cpu_cgroup(quota_us: int) -> Iterator[Path]:
    require(CPU_CGROUP.is_dir() and os.geteuid() == 0, "cgroup v1 cpu controller (root)")
    group = CPU_CGROUP / f"chaoslab-test-{secrets.token_hex(4)}"
    group.mkdir()
    try:
        (group / "cpu.cfs_period_us").write_text("100000")
        (group / "cpu.cfs_quota_us").write_text(str(quota_us))
        yield group
    finally:
        for pid in (group / "cgroup.procs").read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), 9)
        poll(lambda: not (group / "cgroup.procs").read_text().split(), timeout_s=5, interval_s=0.05)
        group.rmdir()


@pytest.mark.root
def test_stressor_in_the_target_cgroup_squeezes_the_target(ctx: DriverContext) -> None:
    with _cpu_cgroup(quota_us=40_000) as group:  # the target's cgroup may use 0.4 CPU
        busy = subprocess.Popen(
            [sys.executable, "-c", "import time\nend = time.time() + 60\nwhile time.time() < end: pass"]
        )
        try:
            (group / "cgroup.procs").write_text(str(busy.pid))
            target = psutil.Process(busy.pid)
            alone = _cpu_share([target])
            with _stress(
                ctx, "cpu", {"workers": 1, "load": 100, "backend": "builtin"}, f"pid:{busy.pid}"
            ) as record:
                assert record.data["cgroup"]["of"]["pid"] == busy.pid
                assert str(group / "cgroup.procs") in record.data["cgroup"]["procs_files"]
                members = {int(x) for x in (group / "cgroup.procs").read_text().split()}
                assert {p.pid for p in stressors(record)} <= members
                squeezed = _cpu_share([target])
            assert 5 <= alone <= 45, alone  # capped by the quota; a busy host gives less
            assert squeezed <= 0.7 * alone, (alone, squeezed)
        finally:
            stop(busy)


@pytest.mark.root
def test_a_revert_that_fails_keeps_the_lease(ctx: DriverContext, tmp_path: Path) -> None:
    """A fill directory that cannot be removed (a mount inside it: EBUSY): the revert
    says so, and the watchdog (the lease) stays armed; once removable, a revert retires it."""
    record = DRIVER.inject(ctx, DRIVER.prepare(ctx, _op("disk"), {"path": str(tmp_path), "mib": 1}, None, 60))
    directory = fill_dir(str(tmp_path), record.fault_id)
    with _tmpfs(directory, 1):  # mounted at <fill dir>/fs
        result = DRIVER.revert(ctx, record)
        assert not result.reverted and "lease kept" in result.detail, result
        assert _proc.watchdog_processes(record.fault_id), "a failed revert must not retire the lease"
        assert not DRIVER.check_clean(ctx, record).clean
    assert DRIVER.revert(ctx, record).reverted
    assert not _proc.watchdog_processes(record.fault_id)
    assert DRIVER.check_clean(ctx, record).clean


@pytest.mark.root
def test_disk_records_the_directory_it_resolved_and_locks_it_by_identity(
    ctx: DriverContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A relative ``path`` is kept absolute in the record's args too (nothing is read
    against another cwd later), and one directory reached through a bind mount shares a
    lock key with its own path."""
    disk, alias = tmp_path / "disk", tmp_path / "alias"
    disk.mkdir()
    alias.mkdir()
    monkeypatch.chdir(tmp_path)
    plain = DRIVER.prepare(ctx, _op("disk"), {"path": "disk", "mib": 1}, None, 10)
    assert plain.args["path"] == plain.data["path"] == str(disk)
    done = subprocess.run(
        ["mount", "--bind", str(disk), str(alias)], capture_output=True, text=True, check=False
    )
    require(done.returncode == 0, f"mount --bind (root): {done.stderr.strip()}")
    try:
        bound = DRIVER.prepare(ctx, _op("disk"), {"path": str(alias), "mib": 1}, None, 10)
    finally:
        subprocess.run(["umount", str(alias)], check=True)
    assert bound.data["path"] == str(alias)
    shared = set(DRIVER.identities(plain)) & set(DRIVER.identities(bound))
    assert shared and all(":dir:" in key for key in shared), (
        DRIVER.identities(plain),
        DRIVER.identities(bound),
    )


@pytest.mark.root
def test_a_lease_whose_end_fails_keeps_trying_until_the_fault_is_gone(
    ctx: DriverContext, tmp_path: Path
) -> None:
    """The watchdog's revert at the end of the lease cannot remove the fill (a mount
    inside it): the watchdog stays and tries again, and once the mount is gone it ends
    the fault and says so -- it does not give up after one try."""
    record = DRIVER.inject(
        ctx, DRIVER.prepare(ctx, _op("disk"), {"path": str(tmp_path), "mib": 1}, None, 2.0)
    )
    directory = fill_dir(str(tmp_path), record.fault_id)
    outcome = outcome_path(ctx.state_dir, record.fault_id)
    try:
        with _tmpfs(directory, 1):
            wait_until(
                lambda: lapse_path(ctx.state_dir, record.fault_id).exists(),
                timeout_s=10,
                interval_s=0.05,
                what="the lease to end",
            )
            # Its first try has failed by now (the fill's files are gone, the mount stays).
            wait_until(lambda: not list(directory.glob("fill*")), timeout_s=10, interval_s=0.05, what="a try")
            time.sleep(1.0)  # the time of a second try: the watchdog must still be there
            assert _proc.watchdog_processes(record.fault_id), "the watchdog gave up with the fault still on"
            assert directory.exists() and not outcome.exists()
        wait_until(
            lambda: outcome.exists(), timeout_s=30, interval_s=0.1, what="the watchdog to end the fault"
        )
        result = json.loads(outcome.read_text())
        assert result["reverted"] and result["clean"] and result["attempts"] > 1, result
        assert not directory.exists()
        assert not _proc.watchdog_processes(record.fault_id)
    finally:
        DRIVER.revert(ctx, record)
