"""SLI observation around a run: the experiment's ``load`` and ``slo`` sections.

``LoadObservation`` starts the synthetic load before the baseline and stops it after the
"after" window; it publishes a live tick per second (console, event log), the per-second
series at the end (journal, charts), and the SLO verdicts per window.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from chaoslab.engine import events as ev
from chaoslab.engine.execute import Outcome
from chaoslab.errors import SLIError
from chaoslab.model.experiment import Activity, Experiment
from chaoslab.sli.base import SLISource, series_to_dict
from chaoslab.sli.loadgen import LoadGenerator, load_from_spec
from chaoslab.sli.slo import SLO, SLIKind, judge


class LoadObservation:
    """The run's SLI sources: the synthetic load (``load``) and any extra sources (SLO
    files read from Prometheus), and the objectives judged on them."""

    def __init__(
        self,
        experiment: Experiment,
        run_dir: Path,
        *,
        extra_slos: tuple[SLO, ...] = (),
        extra_sources: Mapping[str, SLISource] | None = None,
        home: Path,
    ) -> None:
        self.home = home  # chaoslab's home, where `lab:` load targets resolve
        self.spec = experiment.load
        self.slos: tuple[SLO, ...] = experiment.slo + extra_slos
        self.extra_sources = dict(extra_sources or {})
        self.series_path = run_dir / "sli-series.ndjson"
        self.probe_slis = experiment.sli_probes
        self.source: LoadGenerator | None = None
        self.started_at: float | None = None
        self._bus: ev.EventBus | None = None
        self._run_id = ""
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._judged_baseline = False
        self._reference: tuple[float, float] | None = None

    def sources(self) -> Mapping[str, SLISource]:
        out = dict(self.extra_sources)
        if self.source is not None:
            out[self.source.name] = self.source
        return out

    def bind(self, run_probe: Callable[[Activity], Outcome]) -> None:
        """Turn the experiment's probe SLIs into sources, run by the runner's executor
        (so they see the run's configuration, secrets, drivers and deadlines)."""
        from chaoslab.sli.probe_source import ProbeSource

        for p in self.probe_slis:

            def sample(activity: Activity = p.probe) -> Outcome:
                return run_probe(activity)

            self.extra_sources[p.name] = ProbeSource(
                sample,
                interval_s=p.interval_s,
                name=p.name,
                check=lambda o: o.status == "succeeded" and o.tolerance_met is not False,
            )

    def start(self, bus: ev.EventBus, run_id: str) -> None:
        self._bus, self._run_id = bus, run_id
        self.started_at = time.time()
        for extra in self.extra_sources.values():
            extra.start()
        if self.spec is None:
            return
        self.series_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.source = load_from_spec(self.spec, series_path=self.series_path, base_dir=self.home)
        except (ValueError, OSError) as exc:
            raise SLIError(f"cannot start the synthetic load: {exc}") from exc
        self.source.start()
        self.started_at = time.time()
        self._ticker = threading.Thread(target=self._tick, name="sli-ticker", daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            if self.source is None or self._bus is None:
                continue
            snap = self.source.snapshot(last_s=1)
            self._bus.emit(
                ev.SLITick(
                    run_id=self._run_id,
                    source=self.source.name,
                    rate=snap.get("rate"),
                    availability=snap.get("availability"),
                    p50_ms=snap.get("p50_ms"),
                    p99_ms=snap.get("p99_ms"),
                )
            )

    def stop(self) -> None:
        self._stop.set()
        for extra in self.extra_sources.values():
            extra.stop()
        if self._ticker is not None:
            self._ticker.join(2.0)
        if self.source is not None:
            self.source.stop()
            if self._bus is not None:
                self._bus.emit(
                    ev.SLISeries(
                        run_id=self._run_id,
                        source=self.source.name,
                        series=series_to_dict(self.source.series()),
                    )
                )

    def judge(self, windows: Mapping[str, tuple[float, float]]) -> list[ev.SLOEvaluated]:
        if self.source is None and not self.extra_sources:
            return []
        slos = self.slos
        if "during" not in windows:  # time to recover needs the fault window
            slos = tuple(s for s in slos if s.sli is not SLIKind.TIME_TO_RECOVER)
        if "baseline" in windows:  # comparative objectives compare later windows with it
            self._reference = windows["baseline"]
        results = judge(slos, self.sources(), windows, reference=self._reference)
        return [ev.SLOEvaluated(run_id=self._run_id, **r.to_dict()) for r in results]
