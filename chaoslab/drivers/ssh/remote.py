"""The shell scripts chaoslab runs on a host, built so that arguments stay data.

Quoting rule (the one thing this module exists for): every value that comes from a user,
an inventory or a record enters a script only through ``shlex.quote`` (strings) or
``int``/``float`` formatting (numbers). Scripts then refer to those values as quoted shell
variables (``"$sel"``), so ``; rm -rf /``, ``$(…)``, backticks and newlines are passed to
``pgrep``/``tc``/``iptables`` as one argument and never parsed as shell. The whole script
reaches the stdin of ``sh -s`` under the host's ``timeout`` so a remote command can
never outlive its deadline; it travels base64-encoded inside the exec request (see
``command``), so one command costs two round trips, not three. Hosts need a POSIX
``sh``, coreutils or busybox (``timeout``, ``setsid``, ``nohup``, ``base64``), procps
(``pgrep``) and GNU/busybox ``grep``.

Every fault that can be undone keeps its lease ON THE HOST: before the change is made, a
detached watchdog (``setsid nohup sh -c '<wait>; <revert>'``, its pid recorded) is
started in a session of its own, so the host heals when the lease ends even if the
runner and its connection vanish. A fault the run renews (``heartbeat``) has a lease
that follows the run: the runner rewrites ``<state dir>/<fault>/beat`` with the host's
own ``/proc/uptime`` about every second (``renew_script``, over the pooled connection),
and the watchdog, looking every ``lease.POLL_S``, ends the fault once the beat is older
than ``lease.LAPSE_S`` or the fixed lease (the ceiling) is over. Only the host's clock is
compared with itself, so no clock skew between runner and host matters, and ``read`` of
``/proc/uptime`` is a shell builtin (no process per look). Before its revert such a
watchdog writes why to ``<state dir>/<fault>.lapsed``; ``renew_script`` and the runner's
revert report that line (``lapsed=...``), and the revert removes it. A fault without
``heartbeat`` keeps the fixed lease (``sleep LEASE``). Every process a fault starts is the leader of a
session of its own (``setsid``) and carries ``CHAOSLAB_FAULT=<fault id>.<host>:``;
revert and check_clean find the fault's sessions through ``/proc/*/environ`` from the
fault id alone, plus the session ids recorded on the host and in the revert record
(stress-ng overwrites its workers' environment when it renames them, so the session,
which no worker leaves, is what gets killed). A recorded session is only ever killed
while its leader still carries the mark, or once the leader is gone (Linux does not
reuse a pid that is still some process's session id). Process faults never select a
process carrying a chaoslab mark.

Process faults never select: PID 1, the ssh session running the script (its session id
and all its ancestors), or any chaoslab process (see above).

Exit codes of the scripts: 0 ok, 3 nothing matched, 4 the change failed, 5 unsupported
on this host. Scripts report on stdout as ``key=value`` lines.
"""

from __future__ import annotations

import base64
import math
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from chaoslab.drivers.lease import LAPSE_S, POLL_S
from chaoslab.drivers.watchdog import RETRY_FOR_S, RETRY_MAX_S, RETRY_S

EXIT_NOT_FOUND = 3
EXIT_FAILED = 4
EXIT_UNSUPPORTED = 5
EXIT_UNSAFE = 6
ENV_MARK = "CHAOSLAB_FAULT"
SESSION_MARK = "CHAOSLAB_SESSION"
KILL_GRACE_S = 2  # `timeout -k`: SIGKILL this long after the TERM at the deadline
TIMEOUT_STATUSES = (124, 137)  # what the host's `timeout` returns when it fired
# Linux caps one argv string at 128 KiB (MAX_ARG_STRLEN); a script whose encoding could
# come near it (a huge ``command`` probe argv) goes on the channel's stdin instead.
MAX_INLINE_SCRIPT = 32 * 1024

Selector = Literal["name", "pattern", "pid"]


def q(value: str) -> str:
    """Quote one value for a POSIX shell (the only way strings enter a script)."""
    return shlex.quote(value)


