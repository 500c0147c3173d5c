"""Prometheus as an SLI source: the HTTP API client, SLO queries, and an ``SLISource``.

- ``PrometheusClient``: instant and range queries (``/api/v1/query``,
  ``/api/v1/query_range``, chunked under Prometheus' 11,000-points limit) and label
  values, over httpx. Transport and API errors become ``SLIError`` naming the query.
- ``PrometheusSLI``: the questions an SLO asks of Prometheus — good/bad/total events
  over a window (``sum(increase(<selector>[w]))``), good/total time slices
  (Timeslices budgeting), freshness, and for latency SLIs the histogram bucket at the
  threshold.
- ``PrometheusSource``: the ``SLISource`` an experiment's ``slo:`` objectives read
  (``counts`` from counter increases, ``latencies`` from ``le`` buckets, ``series`` from
  a 1 s range query).

Honesty rules: a query that returns nothing is an ``SLIError`` ("no data"), never a
0 that looks like a perfect SLI; series that existed in the window but have no fresh
sample now (a target that stopped being scraped gets staleness markers) are "stale",
also an error. A latency threshold with no bucket boundary at exactly T is an error
listing the boundaries that exist: ``le="0.12"`` would silently match nothing.

Query conventions (see ``chaoslab.model.openslo``): with ``counter: true`` a query is a
series selector of counters; a query containing ``{{.window}}`` is sloth's convention —
a per-second rate expression, used as written with the window substituted (events =
rate × window); ``counter: false`` selects per-scrape event counts, summed over time.

Hand-written rather than with a Prometheus client library: the Python ones
(prometheus-api-client) pull pandas/matplotlib for what is two GET endpoints here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from chaoslab.errors import SLIError
from chaoslab.model.openslo import WINDOW_PLACEHOLDER, Budgeting, MetricSource, SLODefinition
from chaoslab.sli.base import Counts, LatencyView, SecondStats, SLISource

MAX_POINTS = 10_000  # Prometheus refuses range queries of more than 11,000 points per series
DEFAULT_STALENESS_S = 120.0


def prom_duration(seconds: float) -> str:
    """``90`` → ``"1m30s"``; whole seconds (at least 1 s), largest units first."""
    s = max(1, round(seconds))
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if s >= size:
            out += f"{s // size}{unit}"
            s %= size
    return out


@dataclass(frozen=True, kw_only=True)
class Sample:
    labels: Mapping[str, str]
    value: float
    ts: float


@dataclass(frozen=True, kw_only=True)
class RangeSeries:
    labels: Mapping[str, str]
    points: tuple[tuple[float, float], ...]  # (ts, value), oldest first


class PrometheusClient:
    """The Prometheus HTTP API. Use as a context manager to reuse one connection.

    Outside ``with`` every call opens and closes its own connection, so a forgotten
    client never leaks a socket.
    """

    def __init__(self, url: str, *, timeout_s: float = 10.0, transport: httpx.BaseTransport | None = None):
        if not url.startswith(("http://", "https://")):
            raise SLIError(f"expected the Prometheus URL (http://host:9090), got {url!r}")
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._transport = transport
        self._client: httpx.Client | None = None

    def __enter__(self) -> PrometheusClient:
        self._client = self._new()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _new(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=self.timeout_s, transport=self._transport)

    def _get(self, path: str, params: Mapping[str, Any] | Sequence[tuple[str, Any]], what: str) -> Any:
        try:
            if self._client is not None:
                resp = self._client.get(path, params=params)  # type: ignore[arg-type]
            else:
                with self._new() as client:
                    resp = client.get(path, params=params)  # type: ignore[arg-type]
        except httpx.HTTPError as exc:
            raise SLIError(f"cannot reach Prometheus at {self.url}: {exc} (while asking {what})") from exc
        try:
            body = resp.json()
        except ValueError as exc:
            raise SLIError(
                f"Prometheus at {self.url} answered HTTP {resp.status_code} without JSON to {what}"
            ) from exc
        if body.get("status") != "success":
            raise SLIError(
                f"Prometheus rejected {what}: {body.get('errorType', 'error')}: {body.get('error', body)}"
            )
        return body.get("data")

    def instant(self, query: str, at: float | None = None) -> list[Sample]:
        """``/api/v1/query`` at ``at`` (default: now). Vector and scalar results."""
        params: dict[str, Any] = {"query": query}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self._get("/api/v1/query", params, f"the query {query!r}")
        kind, result = data.get("resultType"), data.get("result")
        if kind == "scalar":
            return [Sample(labels={}, ts=float(result[0]), value=float(result[1]))]
        if kind != "vector":
            raise SLIError(f"expected an instant vector from {query!r}, got a {kind}")
        return [
            Sample(labels=r.get("metric", {}), ts=float(r["value"][0]), value=float(r["value"][1]))
            for r in result
        ]

    def scalar(self, query: str, at: float | None = None) -> float | None:
        """The single value of ``query``; None when it returns nothing."""
        samples = self.instant(query, at)
        if len(samples) > 1:
            raise SLIError(f"expected one series from {query!r}, got {len(samples)}: aggregate it with sum()")
        return samples[0].value if samples else None

    def range(self, query: str, start: float, end: float, step_s: float) -> list[RangeSeries]:
        """``/api/v1/query_range``, in chunks of at most ``MAX_POINTS`` steps, merged."""
        if step_s <= 0 or end < start:
            raise ValueError("need step > 0 and end >= start")
        merged: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
        labels_of: dict[tuple[tuple[str, str], ...], Mapping[str, str]] = {}
        t = start
        while t <= end:
            chunk_end = min(end, t + step_s * (MAX_POINTS - 1))
            params = {"query": query, "start": f"{t:.3f}", "end": f"{chunk_end:.3f}", "step": f"{step_s:g}"}
            data = self._get("/api/v1/query_range", params, f"the range query {query!r}")
            for r in data.get("result", []):
                key = tuple(sorted(r.get("metric", {}).items()))
                labels_of[key] = r.get("metric", {})
                merged.setdefault(key, []).extend((float(ts), float(v)) for ts, v in r.get("values", []))
            t = chunk_end + step_s
        return [RangeSeries(labels=labels_of[k], points=tuple(sorted(pts))) for k, pts in merged.items()]

    def label_values(
        self, label: str, match: str, start: float | None = None, end: float | None = None
    ) -> list[str]:
        params: list[tuple[str, Any]] = [("match[]", match)]
        if start is not None:
            params.append(("start", f"{start:.3f}"))
        if end is not None:
            params.append(("end", f"{end:.3f}"))
        data = self._get(f"/api/v1/label/{label}/values", params, f"the {label} values of {match}")
        return [str(v) for v in data or []]


@dataclass(frozen=True, kw_only=True)
class EventCounts:
    """Good and total events (or time slices) in a window; ``bad = total − good``."""

    good: float
    total: float
    unit: str = "events"  # events | slices

    @property
    def bad(self) -> float:
        return max(0.0, self.total - self.good)

    @property
    def ratio(self) -> float | None:
        return self.good / self.total if self.total > 0 else None

    @property
    def error_ratio(self) -> float | None:
        return self.bad / self.total if self.total > 0 else None


@dataclass(frozen=True, kw_only=True)
class Freshness:
    newest: float | None  # Unix time of the newest sample, None if unknown (an expression)
    series: int


def is_selector(query: str) -> bool:
    """A plain series selector (``name{...}`` or ``{...}``): what ``[w]`` may follow."""
    q = query.strip()
    if WINDOW_PLACEHOLDER.search(q):
        return False
    head = q.split("{", 1)[0]
    return (q.endswith("}") or "{" not in q) and all(c.isalnum() or c in "_:" for c in head)


class PrometheusSLI:
    """SLO questions for one ``SLODefinition``, answered by one Prometheus.

    Invariant: every method either returns numbers backed by samples or raises
    ``SLIError``; "no series" is never reported as zero events.
    """

    def __init__(
        self,
        client: PrometheusClient,
        slo: SLODefinition,
        *,
        max_staleness_s: float = DEFAULT_STALENESS_S,
    ) -> None:
        self.client = client
        self.slo = slo
        self.max_staleness_s = max_staleness_s
        self._le: str | None = None

    # -- latency buckets ----------------------------------------------------------------------

    def bucket_le(self, at: float | None = None) -> str | None:
        """The exact ``le`` label of the bucket at the latency threshold (None: not latency).

        Raises SLIError naming the boundaries that exist when none equals the threshold.
        """
        lat = self.slo.indicator.latency
        if lat is None:
            return None
        if self._le is not None:
            return self._le
        now = time.time() if at is None else at
        match = f"{lat.metric}_bucket{{{lat.matchers}}}"
        values = self.client.label_values("le", match, start=now - self.slo.window.seconds, end=now)
        bounds: list[tuple[float, str]] = []
        for v in values:
            try:
                bounds.append((float(v), v))
            except ValueError:
                continue
        if not bounds:
            raise SLIError(
                f"SLO {self.slo.name!r}: no data for {match} in the last "
                f"{prom_duration(self.slo.window.seconds)} (is the histogram exported and scraped?)"
            )
        bounds.sort()
        t = lat.threshold_s
        for value, text in bounds:
            if math.isclose(value, t, rel_tol=1e-9, abs_tol=1e-12):
                self._le = text
                return text
        finite = [v for v, _ in bounds if math.isfinite(v)]
        below = max((v for v in finite if v < t), default=None)
        above = min((v for v in finite if v > t), default=None)
        near = " or ".join(f"{v:g}s" for v in (below, above) if v is not None)
        raise SLIError(
            f"SLO {self.slo.name!r}: {lat.metric} has no histogram bucket boundary at {t:g}s, so "
            f"'fraction of requests ≤ {t:g}s' cannot be measured (Prometheus would silently return "
            f'nothing for le="{t:g}"). Boundaries: {", ".join(t_ for _, t_ in bounds)}. '
            f"Use a threshold on a boundary ({near}) or add a bucket at {t:g}s to the histogram."
        )

    def _queries(self, at: float | None) -> tuple[MetricSource | None, MetricSource | None, MetricSource]:
        """(good, bad, total) with the latency bucket resolved to its exact ``le`` text."""
        ratio = self.slo.indicator.ratio
        if ratio is None or ratio.total is None:
            raise SLIError(
                f"SLO {self.slo.name!r}: only good/bad/total ratio metrics are read as events "
                "(thresholdMetric is read per time slice; raw ratios are not supported yet)"
            )
        good = ratio.good
        lat = self.slo.indicator.latency
        if lat is not None and good is not None:
            le = self.bucket_le(at)
            assert le is not None
            good = MetricSource(query=lat.bucket_selector(le), type=good.type, ref=good.ref)
        return good, ratio.bad, ratio.total

    def _increase(self, src: MetricSource, window_s: float) -> str:
        w = prom_duration(window_s)
        q = src.query
        if WINDOW_PLACEHOLDER.search(q):
            # sloth's convention: a per-second rate expression; events = rate × window.
            return f"({WINDOW_PLACEHOLDER.sub(w, q)}) * {round(window_s)}"
        if not is_selector(q):
            raise SLIError(
                f"SLO {self.slo.name!r}: {q!r} is not a series selector; give a selector of a counter "
                '(e.g. http_requests_total{code!~"5.."}) or a rate expression with {{.window}}'
            )
        counter = self.slo.indicator.ratio is None or self.slo.indicator.ratio.counter
        fn = "increase" if counter else "sum_over_time"
        return f"sum({fn}({q}[{w}]))"

    def _value(self, query: str, at: float, what: str) -> float:
        v = self.client.scalar(query, at)
        if v is None:
            raise SLIError(
                f"SLO {self.slo.name!r}: no data for {what} ({query}) at {_ts(at)}: the series do not exist "
                "in that window (wrong selector, or the target was never scraped)"
            )
        return 0.0 if math.isnan(v) else v

    def events(self, window_s: float, at: float | None = None) -> EventCounts:
        """Good and total events in ``[at − window_s, at]`` from counter increases."""
        now = time.time() if at is None else at
        good, bad, total = self._queries(now)
        t = self._value(self._increase(total, window_s), now, "total events")
        if good is not None:
            g = self._value(self._increase(good, window_s), now, "good events")
        else:
            assert bad is not None
            # A bad-events series that does not exist yet means no bad event happened —
            # but only if the total exists, which was checked just above.
            b = self.client.scalar(self._increase(bad, window_s), now)
            g = t - (0.0 if b is None or math.isnan(b) else b)
        # Extrapolation in increase() can put good a hair above total; clamp.
        return EventCounts(good=min(max(g, 0.0), t), total=max(t, 0.0))

    def timeslices(self, start: float, end: float) -> EventCounts:
        """Good and total time slices in ``[start, end]`` (Timeslices budgeting).

        A slice is good when its ratio (or its threshold metric) meets the objective's
        ``timeSliceTarget``; slices without traffic or data are left out of both counts.
        RatioTimeslices: ``good`` is the sum of the slices' ratios, so ``good / total`` is
        their mean, the SLI the spec defines.
        """
        obj = self.slo.objective
        step = obj.time_slice_window_s or 60.0
        first = start + step
        if first > end:
            return EventCounts(good=0.0, total=0.0, unit="slices")
        ind = self.slo.indicator
        if ind.threshold is not None:
            series = self.client.range(ind.threshold.query, first, end, step)
            if not series:
                raise SLIError(f"SLO {self.slo.name!r}: no data for {ind.threshold.query} in the window")
            op = obj.op or "lte"
            value = obj.value if obj.value is not None else 0.0

            def meets(x: float) -> bool:
                return {"lte": x <= value, "lt": x < value, "gte": x >= value, "gt": x > value}[op]

            pts = [v for s in series for _, v in s.points if not math.isnan(v)]
            good_slices = sum(1 for v in pts if meets(v))
            if self.slo.budgeting is Budgeting.OCCURRENCES:
                return EventCounts(good=float(good_slices), total=float(len(pts)), unit="samples")
            return EventCounts(good=float(good_slices), total=float(len(pts)), unit="slices")
        good, bad, total = self._queries(end)
        t_q = self._increase(total, step)
        if good is not None:
            ratio_q = f"({self._increase(good, step)}) / ({t_q})"
        else:
            assert bad is not None
            ratio_q = f"1 - (({self._increase(bad, step)}) or vector(0)) / ({t_q})"
        series = self.client.range(ratio_q, first, end, step)
        if not series and not self.client.range(t_q, first, end, step):
            raise SLIError(f"SLO {self.slo.name!r}: no data for {total.query} in the window")
        target = obj.time_slice_target if obj.time_slice_target is not None else obj.target
        vals = [min(max(v, 0.0), 1.0) for s in series for _, v in s.points if not math.isnan(v)]
        if self.slo.budgeting is Budgeting.RATIO_TIMESLICES:
            # RatioTimeslices: the SLI is the mean of the slices' ratios (good = their sum).
            return EventCounts(good=float(sum(vals)), total=float(len(vals)), unit="slices")
        strict = obj.op == "gt"  # the objective's op decides a slice exactly at its target
        good_slices = sum(1 for v in vals if (v > target if strict else v >= target))
        return EventCounts(good=float(good_slices), total=float(len(vals)), unit="slices")

    def budget_counts(self, window_s: float, at: float | None = None) -> EventCounts:
        """What the budget counts in ``[at − window_s, at]``: events or time slices."""
        now = time.time() if at is None else at
        if self.slo.budgeting is not Budgeting.OCCURRENCES or self.slo.indicator.threshold is not None:
            return self.timeslices(now - window_s, now)
        return self.events(window_s, now)

    # -- freshness -------------------------------------------------------------------------------

    def freshness(self, at: float | None = None) -> Freshness:
        """Newest sample of the SLI's total series at ``at``. Raises SLIError if missing or stale."""
        now = time.time() if at is None else at
        ind = self.slo.indicator
        if ind.latency is not None:
            sel = ind.latency.count_selector()
        elif ind.ratio is not None and ind.ratio.total is not None:
            sel = ind.ratio.total.query
        elif ind.ratio is not None and ind.ratio.raw is not None:
            sel = ind.ratio.raw.query
        else:
            assert ind.threshold is not None
            sel = ind.threshold.query
        if not is_selector(sel):
            q = WINDOW_PLACEHOLDER.sub("5m", sel)
            if not self.client.instant(q, now):
                raise SLIError(f"SLO {self.slo.name!r}: no data for {q} at {_ts(now)}")
            return Freshness(newest=None, series=1)
        samples = self.client.instant(f"timestamp({sel})", now)
        if not samples:
            window = prom_duration(self.slo.window.seconds)
            seen = self.client.instant(f"count(count_over_time({sel}[{window}]))", now)
            if seen and seen[0].value > 0:
                raise SLIError(
                    f"SLO {self.slo.name!r}: stale data: {sel} existed in the last {window} but has no "
                    f"fresh sample at {_ts(now)} (the target is down or no longer scraped)"
                )
            raise SLIError(
                f"SLO {self.slo.name!r}: no data: {sel} matches no series in the last {window} "
                "(wrong selector, or the target was never scraped)"
            )
        newest = max(s.value for s in samples)
        if now - newest > self.max_staleness_s:
            raise SLIError(
                f"SLO {self.slo.name!r}: stale data: the newest sample of {sel} is {now - newest:.0f}s old "
                f"(limit {self.max_staleness_s:g}s)"
            )
        return Freshness(newest=newest, series=len(samples))


