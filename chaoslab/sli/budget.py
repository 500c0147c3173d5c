"""Error budgets and burn rates, and which multi-window alert pair would fire now.

Definitions (SRE Workbook, ch. 5):

- error budget = ``1 − target`` of the events (or time slices) in the SLO window;
- budget remaining = ``1 − bad / ((1 − target) · total)`` (negative once overspent);
- burn rate over a window ``w`` = error ratio over ``w`` / ``(1 − target)``: 1 spends
  the budget exactly over the SLO window.

The workbook's alert pairs, as Sloth writes them: each pair spends a share of the budget
in its long window (page 2 % in 1 h with a 5 m short window, page 5 % in 6 h / 30 m,
ticket 10 % in 1 d / 2 h, ticket 10 % in 3 d / 6 h), and its burn-rate factor follows
from that share, the SLO period and the long window, as in Sloth:
``factor = share × period / long window`` (14.4, 6, 3 and 1 for 30 days; 13.44, 5.6,
2.8 and 0.93 for 28 days).

Windows: for 30- and 28-day SLOs the workbook's own (Sloth's built-in windows). For any
other period Sloth needs a hand-written windows file; chaoslab reads the same files
(``chaoslab.sli.alertwindows``, the ``custom`` argument) and without one scales the windows with
the period (``w · period / 30 d``, whole seconds) so each pair keeps its budget share,
then widens every window shorter than four scrape intervals to four: ``rate`` over fewer
scrapes is empty or noise, so a page on it could never fire. A widened long window gets
the lower factor that keeps its budget share. ``widened_windows`` says what was widened.
The scrape interval defaults to Prometheus's own default, 1 m.

A pair fires when both its windows burn faster than its factor. ``chaoslab slo rules``
emits exactly these pairs, so status and the generated alerts agree.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chaoslab.model.openslo import SLODefinition
from chaoslab.sli.alertwindows import AlertWindows
from chaoslab.sli.prometheus import EventCounts, PrometheusSLI, prom_duration

BASE_WINDOW_S = 30 * 86400.0
DEFAULT_SCRAPE_INTERVAL_S = 60.0  # Prometheus's global scrape_interval default
MIN_SCRAPES = 4  # a window must hold this many scrapes
# The SLO periods Sloth ships windows for: the workbook's windows unscaled.
SLOTH_PERIODS_S = (30 * 86400.0, 28 * 86400.0)
# The windows `slo status` reports, named for a 30-day SLO (2h is the ticket pair's short one).
BURN_WINDOWS: tuple[tuple[str, float], ...] = (
    ("5m", 300.0),
    ("30m", 1800.0),
    ("1h", 3600.0),
    ("2h", 7200.0),
    ("6h", 21600.0),
    ("1d", 86400.0),
    ("3d", 259200.0),
)


@dataclass(frozen=True, kw_only=True)
class AlertPair:
    """One multi-window burn-rate condition, with windows already chosen for the SLO."""

    severity: str  # page | ticket
    budget_share: float  # of the whole budget, spent in the long window at exactly ``factor``
    long_name: str  # nominal (30-day) names: "1h", "5m"
    short_name: str
    long_s: float
    short_s: float
    period_s: float

    @property
    def name(self) -> str:
        return f"{self.severity} {self.long_name}/{self.short_name}"

    @property
    def speed(self) -> str:
        """Sloth's name for the pair within its severity: quick (shorter) or slow."""
        return "quick" if self.long_name in ("1h", "1d") else "slow"

    @property
    def factor(self) -> float:
        """Burn-rate threshold: ``budget_share × period / long window`` (Sloth's formula)."""
        return round(self.budget_share * self.period_s / self.long_s, 6)


def _nominal(name: str) -> float:
    return dict(BURN_WINDOWS)[name]


# (severity, share of the budget spent in the long window, long, short): the workbook's.
_PAIRS = (
    ("page", 0.02, "1h", "5m"),
    ("page", 0.05, "6h", "30m"),
    ("ticket", 0.10, "1d", "2h"),
    ("ticket", 0.10, "3d", "6h"),
)


def scale(window_s: float) -> float:
    """How much the SLO window stretches the workbook's 30-day windows (1 for Sloth's periods)."""
    return 1.0 if window_s in SLOTH_PERIODS_S else window_s / BASE_WINDOW_S


CustomWindows = Mapping[float, "AlertWindows"]  # SLO period (s) → windows from a Sloth file
_SPEEDS = ("quick", "slow", "quick", "slow")  # of _PAIRS, in order