def wrap(timeout_s: float) -> str:
    """The command line sent over ssh when the script follows on stdin (``command``'s
    route for scripts too long to ride in the exec request).

    The script goes over stdin, never on a command line, so no process of ours shows a
    user's pattern in its argv (a concurrent ``pgrep -f`` could otherwise match it).
    ``sh -s`` makes the script independent of the user's login shell (bash, zsh, fish);
    the host's ``timeout`` bounds it. ``CHAOSLAB_SESSION`` marks every process of the
    session, so a process fault never selects chaoslab's own scripts.
    """
    seconds = max(1, math.ceil(timeout_s))
    return f"env {SESSION_MARK}=1 timeout -k {KILL_GRACE_S} {seconds} sh -s"


def command(script: str, timeout_s: float) -> tuple[str, str]:
    """The exec request and the stdin that run ``script`` under ``sh -s``: ``(command, stdin)``.

    The script rides inside the exec request, base64-encoded and decoded on the host
    into the stdin of ``sh -s``: the exec request then carries everything, so the
    result follows its reply with no further round trip (sending the script on the
    channel's stdin must wait for that reply first: three round trips instead of two).
    The encoding keeps the two properties of the stdin route: no user value appears in
    clear in any argv, and nothing of the script is parsed by the login shell (base64
    is inert in sh, bash, zsh, fish and csh). ``env`` comes first so every process
    of the pipeline carries ``CHAOSLAB_SESSION`` (the login shell execs it). A script
    too long for one argv string falls back to ``wrap`` + stdin.
    """
    encoded = base64.b64encode(script.encode("utf-8")).decode("ascii")
    if len(encoded) > MAX_INLINE_SCRIPT:
        return wrap(timeout_s), script
    seconds = max(1, math.ceil(timeout_s))
    inner = f"printf %s {encoded} | base64 -d | timeout -k {KILL_GRACE_S} {seconds} sh -s"
    return f"env {SESSION_MARK}=1 sh -c '{inner}'", ""


def argv_command(argv: Sequence[str]) -> str:
    """A command line that runs exactly ``argv`` (each element quoted)."""
    return " ".join(q(a) for a in argv)


# --- building blocks ---------------------------------------------------------------------

# cl_field PID N: field N of /proc/PID/stat counted after the command name (1 = state,
# 2 = ppid, 4 = session); prints nothing for a vanished pid. Shell builtins only: it runs
# for every ancestor and candidate, and a sed|cut pipeline there cost most of a script's
# CPU (a count script took ~65 ms instead of ~25 ms on a loaded 2-core host).
_HELPERS = r"""
cl_field() {
  cl_n=$2; cl_s=
  read -r cl_s 2>/dev/null < "/proc/$1/stat" || return 0
  set -f; set -- ${cl_s##*") "}; set +f
  eval "printf '%s\n' \"\${$cl_n}\""
}
mysid=$(cl_field $$ 4)
cl_fault_pids() {
  for e in $(grep -lsa -- "$1" /proc/[0-9]*/environ 2>/dev/null); do
    p=${e#/proc/}; p=${p%/environ}
    s=$(cl_field "$p" 4)
    # Gone already (e.g. grep itself, or a subshell of this very scan): not a fault process.
    [ -z "$s" ] || [ "$s" = "$mysid" ] && continue
    printf '%s ' "$p"
  done
}
cl_our_session() {
  [ "${1:-0}" -gt 1 ] && [ "$1" != "$mysid" ] || return 1
  if [ -d "/proc/$1" ]; then grep -qsa -- "$mark" "/proc/$1/environ"; return $?; fi
  [ -n "$(pgrep -s "$1")" ]
}
cl_sessions() {
  { for s in "$@" $(cat "$dir/sessions" 2>/dev/null); do echo "$s"; done
    for p in $(cl_fault_pids "$mark"); do cl_field "$p" 4; done; } | sort -u |
  while read -r s; do cl_our_session "$s" && printf '%s ' "$s"; done
}
"""

# Ancestors and our session are excluded from process selection; so is chaoslab itself.
_PROCESS_HELPERS = r"""
ancestors=" "; a=$$
while [ "${a:-0}" -gt 1 ]; do ancestors="$ancestors$a "; a=$(cl_field "$a" 2); done
cl_protected() {
  [ "$1" -le 1 ] && return 0
  [ "$(cl_field "$1" 4)" = "$mysid" ] && return 0
  case "$ancestors" in *" $1 "*) return 0;; esac
  tr '\0' '\n' < "/proc/$1/environ" 2>/dev/null | grep -qE "^CHAOSLAB_(FAULT|SESSION)=" && return 0
  return 1
}
"""