def _ts(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) + f" ({t:.0f})"


# --- SLISource -------------------------------------------------------------------------------------


class BucketLatencies(LatencyView):
    """Latencies as Prometheus histogram buckets: cumulative counts per ``le``.

    ``count_le(T)`` is the count of the largest boundary ≤ T (exact when T is a
    boundary, a lower bound otherwise); ``value_at_rank`` the upper bound of the bucket
    holding that rank (an upper bound on the true value).
    """

    def __init__(self, cumulative: Mapping[float, float]) -> None:
        self.bounds = sorted(cumulative)
        running = 0.0
        self.cum: list[int] = []
        for b in self.bounds:  # increase() extrapolates each bucket on its own: keep monotonic
            running = max(running, cumulative[b])
            self.cum.append(round(running))
        self.n = self.cum[-1] if self.cum else 0
        self.exact = False

    def count_le(self, threshold_s: float) -> int:
        best = 0
        for b, c in zip(self.bounds, self.cum, strict=True):
            if b <= threshold_s * (1 + 1e-9):
                best = c
        return best

    def value_at_rank(self, rank: int) -> float:
        for b, c in zip(self.bounds, self.cum, strict=True):
            if c >= rank:
                return b
        return math.inf


SHORT_WINDOW_S = 30.0


@dataclass(kw_only=True)
class PrometheusSource(SLISource):
    """An ``SLISource`` over Prometheus for one SLO definition.

    Passive: ``start`` checks that the data is there and fresh (SLIError otherwise);
    ``stop`` does nothing. Counts are rounded increases (Prometheus extrapolates at the
    window edges, so they are estimates within a scrape interval's worth of events).
    ``series`` uses ``rate(...[rate_window])`` at 1 s steps: each row's counts are the
    smoothed requests per second, not the exact events of that second.
    """

    name: str
    sli: PrometheusSLI
    rate_window_s: float = 5.0
    _started: bool = field(default=False, init=False)

    def start(self) -> None:
        self.sli.freshness()
        self.sli.bucket_le()
        self._started = True

    def stop(self) -> None:
        """Nothing to stop; the source stays readable (windows are judged after the run)."""

    def last_sample_at(self) -> float | None:
        try:
            return self.sli.freshness().newest
        except SLIError:
            return None

    def counts(self, t0: float, t1: float) -> Counts:
        window = max(t1 - t0, 1.0)
        try:
            ev = self.sli.budget_counts(window, t1)
        except SLIError:
            # increase() needs two scrapes inside the window; a window of a few seconds may
            # hold fewer. ``start`` already proved the series exist, so this is "too few
            # samples" (judged inconclusive), not "no such data".
            if self._started and window < SHORT_WINDOW_S:
                return Counts(total=0, good=0, errors=0)
            raise
        total, good = round(ev.total), round(ev.good)
        return Counts(total=total, good=good, errors=total - good)

    def latencies(self, t0: float, t1: float) -> LatencyView | None:
        lat = self.sli.slo.indicator.latency
        if lat is None:
            return None
        w = prom_duration(max(t1 - t0, 1.0))
        q = f"sum by (le) (increase({lat.metric}_bucket{{{lat.matchers}}}[{w}]))"
        samples = self.sli.client.instant(q, t1)
        if not samples:
            raise SLIError(f"SLI source {self.name!r}: no histogram data for {lat.metric} at {_ts(t1)}")
        cumulative = {
            float(s.labels.get("le", "inf")): 0.0 if math.isnan(s.value) else s.value for s in samples
        }
        return BucketLatencies(cumulative)

    def series(self, t0: float | None = None, t1: float | None = None) -> list[SecondStats]:
        end = time.time() if t1 is None else t1
        start = end - 300.0 if t0 is None else t0
        start, end = math.floor(start), math.floor(end)
        good_src, bad_src, total_src = self.sli._queries(end)
        w = prom_duration(self.rate_window_s)

        def rate(src: MetricSource) -> str:
            if WINDOW_PLACEHOLDER.search(src.query):
                return WINDOW_PLACEHOLDER.sub(w, src.query)
            return f"sum(rate({src.query}[{w}]))"

        def column(query: str) -> dict[float, float]:
            out: dict[float, float] = {}
            for s in self.sli.client.range(query, start, end, 1.0):
                for ts, v in s.points:
                    out[ts] = 0.0 if math.isnan(v) else v
            return out

        totals = column(rate(total_src))
        goods = column(rate(good_src)) if good_src is not None else {}
        bads = column(rate(bad_src)) if bad_src is not None else {}
        quantiles: dict[str, dict[float, float]] = {}
        lat = self.sli.slo.indicator.latency
        if lat is not None:
            for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
                quantiles[name] = column(
                    f"histogram_quantile({q}, sum by (le) (rate({lat.metric}_bucket{{{lat.matchers}}}[{w}])))"
                )
        horizon = time.time() - 2 * self.rate_window_s
        rows = []
        for ts in sorted(totals):
            n = round(totals[ts])
            good = round(goods.get(ts, 0.0)) if good_src is not None else n - round(bads.get(ts, 0.0))
            good = min(max(good, 0), n)
            rows.append(
                SecondStats(
                    t=ts,
                    n=n,
                    good=good,
                    errors=n - good,
                    p50=quantiles.get("p50", {}).get(ts),
                    p95=quantiles.get("p95", {}).get(ts),
                    p99=quantiles.get("p99", {}).get(ts),
                    complete=ts + 1 <= horizon,
                )
            )
        return rows