def _custom(window_s: float, custom: CustomWindows | None) -> AlertWindows | None:
    return custom.get(window_s) if custom else None


def _scaled(window_s: float, custom: CustomWindows | None = None) -> dict[str, float]:
    aw = _custom(window_s, custom)
    if aw is not None:  # named after the workbook's windows they stand for
        w = aw.windows
        pq, ps, tq, ts = (w[(sev, sp)] for (sev, *_), sp in zip(_PAIRS, _SPEEDS, strict=True))
        return {"5m": pq[2], "30m": ps[2], "1h": pq[1], "2h": tq[2], "6h": ps[1], "1d": tq[1], "3d": ts[1]}
    k = scale(window_s)
    return {name: float(max(1, round(s * k))) for name, s in BURN_WINDOWS}


def burn_windows(
    window_s: float, scrape_interval_s: float = DEFAULT_SCRAPE_INTERVAL_S, custom: CustomWindows | None = None
) -> tuple[tuple[str, float], ...]:
    """``(nominal name, seconds)`` for each window: scaled, then at least four scrapes long."""
    floor = MIN_SCRAPES * scrape_interval_s
    return tuple((name, max(s, floor)) for name, s in _scaled(window_s, custom).items())


def widened_windows(
    window_s: float, scrape_interval_s: float = DEFAULT_SCRAPE_INTERVAL_S, custom: CustomWindows | None = None
) -> tuple[str, ...]:
    """One line per window that four scrapes made longer than the period's scaling asked for."""
    floor = MIN_SCRAPES * scrape_interval_s
    aw = _custom(window_s, custom)
    seconds = dict(_scaled(window_s, custom))
    if aw is not None:
        seconds["6h (ticket)"] = aw.windows[("ticket", "slow")][2]

    def origin(seconds: float) -> str:
        if aw is not None:
            return f"{prom_duration(seconds)} in {aw.source}"
        return f"scaled to {prom_duration(seconds)} for a {prom_duration(window_s)} SLO"

    return tuple(
        f"the {name} window ({origin(s)}) is shorter than {MIN_SCRAPES} scrapes at "
        f"{prom_duration(scrape_interval_s)}: widened to {prom_duration(floor)}"
        for name, s in seconds.items()
        if s < floor
    )


def alert_pairs(
    window_s: float, scrape_interval_s: float = DEFAULT_SCRAPE_INTERVAL_S, custom: CustomWindows | None = None
) -> tuple[AlertPair, ...]:
    floor = MIN_SCRAPES * scrape_interval_s
    aw = _custom(window_s, custom)
    windows = dict(burn_windows(window_s, scrape_interval_s, custom))
    out = []
    for (sev, share, long, short), speed in zip(_PAIRS, _SPEEDS, strict=True):
        if aw is not None:
            share, long_s, short_s = aw.windows[(sev, speed)]
            long_s, short_s = max(long_s, floor), max(short_s, floor)
        else:
            long_s, short_s = windows[long], windows[short]
        out.append(
            AlertPair(
                severity=sev,
                budget_share=share,
                long_name=long,
                short_name=short,
                long_s=long_s,
                short_s=short_s,
                period_s=window_s,
            )
        )
    return tuple(out)