def instance_id(fault_id: str, host: str) -> str:
    """The fault on one host. Hosts of a fleet may share a machine (or a state dir), so
    the state dir and the process mark name the host as well as the fault."""
    return f"{fault_id}.{host}"


def _prelude(fault_id: str, state_dir: str) -> list[str]:
    return [
        f"fid={q(fault_id)}",
        f"base={q(state_dir)}",
        'dir="$base/$fid"',
        f'mark="{ENV_MARK}=$fid:"',  # ':' ends it: host h1 never matches host h10
        _HELPERS,
    ]


def _match(by: Selector, value: str | int) -> list[str]:
    """Sets ``$pids`` to the matching, unprotected pids (space separated)."""
    lines = [_PROCESS_HELPERS]
    if by == "name":
        lines.append(f"sel={q(str(value))}")
        lines.append('cands=$(pgrep -x -- "$sel")')
    elif by == "pattern":
        lines.append(f"sel={q(str(value))}")
        lines.append('cands=$(pgrep -f -- "$sel")')
    else:
        lines.append(f"cands={int(value)}")
    lines.append(
        'pids=""\n'
        'for p in $cands; do [ -d "/proc/$p" ] || continue; '
        'cl_protected "$p" && continue; pids="$pids $p"; done'
    )
    return lines


# cl_now: the host's uptime in centiseconds ("12345.67" -> 1234567; the leading 1 keeps a
# fraction such as "08" from reading as octal).
_CLOCK = "cl_now() { read -r cl_u _ < /proc/uptime; cl_t=$(( ${cl_u%.*} * 100 + 1${cl_u#*.} - 100 )); }"


def _lease_wait(fault_id: str, state_dir: str, lease_s: float, heartbeat: bool) -> str:
    """What the watchdog waits for before it reverts (see the module docstring)."""
    if not heartbeat:
        return f"sleep {lease_s:.3f}"
    ceiling = max(1, math.ceil(lease_s * 100))
    lapse = round(LAPSE_S * 100)
    return "\n".join(
        [
            *_prelude(fault_id, state_dir)[:3],
            _CLOCK,
            f"cl_now; end=$((cl_t + {ceiling}))",
            "while :; do",
            "  cl_now",
            f'  if [ "$cl_t" -ge "$end" ]; then why="its lease expired ({lease_s:g}s)"; break; fi',
            '  b=; read -r b _ 2>/dev/null < "$dir/beat"',
            '  case "$b" in *[0-9].[0-9][0-9]) ;; *) b= ;; esac',
            '  if [ -n "$b" ]; then',
            "    gap=$((cl_t - (${b%.*} * 100 + 1${b#*.} - 100)))",
            f'    if [ "$gap" -gt {lapse} ]; then why="the run stopped renewing its lease '
            '($((gap / 100)).$((gap % 100 / 10))s without a heartbeat)"; break; fi',
            # Gone: the runner reverted (its kill of this session is on its way).
            '  elif [ ! -d "$dir" ]; then exit 0; fi',
            f"  sleep {POLL_S:g}",
            "done",
            'printf \'%s\\n\' "$why" > "$base/$fid.lapsed"',
        ]
    )


def _watchdog(wait: str, revert_body: str, heartbeat: bool) -> list[str]:
    """Create the state dir (and the first beat) and start the detached watchdog BEFORE
    the change."""
    wd = f"{wait}\n{revert_body}"
    first_beat = ['read -r u _ < /proc/uptime; echo "$u" > "$dir/beat"'] if heartbeat else []
    return [
        f'mkdir -p -- "$dir" || {{ echo "cannot create $dir" >&2; exit {EXIT_FAILED}; }}',
        *first_beat,
        f"wd={q(wd)}",
        f'{ENV_MARK}="$fid:" setsid nohup sh -c "$wd" </dev/null >/dev/null 2>&1 &',
        'echo $! >> "$dir/sessions"',
        'echo "watchdog=$!"; echo "session=$!"',
    ]


