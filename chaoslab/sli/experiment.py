"""Validation of the experiment's SLI sections (``load``, ``slo``, ``guard``) at load time,
so ``chaoslab validate`` reports their problems with the rest, before anything runs."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from chaoslab.errors import Problem


def _load(raw: Any, path: str) -> list[Problem]:
    from chaoslab.sli.loadgen import parse_load

    spec = parse_load(raw, path)
    return spec if isinstance(spec, list) else []


def _slo(raw: Any, path: str) -> list[Problem]:
    from chaoslab.sli.slo import parse_slos

    slos = parse_slos(raw, path)
    if isinstance(slos, list):
        return slos
    return _scipy_for_compare(slos, path)


def _scipy_for_compare(slos: tuple[Any, ...], path: str) -> list[Problem]:
    """Comparative objectives need scipy (an extra): say so before anything runs."""
    import importlib.util

    compared = [i for i, s in enumerate(slos) if s.compare is not None]
    if compared and importlib.util.find_spec("scipy") is None:
        return [
            Problem(
                path=f"{path}[{compared[0]}].compare",
                message="comparative objectives need scipy, which is not installed",
                hint="pip install 'chaoslab[stats]'",
            )
        ]
    return []


def _guard(raw: Any, path: str) -> list[Problem]:
    from chaoslab.safety.guard import parse_guard

    spec = parse_guard(raw, default_objective=None, load_timeout_s=2.0, path=path)
    return spec if isinstance(spec, list) else []


def _budget(raw: Any, path: str) -> list[Problem]:
    from chaoslab.sli.budget_gate import validate_section

    return validate_section(raw, path)


def section_validators() -> Mapping[str, Callable[[Any, str], list[Problem]]]:
    validators: dict[str, Callable[[Any, str], list[Problem]]] = {"load": _load, "slo": _slo, "guard": _guard}
    # keys of the SLO-file integration (chaoslab.sli.budget_gate.KEYS), listed here so
    # validation does not import it for experiments that do not use them
    for key in ("slo_files", "prometheus", "allowance", "budget_gate"):
        validators[key] = _budget
    return validators