@dataclass(frozen=True, kw_only=True)
class BudgetStatus:
    """One SLO's budget at ``evaluated_at``. All fields JSON-able through ``to_dict``."""

    slo: str
    target: float
    window_s: float
    window_start: float
    evaluated_at: float
    counts: EventCounts
    burn: Mapping[str, float | None]  # nominal window name → burn rate (None: no traffic)
    burn_windows_s: Mapping[str, float]
    firing: tuple[str, ...]  # names of the alert pairs that fire now
    pairs: tuple[AlertPair, ...] = field(default_factory=tuple)
    window_assumed: bool = False  # the SLO file gives no timeWindow: the default window is used

    @property
    def sli(self) -> float | None:
        return self.counts.ratio

    @property
    def budget_events(self) -> float:
        """Bad events (or slices) the window allows."""
        return (1.0 - self.target) * self.counts.total

    @property
    def budget_consumed(self) -> float:
        """Share of the budget spent: bad / allowed (0 with no traffic)."""
        allowed = self.budget_events
        if allowed <= 0:
            return 0.0 if self.counts.bad == 0 else math.inf
        return self.counts.bad / allowed

    @property
    def budget_remaining(self) -> float:
        return 1.0 - self.budget_consumed

    @property
    def remaining_events(self) -> float:
        return max(0.0, self.budget_events - self.counts.bad)

    @property
    def exhausted(self) -> bool:
        # Relative tolerance: (1 − 0.999) · 10000 is 10.000000000000009 in floating point.
        return self.counts.total > 0 and self.counts.bad >= self.budget_events * (1 - 1e-9)

    @property
    def page_firing(self) -> tuple[str, ...]:
        return tuple(f for f in self.firing if f.startswith("page"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "slo": self.slo,
            "target": self.target,
            "window": prom_duration(self.window_s),
            "window_start": self.window_start,
            "evaluated_at": self.evaluated_at,
            "unit": self.counts.unit,
            "good": self.counts.good,
            "bad": self.counts.bad,
            "total": self.counts.total,
            "sli": self.sli,
            "budget_events": self.budget_events,
            "budget_consumed": _finite(self.budget_consumed),
            "budget_remaining": _finite(self.budget_remaining),
            "exhausted": self.exhausted,
            "burn": {k: v for k, v in self.burn.items()},
            "burn_windows": {k: prom_duration(v) for k, v in self.burn_windows_s.items()},
            "firing": list(self.firing),
            "window_assumed": self.window_assumed,
        }


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def burn_rate(counts: EventCounts, target: float) -> float | None:
    ratio = counts.error_ratio
    return None if ratio is None else ratio / (1.0 - target)


def budget_status(
    sli: PrometheusSLI,
    at: float | None = None,
    scrape_interval_s: float = DEFAULT_SCRAPE_INTERVAL_S,
    custom: CustomWindows | None = None,
) -> BudgetStatus:
    """Budget, burn rates and firing pairs of ``sli.slo`` at ``at`` (default now).

    Raises SLIError when the data is missing or stale (never reports a healthy budget
    from nothing).
    """
    now = time.time() if at is None else at
    slo: SLODefinition = sli.slo
    sli.freshness(now)
    start, end = slo.window.bounds(now)
    counts = sli.budget_counts(max(end - start, 1.0), end)
    windows = burn_windows(slo.window.seconds, scrape_interval_s, custom)
    pairs = alert_pairs(slo.window.seconds, scrape_interval_s, custom)
    # Burn per distinct window length: a pair's windows need not have a name of their own.
    lengths = dict.fromkeys([s for _, s in windows] + [s for p in pairs for s in (p.long_s, p.short_s)])
    by_length = {s: burn_rate(sli.budget_counts(s, now), slo.target) for s in lengths}
    burn: dict[str, float | None] = {name: by_length[s] for name, s in windows}
    firing = tuple(p.name for p in pairs if _fires(by_length[p.long_s], by_length[p.short_s], p.factor))
    return BudgetStatus(
        slo=slo.name,
        target=slo.target,
        window_s=end - start,
        window_start=start,
        evaluated_at=now,
        counts=counts,
        burn=burn,
        burn_windows_s=dict(windows),
        firing=firing,
        pairs=pairs,
        window_assumed=not slo.window_declared,
    )


def _fires(long: float | None, short: float | None, factor: float) -> bool:
    return long is not None and short is not None and long > factor and short > factor


def format_statuses(statuses: Sequence[BudgetStatus]) -> str:
    """Plain text for ``chaoslab slo status``."""
    blocks = []
    for st in statuses:
        sli = "-" if st.sli is None else f"{st.sli * 100:.3f}%"
        remaining = st.budget_remaining
        rem = "-" if not math.isfinite(remaining) else f"{remaining * 100:.1f}%"
        state = "EXHAUSTED" if st.exhausted else ("ok" if st.counts.total else "no traffic")
        lines = [
            f"{st.slo}: target {st.target * 100:g}% over {prom_duration(st.window_s)}"
            + (" (no timeWindow in the file: assumed)" if st.window_assumed else "")
            + "  "
            f"SLI {sli}  budget remaining {rem} ({state})",
            f"  {st.counts.unit}: {st.counts.total:.0f} total, {st.counts.bad:.0f} bad, "
            f"{st.budget_events:.1f} allowed",
        ]
        cells = []
        for name, secs in st.burn_windows_s.items():
            b = st.burn.get(name)
            label = name if math.isclose(secs, _nominal(name)) else f"{name}≈{prom_duration(secs)}"
            cells.append(f"{label}: {'-' if b is None else f'{b:.2f}x'}")
        lines.append("  burn " + "  ".join(cells))
        lines.append(
            "  firing: "
            + (", ".join(st.firing) if st.firing else "none")
            + f"  (pairs: {', '.join(f'{p.name} > {p.factor:g}x' for p in st.pairs)})"
        )
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