def _end_fault_processes(sessions: Iterable[int]) -> str:
    # Bounded passes: a stressor may fork a worker between our scan and our kill. A
    # SIGKILLed process is usually gone within milliseconds, so the first re-scan comes
    # after 20 ms (a revert is on the guard's breach-to-clean path), later ones every 100 ms
    # (six passes: a stressor forking workers late still has 0.5 s to show them).
    known = " ".join(str(int(s)) for s in sessions)
    return (
        "n=0; pause=0.02\n"
        f'while [ $n -lt 6 ]; do ss=$(cl_sessions {known}); left=$(cl_fault_pids "$mark"); '
        '[ -z "$ss$left" ] && break; for s in $ss; do pkill -KILL -s "$s"; done; '
        '[ -n "$left" ] && kill -KILL $left 2>/dev/null; n=$((n+1)); sleep $pause; pause=0.1; done'
    )


# --- per-operation pieces ----------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class NetPlace:
    """Where a network fault applies: a host-side network namespace, or the host's own."""

    netns: str | None = None

    def helpers(self) -> str:
        ns = q(self.netns) if self.netns else "''"
        return f'ns={ns}\ninns() {{ if [ -n "$ns" ]; then ip netns exec "$ns" "$@"; else "$@"; fi; }}'


def iptables_rules(
    fault_id: str, *, port: int, protocol: str, direction: str, peer: str | None
) -> list[list[str]]:
    """The rules (chain + match) of an iptables drop; each carries the fault's comment tag."""
    rules: list[list[str]] = []
    for chain, peer_flag in (("INPUT", "-s"), ("OUTPUT", "-d")):
        if direction not in ("both", "in" if chain == "INPUT" else "out"):
            continue
        spec = [chain, "-p", protocol, "--dport", str(int(port))]
        if peer:
            spec += [peer_flag, peer]
        spec += ["-m", "comment", "--comment", f"chaoslab:{fault_id}", "-j", "DROP"]
        rules.append(spec)
    return rules


def netem_handle(fault_id: str) -> str:
    """A qdisc handle derived from the fault id, so revert deletes only its own qdisc."""
    major = int(fault_id[:4], 16) if all(c in "0123456789abcdef" for c in fault_id[:4]) else 0
    return f"{(major % 0xFFFE) + 1:x}"


def _verified(targets: Sequence[tuple[int, int]]) -> str:
    """Sets ``$them`` to those of ``targets`` (pid, start ticks) that still run as the same
    process (a recycled pid starts later): the record's own list, which survives the
    host's state directory."""
    pairs = " ".join(f"{int(p)}:{int(t)}" for p, t in targets)
    return (
        f'them=""; for pt in {pairs}; do p=${{pt%%:*}}; t=${{pt#*:}}; '
        '[ "$(cl_field "$p" 20)" = "$t" ] && them="$them $p"; done'
    )


def _undo(operation: str, data: Mapping[str, object], targets: Sequence[tuple[int, int]] = ()) -> list[str]:
    """What puts the host back, besides ending the fault's processes. ``targets``: the
    processes the record says a process fault hit (the runner's revert and recover
    know them even once the host's state directory is gone)."""
    if operation == "suspend":
        return [
            _verified(targets),
            'for p in $(cat "$dir/pids" 2>/dev/null) $them; do kill -CONT "$p" 2>/dev/null; done',
        ]
    if operation == "iptables_drop":
        lines = [NetPlace(netns=_opt_str(data.get("netns"))).helpers()]
        for rule in _rules_of(data):
            lines.append(
                "n=0; while [ $n -lt 20 ] && inns iptables -w -D "
                f"{argv_command(rule)} 2>/dev/null; do n=$((n+1)); done"
            )
        return lines
    if operation == "netem":
        handle = q(str(data.get("handle", "")))
        dev = q(str(data.get("interface", "")))
        return [
            NetPlace(netns=_opt_str(data.get("netns"))).helpers(),
            f"dev={dev}; handle={handle}",
            'if inns tc qdisc show dev "$dev" 2>/dev/null | grep -qF "qdisc netem $handle: root"; '
            'then inns tc qdisc del dev "$dev" root 2>/dev/null; fi',
        ]
    return []


def _opt_str(value: object) -> str | None:
    return str(value) if value else None


