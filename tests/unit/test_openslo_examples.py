"""The official OpenSLO v1 examples, each accepted or refused for a reason that is true.

The cases are written from the examples of the spec repository (github.com/OpenSLO/OpenSLO,
read at commit aa5cb78d, 2025-09): ``examples/budgeting-method/*.yaml``,
``examples/treat-low-traffic-as-equally-important/timeslices-slo.yaml``, the README's
inline examples, and the Go SDK's ``pkg/openslo/v1/examples/*.yaml`` (in the spec
repository until #329 moved them to OpenSLO/go-sdk, unchanged there). They are
re-written here as data, keeping what each example exercises (its budgeting method,
window, metric source type, the shape of its lists) under other names.

chaoslab reads SLIs from Prometheus, so examples whose metric source is ``Any``,
``Datadog`` or ``AppDynamics`` are refused *for that reason*; each also has a variant with
a Prometheus source that must be accepted, so the rest of the example is shown valid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from chaoslab.errors import InvalidInput
from chaoslab.model.openslo import Budgeting, SLODefinition, load_slo_files

V1 = "openslo/v1"


def _source(kind: str, query: str = "Any") -> dict[str, Any]:
    return {"metricSource": {"type": kind, "spec": {"query": query}}}


def _write(
    tmp_path: Path, docs: list[dict[str, Any]] | dict[str, Any], name: str, *, sequence: bool = False
) -> Path:
    p = tmp_path / name
    if sequence:  # one YAML document holding a list of objects, as the Go SDK writes them
        p.write_text(yaml.safe_dump(docs, sort_keys=False), encoding="utf-8")
    else:
        items = docs if isinstance(docs, list) else [docs]
        p.write_text(yaml.safe_dump_all(items, sort_keys=False), encoding="utf-8")
    return p


def _load(*paths: Path) -> tuple[SLODefinition, ...]:
    return load_slo_files(paths)


def _refused(*paths: Path) -> str:
    with pytest.raises(InvalidInput) as info:
        load_slo_files(paths)
    return "\n".join(str(p) for p in info.value.problems)


# --- examples/budgeting-method/occurences-slo.yaml ---------------------------------------------
def _search_latency(source: str) -> dict[str, Any]:
    """A thresholdMetric SLO (op lt, value 500), Occurrences, 2w rolling, an empty alertPolicies key."""
    return {
        "apiVersion": V1,
        "kind": "SLO",
        "metadata": {"name": "catalogue-search", "displayName": "Search time"},
        "spec": {
            "description": "Searches stay under 500 ms however many run at once.",
            "service": "catalogue",
            "indicator": {
                "metadata": {"name": "catalogue-search-latency"},
                "spec": {"thresholdMetric": _source(source, "Any" if source == "Any" else "search_seconds")},
            },
            "timeWindow": [{"duration": "2w", "isRolling": True}],
            "budgetingMethod": "Occurrences",
            "objectives": [{"displayName": "Good experience", "op": "lt", "value": 500, "target": 0.99}],
            "alertPolicies": None,  # the example leaves the key empty
        },
    }


def test_occurrences_example_refused_for_its_any_source_and_valid_otherwise(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput) as info:
        load_slo_files([_write(tmp_path, _search_latency("Any"), "any.yaml")])
    # One problem, the source: not the empty alertPolicies key, the window or the op.
    (problem,) = info.value.problems
    assert "chaoslab reads SLIs from Prometheus, not 'Any'" in problem.message
    assert problem.path.endswith("thresholdMetric.metricSource.type"), problem
    (slo,) = _load(_write(tmp_path, _search_latency("Prometheus"), "prom.yaml"))
    assert slo.indicator.threshold is not None
    assert (slo.objective.op, slo.objective.value, slo.target) == ("lt", 500.0, 0.99)
    assert slo.alert_policies == () and slo.window.seconds == 14 * 86400 and slo.window.rolling


# --- examples/budgeting-method/ratio-timeslices.yaml -------------------------------------------
def _front_page(source: str) -> dict[str, Any]:
    return {
        "apiVersion": V1,
        "kind": "SLO",
        "metadata": {"name": "front-page", "displayName": "Front page availability"},
        "spec": {
            "service": "shop",
            "indicator": {
                "metadata": {"name": "front-page-codes"},
                "spec": {
                    "ratioMetric": {
                        "good": _source(source, 'page_requests_total{code=~"2.."}'),
                        "total": _source(source, "page_requests_total"),
                    }
                },
            },
            "timeWindow": [{"duration": "2w", "isRolling": True}],
            "budgetingMethod": "RatioTimeslices",
            "objectives": [{"displayName": "Good", "op": "gt", "timeSliceWindow": "1m", "target": 0.99}],
        },
    }


def test_ratio_timeslices_example_is_supported(tmp_path: Path) -> None:
    assert "not 'Any'" in _refused(_write(tmp_path, _front_page("Any"), "any.yaml"))
    (slo,) = _load(_write(tmp_path, _front_page("Prometheus"), "prom.yaml"))
    assert slo.budgeting is Budgeting.RATIO_TIMESLICES
    assert slo.objective.time_slice_window_s == 60.0 and slo.objective.time_slice_target is None
    assert slo.objective.op == "gt"
    # RatioTimeslices needs its slice window, as the spec says.
    broken = _front_page("Prometheus")
    del broken["spec"]["objectives"][0]["timeSliceWindow"]
    assert "timeSliceWindow" in _refused(_write(tmp_path, broken, "no-window.yaml"))


# --- examples/budgeting-method/timeslices-slo.yaml and treat-low-traffic/timeslices-slo.yaml ----
def _availability(source: str, duration: str, objectives: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": V1,
        "kind": "SLO",
        "metadata": {"name": "uptime-sla", "displayName": "Uptime against the contract"},
        "spec": {
            "service": "uptime",
            "indicator": {
                "metadata": {"name": "uptime-running"},
                "spec": {
                    "ratioMetric": {
                        "good": _source(source, "up_good_total"),
                        "total": _source(source, "up_total"),
                    }
                },
            },
            "timeWindow": [
                {
                    "duration": duration,
                    "isRolling": False,
                    "calendar": {"startTime": "2022-01-01 12:00:00", "timeZone": "America/New_York"},
                }
            ],
            "budgetingMethod": "Timeslices",
            "objectives": objectives,
            "alertPolicies": None,
        },
    }


TWO_OBJECTIVES = [
    {
        "displayName": "Internal",
        "op": "gt",
        "target": 0.995,
        "timeSliceTarget": 0.99,
        "timeSliceWindow": "1m",
    },
    {"displayName": "Contract", "target": 0.99, "timeSliceTarget": 0.99, "timeSliceWindow": "1m"},
]


def test_timeslices_examples(tmp_path: Path) -> None:
    assert "not 'Any'" in _refused(_write(tmp_path, _availability("Any", "1m", TWO_OBJECTIVES), "a.yaml"))
    internal, contract = _load(_write(tmp_path, _availability("Prometheus", "1m", TWO_OBJECTIVES), "b.yaml"))
    # The example's comment says "1 month", but in the shorthand m is minutes and M months:
    # the window is what the file says, a calendar-aligned minute.
    assert internal.window.seconds == 60 and not internal.window.rolling
    assert internal.window.timezone == "America/New_York"
    assert (internal.name, internal.objective.op, internal.objective.time_slice_target) == (
        "uptime-sla:internal",
        "gt",
        0.99,
    )
    assert (contract.name, contract.objective.op, contract.target) == ("uptime-sla:contract", None, 0.99)
    one = [
        {
            "displayName": "Objective",
            "op": "gt",
            "target": 0.9995,
            "timeSliceTarget": 0.95,
            "timeSliceWindow": "1m",
        }
    ]
    (weekly,) = _load(_write(tmp_path, _availability("Prometheus", "1w", one), "c.yaml"))
    assert weekly.window.seconds == 7 * 86400 and weekly.budgeting is Budgeting.TIMESLICES


def test_an_inverting_op_on_a_ratio_objective_is_refused_not_ignored(tmp_path: Path) -> None:
    lte = [{"op": "lte", "target": 0.99, "timeSliceTarget": 0.9, "timeSliceWindow": "1m"}]
    text = _refused(_write(tmp_path, _availability("Prometheus", "1w", lte), "lte.yaml"))
    assert "op 'lte' on a ratioMetric objective would invert it" in text


# --- the Go SDK's pkg/openslo/v1/examples (YAML sequences of objects) --------------------------
def _labels() -> dict[str, Any]:
    return {"env": ["prod"], "team": ["team-a", "team-b"]}


SDK_SLOS = [
    {
        "apiVersion": V1,
        "kind": "SLO",
        "metadata": {"name": "storefront-availability", "displayName": "Storefront", "labels": _labels()},
        "spec": {
            "description": "X% of storefront requests succeed",
            "service": "storefront",
            "indicator": {
                "metadata": {"name": "storefront-ok-ratio"},
                "spec": {
                    "ratioMetric": {
                        "counter": True,
                        "good": _source("Prometheus", 'sum(requests{cluster="prod",code=~"2xx|4xx"})'),
                        "total": _source("Prometheus", 'sum(requests{cluster="prod"})'),
                    }
                },
            },
            "timeWindow": [
                {
                    "duration": "1w",
                    "isRolling": False,
                    "calendar": {"startTime": "2022-01-01 12:00:00", "timeZone": "America/New_York"},
                }
            ],
            "budgetingMethod": "Timeslices",
            "objectives": [
                {
                    "displayName": "Good",
                    "op": "gt",
                    "target": 0.995,
                    "timeSliceTarget": 0.95,
                    "timeSliceWindow": "1m",
                }
            ],
        },
    }
]

SDK_DATA_SOURCES = [
    {
        "apiVersion": V1,
        "kind": "DataSource",
        "metadata": {"labels": _labels(), "name": "prom-main"},
        "spec": {"type": "Prometheus", "connectionDetails": [{"url": "http://prometheus.example.com"}]},
    },
    {
        "apiVersion": V1,
        "kind": "DataSource",
        "metadata": {"annotations": {"openslo.com/service-folder": "./dir"}, "name": "dd-main"},
        "spec": {"type": "Datadog", "connectionDetails": [{"apiKey": "k"}, {"appKey": "a"}]},
    },
]


def _sli(name: str, ratio_or_threshold: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": V1,
        "kind": "SLI",
        "metadata": {"name": name, "labels": _labels()},
        "spec": ratio_or_threshold,
    }


def _ref_source(ref: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"metricSource": {"metricSourceRef": ref, "type": kind, "spec": spec}}


SDK_SLI_DATADOG = _sli(
    "search-ok",
    {
        "ratioMetric": {
            "counter": True,
            "good": _ref_source("dd-main", "Datadog", {"query": "sum:hits{status:200}.as_count()"}),
            "total": _ref_source("dd-main", "Datadog", {"query": "sum:hits{*}.as_count()"}),
        }
    },
)
SDK_SLI_APPDYNAMICS = _sli(
    "slow-requests",
    {
        "ratioMetric": {
            "counter": False,
            "bad": _ref_source(
                "appd", "AppDynamics", {"applicationName": "app", "metricPath": "EUE|App|Slow"}
            ),
            "total": _ref_source(
                "appd", "AppDynamics", {"applicationName": "app", "metricPath": "EUE|App|All"}
            ),
        }
    },
)
SDK_SLI_RAW = _sli(
    "wifi-satisfaction",
    {
        "ratioMetric": {
            "rawType": "success",
            "raw": _ref_source(
                "prom-main",
                "Prometheus",
                {
                    "query": "1 - (sum(sum_over_time(sat_ratio[{{.window}}])) / sum(count_over_time(sat_ratio[{{.window}}])))"
                },
            ),
        }
    },
)
SDK_SLI_THRESHOLD = _sli(
    "consumer-lag",
    {"thresholdMetric": _ref_source("prom-lag", "Prometheus", {"query": "sum(min_over_time(lag[2m]))"})},
)

SDK_CONDITIONS = [
    {
        "apiVersion": V1,
        "kind": "AlertCondition",
        "metadata": {"name": "disk-burn", "labels": _labels()},
        "spec": {
            "severity": "page",
            "condition": {
                "kind": "burnrate",
                "op": "lte",
                "threshold": 2,
                "lookbackWindow": "1h",
                "alertAfter": "5m",
            },
        },
    },
    {
        "apiVersion": V1,
        "kind": "AlertCondition",
        "metadata": {"name": "slow-day", "annotations": {"openslo.com/service-folder": "./dir"}},
        "spec": {
            "severity": "warning",
            "condition": {
                "kind": "burnrate",
                "op": "gt",
                "threshold": 200,
                "lookbackWindow": "1d",
                "alertAfter": "30m",
            },
        },
    },
]

SDK_POLICIES = [
    {
        "apiVersion": V1,
        "kind": "AlertPolicy",
        "metadata": {"name": "low", "labels": _labels()},
        "spec": {
            "alertWhenBreaching": True,
            "conditions": [{"conditionRef": "disk-burn"}],
            "notificationTargets": [{"targetRef": "mail-oncall"}],
        },
    },
    {
        "apiVersion": V1,
        "kind": "AlertPolicy",
        "metadata": {"name": "high"},
        "spec": {
            "alertWhenBreaching": True,
            "conditions": [
                {
                    "kind": "AlertCondition",
                    "metadata": {"name": "memory-burn"},
                    "spec": {
                        "severity": "page",
                        "condition": {
                            "kind": "burnrate",
                            "op": "gt",
                            "threshold": 2,
                            "lookbackWindow": "1h",
                            "alertAfter": "5m",
                        },
                    },
                }
            ],
            "notificationTargets": [{"targetRef": "pager-oncall"}],
        },
    },
    {
        "apiVersion": V1,
        "kind": "AlertPolicy",
        "metadata": {"name": "medium"},
        "spec": {
            "alertWhenBreaching": True,
            "conditions": [{"conditionRef": "disk-burn"}],
            "notificationTargets": [
                {
                    "kind": "AlertNotificationTarget",
                    "metadata": {"name": "chat-oncall"},
                    "spec": {"target": "slack"},
                }
            ],
        },
    },
]

SDK_TARGETS = [
    {
        "apiVersion": V1,
        "kind": "AlertNotificationTarget",
        "metadata": {"name": "devs-mail"},
        "spec": {"target": "email"},
    },
    {
        "apiVersion": V1,
        "kind": "AlertNotificationTarget",
        "metadata": {"name": "pd"},
        "spec": {"target": "pagerduty"},
    },
]

SDK_SERVICES = [  # the SDK's services.yaml defines the same name twice
    {
        "apiVersion": V1,
        "kind": "Service",
        "metadata": {"name": "demo-service"},
        "spec": {"description": "one"},
    },
    {
        "apiVersion": V1,
        "kind": "Service",
        "metadata": {"name": "demo-service"},
        "spec": {"description": "two"},
    },
]


def test_sdk_slos_sequence_is_accepted_with_list_labels(tmp_path: Path) -> None:
    (slo,) = _load(_write(tmp_path, SDK_SLOS, "slos.yaml", sequence=True))
    assert slo.name == "storefront-availability" and slo.budgeting is Budgeting.TIMESLICES
    assert slo.labels == {"env": "prod", "team": "team-a,team-b"}


def test_sdk_data_sources_conditions_policies_and_targets_are_accepted(tmp_path: Path) -> None:
    files = [
        _write(tmp_path, SDK_DATA_SOURCES, "ds.yaml", sequence=True),
        _write(tmp_path, SDK_CONDITIONS, "conditions.yaml", sequence=True),
        _write(tmp_path, SDK_POLICIES, "policies.yaml", sequence=True),
        _write(tmp_path, SDK_TARGETS, "targets.yaml", sequence=True),
    ]
    assert _load(*files) == ()  # valid objects, and no SLO among them


def test_sdk_slis_each_for_its_own_reason(tmp_path: Path) -> None:
    ds = _write(tmp_path, SDK_DATA_SOURCES, "ds.yaml", sequence=True)
    assert _load(ds, _write(tmp_path, [SDK_SLI_RAW], "raw.yaml", sequence=True)) == ()
    text = _refused(ds, _write(tmp_path, [SDK_SLI_DATADOG], "dd.yaml", sequence=True))
    assert "chaoslab reads SLIs from Prometheus, not 'Datadog'" in text
    text = _refused(ds, _write(tmp_path, [SDK_SLI_APPDYNAMICS], "appd.yaml", sequence=True))
    assert "not 'AppDynamics'" in text and "no DataSource named 'appd'" in text
    assert "spec.query" not in text  # not a Prometheus source: its spec is not PromQL
    text = _refused(ds, _write(tmp_path, [SDK_SLI_THRESHOLD], "lag.yaml", sequence=True))
    assert "no DataSource named 'prom-lag'" in text  # the example refers to a DataSource it never defines


def test_sdk_services_duplicate_name_is_refused(tmp_path: Path) -> None:
    text = _refused(_write(tmp_path, SDK_SERVICES, "services.yaml", sequence=True))
    assert "duplicate Service 'demo-service'" in text


def test_a_condition_without_op_is_refused_as_the_spec_requires_it(tmp_path: Path) -> None:
    cond = {
        **SDK_CONDITIONS[0],
        "spec": {
            "severity": "page",
            "condition": {"kind": "burnrate", "threshold": 2, "lookbackWindow": "1h"},
        },
    }
    assert "a burnrate condition needs op: lte | lt | gte | gt, got None" in _refused(
        _write(tmp_path, cond, "c.yaml")
    )


# --- the README's inline examples -----------------------------------------------------------------
def test_readme_examples(tmp_path: Path) -> None:
    # "metadata: name: AlertPolicy" and "OnCallDevopsMailNotification": not RFC 1123 labels.
    policy = {**SDK_POLICIES[0], "metadata": {"name": "AlertPolicy"}}
    text = _refused(_write(tmp_path, [policy, *SDK_CONDITIONS], "p.yaml"))
    assert "invalid name 'AlertPolicy'" in text and "RFC 1123" in text
    target = {**SDK_TARGETS[0], "metadata": {"name": "OnCallDevopsMailNotification"}}
    assert "invalid name 'OnCallDevopsMailNotification'" in _refused(_write(tmp_path, target, "t.yaml"))
    # The inline-SLI SLO: Datadog, and neither timeWindow nor budgetingMethod.
    slo = {
        "apiVersion": V1,
        "kind": "SLO",
        "metadata": {"name": "demo-slo", "displayName": "Demo SLO"},
        "spec": {
            "service": "demo",
            "indicator": {"metadata": {"name": "demo-error"}, "spec": SDK_SLI_DATADOG["spec"]},
            "objectives": [{"displayName": "Demo Total Errors", "target": 0.98}],
        },
    }
    text = _refused(_write(tmp_path, [slo, SDK_DATA_SOURCES[1]], "slo.yaml"))
    assert "not 'Datadog'" in text
    assert "expected Occurrences, Timeslices or RatioTimeslices, got None" in text  # required by the spec
    assert "timeWindow" not in text  # optional in the spec
    # With a Prometheus source and a budgeting method, no timeWindow is accepted: 30d assumed.
    slo["spec"]["indicator"]["spec"] = {
        "ratioMetric": {
            "counter": True,
            "good": _source("Prometheus", "ok_total"),
            "total": _source("Prometheus", "all_total"),
        }
    }
    slo["spec"]["budgetingMethod"] = "Occurrences"
    (loaded,) = _load(_write(tmp_path, slo, "fixed.yaml"))
    assert not loaded.window_declared and loaded.window.seconds == 30 * 86400 and loaded.window.rolling
    # The README's AlertCondition (op lte) and CloudWatch DataSource are accepted as they are.
    readme_condition = {
        "apiVersion": V1,
        "kind": "AlertCondition",
        "metadata": {"name": "cpu-burn", "displayName": "CPU usage breach"},
        "spec": {
            "description": "If the CPU usage is too high for given period then it should alert",
            "severity": "page",
            "condition": {
                "kind": "burnrate",
                "op": "lte",
                "threshold": 2,
                "lookbackWindow": "1h",
                "alertAfter": "5m",
            },
        },
    }
    cloudwatch = {
        "apiVersion": V1,
        "kind": "DataSource",
        "metadata": {"name": "string"},
        "spec": {"type": "CloudWatch", "connectionDetails": {"accessKeyID": "k", "secretAccessKey": "s"}},
    }
    assert _load(_write(tmp_path, [readme_condition, cloudwatch], "ok.yaml")) == ()


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("a", True),
        ("web-availability", True),
        ("0abc9", True),
        ("x" * 63, True),
        ("x" * 64, False),
        ("-lead", False),
        ("trail-", False),
        ("Upper", False),
        ("dot.ted", False),
        ("under_score", False),
        ("sla|contract", False),
    ],
)
def test_names_are_rfc_1123_labels(tmp_path: Path, name: str, ok: bool) -> None:
    doc = {"apiVersion": V1, "kind": "Service", "metadata": {"name": name}, "spec": {"description": "d"}}
    path = _write(tmp_path, doc, "svc.yaml")
    if ok:
        assert _load(path) == ()
    else:
        assert f"invalid name {name!r}" in _refused(path)


def test_status_says_when_the_window_was_assumed() -> None:
    from chaoslab.sli.budget import BudgetStatus, format_statuses
    from chaoslab.sli.prometheus import EventCounts

    st = BudgetStatus(
        slo="demo-slo",
        target=0.98,
        window_s=30 * 86400,
        window_start=0,
        evaluated_at=30 * 86400,
        counts=EventCounts(good=99, total=100),
        burn={},
        burn_windows_s={},
        firing=(),
        window_assumed=True,
    )
    assert "demo-slo: target 98% over 30d (no timeWindow in the file: assumed)" in format_statuses([st])
    assert st.to_dict()["window_assumed"] is True


def _rfc1123_label(name: str) -> bool:
    """The spec's words, written out independently of the loader's regex."""
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789-")
    return 0 < len(name) <= 63 and set(name) <= allowed and name[0] != "-" and name[-1] != "-"


@settings(max_examples=200, deadline=None)
@given(name=st.text(alphabet="ab0-._Z|/ \n", min_size=1, max_size=70))
def test_name_rule_matches_the_spec_words(name: str) -> None:
    from chaoslab.model.openslo import valid_name

    assert valid_name(name) == _rfc1123_label(name)
