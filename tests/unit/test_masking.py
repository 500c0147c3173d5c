"""The masker: arbitrary secrets inside arbitrary text, in their common encodings."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chaoslab.engine import events as ev
from chaoslab.engine.secrets import add_experiment_secrets, resolve_ref
from chaoslab.masking import MASK, Masker, Unsealable, unseal, url_credentials

secrets = st.text(min_size=4, max_size=40).filter(lambda s: s.strip() != "")
texts = st.text(max_size=60)

ENCODINGS = {
    "raw": lambda s: s,
    "url": lambda s: quote(s, safe=""),
    "url-path": lambda s: quote(s),
    "url-plus": lambda s: quote_plus(s),
    "json": lambda s: json.dumps(s)[1:-1],
    "json-ascii": lambda s: json.dumps(s, ensure_ascii=False)[1:-1],
    "repr": lambda s: repr(s)[1:-1],
}
B64 = {
    "b64": lambda s: base64.b64encode(s.encode("utf-8", "surrogatepass")).decode(),
    "b64-url": lambda s: base64.urlsafe_b64encode(s.encode("utf-8", "surrogatepass")).decode(),
    "b64-nopad": lambda s: base64.b64encode(s.encode("utf-8", "surrogatepass")).decode().rstrip("="),
}


def _forms(secret: str) -> list[str]:
    return [f(secret) for f in ENCODINGS.values()]


@settings(max_examples=300, deadline=None)
@given(secret=secrets, before=texts, after=texts, encoding=st.sampled_from(sorted(ENCODINGS)))
def test_a_secret_in_any_text_and_encoding_is_gone(
    secret: str, before: str, after: str, encoding: str
) -> None:
    m = Masker([secret])
    out = m.text(before + ENCODINGS[encoding](secret) + after)
    for form in _forms(secret):
        assert form not in out


@settings(max_examples=200, deadline=None)
@given(
    secret=secrets,
    before=texts.map(lambda t: t + " "),
    after=texts.map(lambda t: " " + t),
    encoding=st.sampled_from(sorted(B64)),
)
def test_base64_of_a_secret_as_a_whole_token_is_gone(
    secret: str, before: str, after: str, encoding: str
) -> None:
    m = Masker([secret])
    token = B64[encoding](secret)
    out = m.text(before + token + after)
    assert f" {token} " not in out
    assert f" {token.rstrip('=')} " not in out
    assert secret not in out


@settings(max_examples=150, deadline=None)
@given(
    many=st.lists(secrets, min_size=1, max_size=5),
    pieces=st.lists(texts, min_size=1, max_size=6),
)
def test_several_secrets_interleaved_and_nested(many: list[str], pieces: list[str]) -> None:
    m = Masker(many)
    text = "".join(p + s for p, s in zip(pieces, many * 3, strict=False))
    doc = {"k": [text, {"inner": text, text: 1}], "t": (text,)}
    masked = m.deep(doc)
    strings = [masked["k"][0], *masked["k"][1], masked["k"][1]["inner"], masked["t"][0]]
    # Checked on the masked strings, not on their JSON text: serialising can itself spell
    # a secret out of other characters (json.dumps("\x00") holds "0000").
    for s in many:
        assert s not in m.text(text)
        for form in (s, json.dumps(s)[1:-1]):
            assert all(form not in x for x in strings)


@given(secret=st.text(min_size=1, max_size=3).filter(lambda s: s.strip() != ""), text=texts)
def test_short_secrets_are_masked_only_as_whole_values(secret: str, text: str) -> None:
    m = Masker([secret])
    assert m.deep(secret) == MASK
    # the key is longer than any drawn secret: a key that *is* the secret is masked too
    assert m.deep({"field": [secret]}) == {"field": [MASK]}
    if secret + text != secret:
        assert m.deep(secret + text) == m.text(secret + text)  # left as it is inside longer text


def test_secret_made_of_mask_characters_and_the_replacement_forming_it_again() -> None:
    m = Masker(["****"])
    assert "****" not in m.text("*****")
    assert "****" not in m.text("********x")


def test_url_credentials_are_masked_even_when_unknown() -> None:
    m = Masker()
    text = "postgresql://chaos:PgPw-1234@127.0.0.1:5432/db and http://u:p%40ss-x@h/ and http://h:80/"
    out = m.text(text)
    assert "PgPw-1234" not in out and "p%40ss-x" not in out
    assert "postgresql://chaos:***@127.0.0.1:5432/db" in out
    assert "http://h:80/" in out
    assert url_credentials(text)[:2] == [("chaos", "PgPw-1234"), ("u", "p@ss-x")]


def test_known_url_credentials_mask_the_password_alone_and_basic_auth() -> None:
    m = Masker()
    m.add("http://alice:W0nderland-9@example.test/metrics")
    basic = base64.b64encode(b"alice:W0nderland-9").decode()
    out = m.text(f"Authorization: Basic {basic}; later W0nderland-9 alone")
    assert basic not in out and "W0nderland-9" not in out


def test_numbers_bytes_and_objects_are_masked() -> None:
    m = Masker([123456789])

    class Thing:
        def __repr__(self) -> str:
            return "Thing(key=123456789)"

    out = m.deep({"n": 123456789, "b": b"x 123456789", "o": Thing(), "ok": 5, "e": ev.Phase.METHOD})
    assert out["n"] == MASK and out["b"] == "x ***" and out["o"] == "Thing(key=***)"
    assert out["ok"] == 5 and out["e"] is ev.Phase.METHOD


def test_the_event_bus_masks_before_any_consumer_sees_an_event() -> None:
    bus = ev.EventBus(Masker(["Bus-Secret-42"]))
    seen: list[ev.Event] = []
    bus.subscribe(seen.append)
    bus.emit(
        ev.ActivityFinished(
            run_id="r",
            phase=ev.Phase.METHOD,
            name="p Bus-Secret-42",
            activity_type="probe",
            status="failed",
            start=0.0,
            end=1.0,
            output={"Bus-Secret-42": ["x Bus-Secret-42"]},
            error="ValueError: Bus-Secret-42",
            activity={"provider": {"arguments": {"k": "Bus-Secret-42"}}},
        )
    )
    assert "Bus-Secret-42" not in json.dumps(seen[0].to_dict())
    assert seen[0].phase is ev.Phase.METHOD  # enums stay enums


def test_tracked_sources_are_picked_up_when_they_change() -> None:
    live: dict[str, object] = {}
    m = Masker()
    m.track(lambda: live)
    assert m.text("Added-Later-77") == "Added-Later-77"
    live["ctl"] = {"token": "Added-Later-77"}  # e.g. a control adding a secret
    assert m.text("x Added-Later-77") == "x ***"


def test_seal_keeps_references_and_unseal_puts_values_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("H15_SEAL", "Env-Sealed-Value")
    m = Masker()
    m.add("Env-Sealed-Value", ref={"env": "H15_SEAL"})
    record = {"target": "pattern:worker --token=Env-Sealed-Value", "args": {"k": ["Env-Sealed-Value"]}}
    sealed, table = m.seal(record)
    assert "Env-Sealed-Value" not in json.dumps([sealed, table])
    assert list(table) == ["1"] and table["1"]["ref"] == {"env": "H15_SEAL"}
    back, values, problems = unseal(sealed, table, resolve_ref)
    assert back == record and values == ["Env-Sealed-Value"] and problems == []
    monkeypatch.setenv("H15_SEAL", "another value")
    _, _, problems = unseal(sealed, table, resolve_ref)
    assert problems == ["secret 1 (environment variable H15_SEAL) has changed since the fault was injected"]
    monkeypatch.delenv("H15_SEAL")
    _, _, problems = unseal(sealed, table, resolve_ref)
    assert problems == ["secret 1 (environment variable H15_SEAL) cannot be read"]


def test_seal_refuses_a_secret_that_could_not_be_read_again() -> None:
    m = Masker()
    m.track(lambda: {"from-a-control": "Ctl-Only-Secret"})
    with pytest.raises(Unsealable) as info:
        m.seal({"target": "x", "args": {"header": "Bearer Ctl-Only-Secret"}})
    assert info.value.fields == ["args.header"]


def test_experiment_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("H15_ENV", "From-Env-1234")
    monkeypatch.setenv("H15_CFG", "Cfg-Env-5678")
    exp = tmp_path / "e.json"
    raw = {
        "secrets": {"s": {"inline": "Inline-0000", "env": {"type": "env", "key": "H15_ENV"}}},
        "configuration": {
            "db_password": "Named-Pass-1",
            "marked": {"type": "env", "key": "H15_CFG", "secret": True},
            "plain": "not-a-secret",
            "dsn": "postgresql://u:Dsn-Pass-9@h/db",
        },
    }
    exp.write_text(json.dumps(raw))
    (tmp_path / "slo.yaml").write_text("prometheus: {url: 'http://prom:Slo-File-Pw-6@127.0.0.1:9090'}\n")
    raw["slo_files"] = ["slo.yaml"]
    vf = tmp_path / "vars.yaml"
    vf.write_text("secrets:\n  s:\n    inline: VarFile-Sec-3\nconfiguration:\n  api_token: VarFile-Tok-4\n")
    m = add_experiment_secrets(
        Masker(), raw=raw, source=str(exp), variables={"auth_key": "Var-Auth-5"}, var_files=[str(vf)]
    )
    text = " ".join(
        [
            "From-Env-1234",
            "Cfg-Env-5678",
            "Inline-0000",
            "Named-Pass-1",
            "Dsn-Pass-9",
            "VarFile-Sec-3",
            "VarFile-Tok-4",
            "Var-Auth-5",
            "Slo-File-Pw-6",
            "not-a-secret",
        ]
    )
    assert m.text(text) == " ".join([MASK] * 9 + ["not-a-secret"])
    assert resolve_ref({"file": str(exp), "keys": ["secrets", "s", "inline"]}) == "Inline-0000"
    assert resolve_ref({"file": str(vf), "keys": ["secrets", "s", "inline"]}) == "VarFile-Sec-3"


def test_scheduler_history_reason_and_webhook_body_are_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chaoslab.scheduler.notify import Notice, Notifier
    from chaoslab.scheduler.runs import LOG_FILE, StepPlan, read_result

    monkeypatch.setenv("H15_STEP", "Step-Env-Secret-1")
    exp = tmp_path / "e.json"
    exp.write_text(json.dumps({"secrets": {"s": {"k": {"type": "env", "key": "H15_STEP"}}}}))
    step = StepPlan(name="s", experiment=exp, vars={}, continue_on=frozenset())
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # a run that died before its engine: the history's reason is its log's tail
    (run_dir / LOG_FILE).write_text("error: cannot reach https://u:Url-Pw-777@h/ with Step-Env-Secret-1\n")
    result = read_result(step, run_dir, returncode=5)
    assert result is not None
    assert result.reason == "error: cannot reach https://u:***@h/ with ***"
    notice = Notice(
        event="finish",
        scenario="s",
        slot="t",
        status="finished",
        detail="webhook saw Step-Env-Secret-1",
        steps=({"name": "s", "verdict": "error", "exit_code": 5, "reason": "Step-Env-Secret-1"},),
    )
    body = json.dumps(Notifier(targets=(), masker=Masker(["Step-Env-Secret-1"])).body(notice))
    assert "Step-Env-Secret-1" not in body and "webhook saw ***" in body


@settings(max_examples=200, deadline=None)
@given(
    secret=secrets.filter(lambda s: "${" not in s),
    before=texts.filter(lambda t: "${" not in t),
    after=texts.filter(lambda t: "${" not in t),
    other=texts.filter(lambda t: "${" not in t),
)
def test_seal_then_unseal_gives_back_the_record_and_seals_every_copy(
    secret: str, before: str, after: str, other: str
) -> None:
    m = Masker()
    m.add(secret, ref={"env": "H15_PROP"})
    record = {
        "target": before + secret + after,
        "args": {"list": [secret, other], "n": 1, "flag": True},
        "data": {"k": other},
    }
    sealed, table = m.seal(record)
    strings = [sealed["target"], *sealed["args"]["list"], sealed["data"]["k"]]
    assert all(secret not in x for x in strings)
    back, values, problems = unseal(sealed, table, lambda ref: secret)
    assert problems == [] and values == [secret]
    assert back["args"]["list"][0] == secret and secret in back["target"]
    if all(m.text(x) == x for x in (before, after, other)):
        assert back == record  # nothing else secret-like: the record comes back whole