def _rules_of(data: Mapping[str, object]) -> list[list[str]]:
    rules = data.get("rules") or []
    assert isinstance(rules, list)
    return [[str(x) for x in rule] for rule in rules]


def _still_there(operation: str, data: Mapping[str, object]) -> list[str]:
    """Appends to ``$kept`` what of the change the undo could not remove (read-only)."""
    if operation == "suspend":
        return [
            'for p in $(printf "%s\\n" $(cat "$dir/pids" 2>/dev/null) $them | sort -u); do '
            '[ "$(cl_field "$p" 1)" = T ] && kept="$kept process $p is still stopped;"; done'
        ]
    if operation == "iptables_drop":
        tag = str(data.get("tag") or _comment(_rules_of(data)))
        if not tag:
            return []
        return [
            f"tag={q(tag)}",
            'inns iptables -w -S 2>/dev/null | grep -qF -- "$tag" && kept="$kept an iptables rule $tag;"',
        ]
    if operation == "netem":
        return [
            'inns tc qdisc show dev "$dev" 2>/dev/null | grep -qF "qdisc netem $handle:" && '
            'kept="$kept the netem qdisc $handle: on $dev;"'
        ]
    return []


def _comment(rules: Sequence[Sequence[str]]) -> str:
    """The comment tag the rules carry (``--comment chaoslab:<fault id>``), or ''."""
    for rule in rules:
        for flag, value in zip(rule, rule[1:], strict=False):
            if flag == "--comment":
                return str(value)
    return ""


def _pauses() -> str:
    """The watchdog's waits between tries of an end that did not hold: ``RETRY_S``
    doubling up to ``RETRY_MAX_S``, for ``RETRY_FOR_S`` in all (the local watchdog's)."""
    pauses: list[str] = []
    total, pause = 0.0, RETRY_S
    while total + pause <= RETRY_FOR_S:
        pauses.append(f"{pause:g}")
        total += pause
        pause = min(pause * 2, RETRY_MAX_S)
    return " ".join(pauses)


def revert_body(
    operation: str,
    fault_id: str,
    state_dir: str,
    data: Mapping[str, object],
    sessions: Iterable[int] = (),
    *,
    report_lapse: bool = True,
    targets: Sequence[tuple[int, int]] = (),
) -> str:
    """Undo the fault, end its processes, drop its state dir. Idempotent; exits 0.

    ``report_lapse`` (the runner's revert, not the watchdog's own): print the reason a
    watchdog left (``lapsed=...``) and remove it, once the watchdog is gone, so no lapse
    goes unreported and none is left behind. The runner's revert also checks that the
    undo held before it ends the watchdog: if the change is still there (a co-tenant
    stopped the process again, a rule came back), it prints ``kept=...`` and leaves the
    watchdog and the state directory in place -- a failed revert keeps its lease. The
    watchdog's own end tries again while the change is still there (as the local
    watchdog does: ``watchdog.RETRY_S`` backing off, for ``RETRY_FOR_S``), until the
    change is gone or someone else (the runner, ``recover``) took the fault over.
    ``targets``: the (pid, start ticks) the record says a process fault hit."""
    undo = _undo(operation, data, targets)
    check = ['kept=""', *_still_there(operation, data)]
    if report_lapse:
        keep = [*check, 'if [ -n "$kept" ]; then echo "kept=$kept"; exit 0; fi']
    else:
        keep = [
            *check,
            f"for cl_w in {_pauses()}; do",
            '  [ -n "$kept" ] && [ -d "$dir" ] || break',
            '  sleep "$cl_w"',
            *(f"  {line}" for line in "\n".join([*undo, *check]).splitlines()),
            "done",
        ]
    report = (
        [
            'if [ -f "$base/$fid.lapsed" ]; then r=; read -r r < "$base/$fid.lapsed"; '
            'echo "lapsed=$r"; rm -f -- "$base/$fid.lapsed"; fi'
        ]
        if report_lapse
        else []
    )
    return "\n".join(
        [
            *_prelude(fault_id, state_dir),
            *undo,
            *keep,
            _end_fault_processes(sessions),
            # A renewal racing the removal may write one more beat into the directory.
            'n=0; while [ -e "$dir" ] && [ $n -lt 5 ]; do rm -rf -- "$dir"; n=$((n+1)); done',
            *report,
            'rmdir -- "$base" 2>/dev/null',
            "exit 0",
        ]
    )


