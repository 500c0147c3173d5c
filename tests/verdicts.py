"""The verdict a run would reach from SLO results alone: the engine's own rule and fold."""

from __future__ import annotations

from collections.abc import Iterable

from chaoslab.engine import events as ev
from chaoslab.engine.fold import JudgedSLO, fold_verdict, slo_note
from chaoslab.verdict import Verdict


def verdict_of_slos(results: Iterable[JudgedSLO]) -> tuple[Verdict, str]:
    """Each result's note as the runner emits it, folded as the runner folds them."""
    notes = [n for r in results if (n := slo_note(r)) is not None]
    return fold_verdict(
        [ev.VerdictNoted(run_id="t", verdict=v, reason=why) for v, why in notes]
        + [ev.HypothesisChecked(run_id="t", phase=ev.Phase.AFTER, met=not notes)],
        ended=True,
    )
