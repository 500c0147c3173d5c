"""Notifications: a webhook POST with a Slack-compatible JSON body on start, finish, abort.

The body is what Slack's incoming webhooks accept (``text`` as the fallback plus one
``section`` block in mrkdwn); Mattermost, Rocket.Chat and Teams' Slack-compatible
endpoints accept it too, and a plain HTTP receiver gets a readable JSON document with the
machine-readable facts under ``chaoslab``.

Events: ``start`` (a slot's run begins), ``finish`` (it ended with a verdict), ``abort``
(a gate refused the slot, or the run was aborted, interrupted or left a target not
clean). A notification that cannot be delivered is logged and returned, never raised:
a chat outage must not stop a scheduled run or its revert.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chaoslab.masking import Masker, output_masker
from chaoslab.scheduler.scenario import Notify

log = logging.getLogger("chaoslab.scheduler")

_ICONS = {"start": ":arrow_forward:", "finish": ":white_check_mark:", "abort": ":octagonal_sign:"}
_ATTEMPTS = 2


@dataclass(frozen=True, kw_only=True)
class Notice:
    event: str  # start | finish | abort
    scenario: str
    slot: str
    status: str
    verdict: str | None = None
    detail: str = ""
    steps: Sequence[Mapping[str, Any]] = field(default_factory=tuple)


def slack_body(notice: Notice) -> dict[str, Any]:
    """The JSON body for ``notice``."""
    head = f"chaoslab {notice.event}: scenario *{notice.scenario}*, slot {notice.slot}"
    lines = [head, f"status: {notice.status}" + (f", verdict: *{notice.verdict}*" if notice.verdict else "")]
    if notice.detail:
        lines.append(notice.detail)
    for s in notice.steps:
        lines.append(f"• {s.get('name')}: {s.get('verdict')} (exit {s.get('exit_code')})")
    text = "\n".join(lines)
    icon = _ICONS.get(notice.event, "")
    if notice.event == "finish" and notice.verdict not in (None, "passed"):
        icon = ":warning:"
    return {
        "text": f"{icon} {head}".strip(),
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": f"{icon} {text}".strip()}}],
        "chaoslab": {
            "event": notice.event,
            "scenario": notice.scenario,
            "slot": notice.slot,
            "status": notice.status,
            "verdict": notice.verdict,
            "detail": notice.detail,
            "steps": [dict(s) for s in notice.steps],
        },
    }


@dataclass(frozen=True, kw_only=True)
class Notifier:
    """Sends notices to a scenario's webhooks."""

    targets: Sequence[Notify]
    timeout_s: float = 5.0
    env: Mapping[str, str] | None = None
    masker: Masker | None = None  # default: this process's output masker

    def body(self, notice: Notice) -> dict[str, Any]:
        """The JSON body, masked: every webhook payload passes through here."""
        masker = self.masker or output_masker() or Masker()
        masked: dict[str, Any] = masker.deep(slack_body(notice))
        return masked

    def send(self, notice: Notice) -> list[str]:
        """POST ``notice`` to every webhook subscribed to its event; returns the failures."""
        import httpx

        failures: list[str] = []
        env = self.env if self.env is not None else os.environ
        for target in self.targets:
            if notice.event not in target.events:
                continue
            url = target.url or env.get(target.url_env or "", "")
            if not url:
                failures.append(f"webhook variable {target.url_env} is not set")
                continue
            last = ""
            for _ in range(_ATTEMPTS):
                try:
                    response = httpx.post(url, json=self.body(notice), timeout=self.timeout_s)
                    if response.status_code < 300:
                        last = ""
                        break
                    last = f"HTTP {response.status_code}"
                except httpx.HTTPError as exc:
                    last = f"{type(exc).__name__}: {exc}"
            if last:
                # The URL of a Slack webhook is a secret: name only its host.
                failures.append(f"webhook {httpx.URL(url).host}: {last}")
        for f in failures:
            log.warning(
                "notification %s for %s %s not delivered: %s", notice.event, notice.scenario, notice.slot, f
            )
        return failures