def renew_script(fault_id: str, state_dir: str) -> str:
    """One heartbeat: the host's uptime into the fault's beat file (``renewed=1``), or
    the reason its watchdog already ended it (``lapsed=...``). Writes nothing for a
    fault that is not (or no longer) on the host."""
    return "\n".join(
        [
            *_prelude(fault_id, state_dir)[:3],
            'if [ -f "$base/$fid.lapsed" ]; then r=; read -r r < "$base/$fid.lapsed"; echo "lapsed=$r"',
            'elif [ -d "$dir" ]; then read -r u _ < /proc/uptime; '
            'echo "$u" 2>/dev/null > "$dir/beat" && echo "renewed=1"; fi',
            "exit 0",
        ]
    )


# --- the scripts the driver runs ---------------------------------------------------------


def count_script(by: Selector, value: str | int) -> str:
    return "\n".join(["fid=none", _HELPERS, *_match(by, value), 'set -- $pids; echo "count=$#"'])


def resolve_script(selector: tuple[Selector, str | int] | None = None) -> str:
    """Read-only: who the host is (``node=`` its name, ``btime=`` its boot time, ``tck=``
    clock ticks a second) and, given a selector, every matching unprotected process as
    ``proc=PID START_TICKS`` (field 22 of /proc/PID/stat: pid + start time is the
    process's identity; a recycled pid starts later)."""
    lines = [
        "fid=none",
        _HELPERS,
        'node=; read -r node < /proc/sys/kernel/hostname 2>/dev/null || node=$(uname -n); echo "node=$node"',
        'while read -r k v; do [ "$k" = btime ] && { echo "btime=$v"; break; }; done < /proc/stat',
        'echo "tck=$(getconf CLK_TCK 2>/dev/null || echo 100)"',
    ]
    if selector is not None:
        lines += [*_match(*selector), 'for p in $pids; do echo "proc=$p $(cl_field "$p" 20)"; done']
    return "\n".join(lines)


def _resolved(targets: Sequence[tuple[int, int]]) -> list[str]:
    """Sets ``$pids`` to those of ``targets`` (pid, start ticks) that still run as the same
    process and are not protected; none: exit 3 (nothing changed)."""
    pairs = " ".join(f"{int(p)}:{int(t)}" for p, t in targets)
    return [
        _PROCESS_HELPERS,
        'pids=""',
        f"for pt in {pairs}; do p=${{pt%%:*}}; t=${{pt#*:}}; "
        '[ "$(cl_field "$p" 20)" = "$t" ] || continue; cl_protected "$p" && continue; pids="$pids $p"; done',
        'if [ -z "$pids" ]; then echo "none of the processes resolved before the fault still runs '
        f'(nothing was changed)" >&2; exit {EXIT_NOT_FOUND}; fi',
    ]


def kill_script(fault_id: str, state_dir: str, targets: Sequence[tuple[int, int]], signal: str) -> str:
    """No lease: a killed process cannot be un-killed. Nothing is left on the host.
    ``targets``: the (pid, start ticks) resolved before the fault; only those are hit."""
    return "\n".join(
        [
            *_prelude(fault_id, state_dir),
            *_resolved(targets),
            'echo "pids=$pids"',
            f"kill -s {q(signal)} $pids",
        ]
    )


def suspend_script(
    fault_id: str,
    state_dir: str,
    targets: Sequence[tuple[int, int]],
    lease_s: float,
    *,
    heartbeat: bool = False,
) -> str:
    """SIGSTOP the (pid, start ticks) resolved before the fault, under a watchdog."""
    body = revert_body("suspend", fault_id, state_dir, {}, report_lapse=False, targets=targets)
    wait = _lease_wait(fault_id, state_dir, lease_s, heartbeat)
    return "\n".join(
        [
            *_prelude(fault_id, state_dir),
            *_resolved(targets),
            *_watchdog_with_pids(wait, body, heartbeat),
            "kill -STOP $pids",
            # A signal is delivered when its process is next scheduled: report the fault
            # once each process shows as stopped (or is gone), within 2 s, as the local
            # process driver does.
            'for p in $pids; do n=0; while [ $n -lt 100 ]; do st=$(cl_field "$p" 1); '
            '[ -z "$st" ] || [ "$st" = T ] && break; sleep 0.02 2>/dev/null || break; '
            "n=$((n+1)); done; done",
            'echo "pids=$pids"',
        ]
    )


def _watchdog_with_pids(wait: str, body: str, heartbeat: bool) -> list[str]:
    # The pid list must be on disk before the watchdog can need it.
    first, *rest = _watchdog(wait, body, heartbeat)
    return [first, "printf '%s\\n' $pids > \"$dir/pids\"", *rest]


def stress_script(
    fault_id: str,
    state_dir: str,
    *,
    workers: int | None,
    load: int,
    lease_s: float,
    backend: str,
    heartbeat: bool = False,
) -> str:
    body = revert_body("stress_cpu", fault_id, state_dir, {}, report_lapse=False)
    wait = _lease_wait(fault_id, state_dir, lease_s, heartbeat)
    secs = max(1, math.ceil(lease_s))
    return "\n".join(
        [
            *_prelude(fault_id, state_dir),
            f"load={int(load)}; secs={secs}; want={q(backend)}",
            f"workers={int(workers) if workers else 0}",
            '[ "$workers" -gt 0 ] || workers=$(nproc 2>/dev/null || echo 1)',
            'use=shell; if [ "$want" != shell ] && command -v stress-ng >/dev/null 2>&1; '
            "then use=stress-ng; fi",
            'if [ "$want" = stress-ng ] && [ "$use" != stress-ng ]; then '
            f'echo "stress-ng is not installed on this host" >&2; exit {EXIT_UNSUPPORTED}; fi',
            'if [ "$use" = shell ] && [ "$load" -ne 100 ]; then echo "the shell backend only '
            'runs at 100% load; install stress-ng on the host for partial load" >&2; '
            f"exit {EXIT_UNSUPPORTED}; fi",
            *_watchdog(wait, body, heartbeat),
            'if [ "$use" = stress-ng ]; then',
            f'  {ENV_MARK}="$fid:" setsid nohup stress-ng --cpu "$workers" --cpu-load "$load" '
            '--timeout "${secs}s" </dev/null >/dev/null 2>&1 &',
            '  echo $! >> "$dir/sessions"; echo "session=$!"',
            "else",
            '  i=0; while [ $i -lt "$workers" ]; do',
            f'    {ENV_MARK}="$fid:" setsid nohup timeout "$secs" sh -c "while :; do :; done" '
            "</dev/null >/dev/null 2>&1 &",
            '    echo $! >> "$dir/sessions"; echo "session=$!"',
            "    i=$((i+1)); done",
            "fi",
            'echo "backend=$use"; echo "workers=$workers"',
        ]
    )


def iptables_script(
    fault_id: str,
    state_dir: str,
    *,
    rules: Sequence[Sequence[str]],
    netns: str | None,
    lease_s: float,
    heartbeat: bool = False,
) -> str:
    data = {"rules": [list(r) for r in rules], "netns": netns}
    body = revert_body("iptables_drop", fault_id, state_dir, data, report_lapse=False)
    wait = _lease_wait(fault_id, state_dir, lease_s, heartbeat)
    lines = [
        *_prelude(fault_id, state_dir),
        NetPlace(netns=netns).helpers(),
        "command -v iptables >/dev/null 2>&1 || "
        f"{{ echo 'iptables is not installed on this host' >&2; exit {EXIT_UNSUPPORTED}; }}",
        'if [ -n "$ns" ] && ! ip netns exec "$ns" true 2>/dev/null; then '
        f'echo "no network namespace $ns" >&2; exit {EXIT_FAILED}; fi',
        f"revert={q(body)}",
        *_watchdog(wait, body, heartbeat),
    ]
    for rule in rules:
        chain, *spec = rule
        lines.append(
            f"if ! out=$(inns iptables -w -I {argv_command([chain, *spec])} 2>&1); then "
            f'sh -c "$revert" >/dev/null 2>&1; echo "iptables: $out" >&2; exit {EXIT_FAILED}; fi'
        )
    lines.append('echo "rules=ok"')
    return "\n".join(lines)


def netem_script(
    fault_id: str,
    state_dir: str,
    *,
    interface: str,
    netns: str | None,
    netem_args: Sequence[str],
    handle: str,
    lease_s: float,
    heartbeat: bool = False,
) -> str:
    data = {"interface": interface, "netns": netns, "handle": handle}
    body = revert_body("netem", fault_id, state_dir, data, report_lapse=False)
    wait = _lease_wait(fault_id, state_dir, lease_s, heartbeat)
    return "\n".join(
        [
            *_prelude(fault_id, state_dir),
            NetPlace(netns=netns).helpers(),
            f"dev={q(interface)}; handle={q(handle)}",
            "command -v tc >/dev/null 2>&1 || "
            f"{{ echo 'tc (iproute2) is not installed on this host' >&2; exit {EXIT_UNSUPPORTED}; }}",
            'inns ip link show dev "$dev" >/dev/null 2>&1 || '
            f'{{ echo "no network interface $dev" >&2; exit {EXIT_FAILED}; }}',
            f"revert={q(body)}",
            *_watchdog(wait, body, heartbeat),
            'if ! out=$(inns tc qdisc add dev "$dev" root handle "$handle:" '
            f"netem {argv_command(netem_args)} 2>&1); then",
            '  sh -c "$revert" >/dev/null 2>&1',
            '  case "$out" in *"qdisc kind is unknown"*|*"Unknown qdisc"*|*"No such file"*)',
            '    echo "the kernel of this host has no netem qdisc (sch_netem): $out" >&2; '
            f"exit {EXIT_UNSUPPORTED};;",
            f'  *) echo "tc: $out" >&2; exit {EXIT_FAILED};; esac',
            "fi",
            'echo "qdisc=ok"',
        ]
    )


def check_script(
    operation: str,
    fault_id: str,
    state_dir: str,
    data: Mapping[str, object],
    *,
    stopped_pids: Iterable[int] = (),
    sessions: Iterable[int] = (),
) -> str:
    """Read-only: prints one ``residue=...`` line per thing of the fault still present."""
    known = " ".join(str(int(s)) for s in sessions)
    lines = [
        *_prelude(fault_id, state_dir),
        f"for s in $(cl_sessions {known}); do "
        'echo "residue=session $s of this fault still has processes: '
        "$(pgrep -s \"$s\" | tr '\\n' ' ')\"; done",
        'for p in $(cl_fault_pids "$mark"); do '
        "echo \"residue=process $p ($(tr '\\0\\n' '  ' < /proc/$p/cmdline 2>/dev/null | cut -c1-60)) "
        'of this fault still runs"; done',
        '[ -e "$dir" ] && echo "residue=state directory $dir remains"',
    ]
    if operation == "suspend":
        pids = " ".join(str(int(p)) for p in stopped_pids)
        lines.append(
            f'for p in $(printf "%s\\n" {pids} $(cat "$dir/pids" 2>/dev/null) | sort -u); do '
            '[ "$(cl_field "$p" 1)" = T ] && echo "residue=process $p is still stopped"; done'
        )
    elif operation == "iptables_drop":
        lines.append(NetPlace(netns=_opt_str(data.get("netns"))).helpers())
        lines.append(f"tag={q(str(data.get('tag', '')))}")
        lines.append(
            'inns iptables -w -S 2>/dev/null | grep -F -- "$tag" | '
            'while read -r r; do echo "residue=iptables rule $r"; done'
        )
    elif operation == "netem":
        lines.append(NetPlace(netns=_opt_str(data.get("netns"))).helpers())
        lines.append(f"dev={q(str(data.get('interface', '')))}; handle={q(str(data.get('handle', '')))}")
        lines.append(
            'inns tc qdisc show dev "$dev" 2>/dev/null | grep -F "qdisc netem $handle:" | '
            'while read -r r; do echo "residue=$r"; done'
        )
    lines.append("exit 0")
    return "\n".join(lines)


def parse_kv(stdout: str) -> dict[str, list[str]]:
    """``key=value`` lines → {key: [values...]} (other lines are ignored)."""
    out: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.isidentifier():
            out.setdefault(key, []).append(value)
    return out
