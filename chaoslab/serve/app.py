"""The control room's Starlette application.

Pages are rendered on the server (Jinja2, autoescaped, every value passed through the
app's ``Masker`` by the environment's ``finalize``), and one static script draws the
live chart from ``/runs/<id>/stream`` (Server-Sent Events tailing the run's
``events.ndjson``) and refreshes the Now page from ``/api/now``. Nothing is loaded from
another origin: the Content-Security-Policy allows only this server.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from chaoslab.masking import Masker
from chaoslab.serve import views
from chaoslab.serve.auth import SESSION_COOKIE, SESSION_S, AuditLog, Auth, Identity, clean_name
from chaoslab.serve.runs import EVENTS, EventTail, RunIndex

HERE = Path(__file__).parent
SSE_POLL_S = 0.2
SSE_KEEPALIVE_S = 10.0
SSE_MAX_S = 6 * 3600.0  # a stream ends by itself; the browser reconnects
_LIVE_KINDS = {
    "sli-tick",
    "fault-injected",
    "fault-reverted",
    "phase-started",
    "guard-tripped",
    "run-finished",
}
_SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self';"
    " script-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'",
    "x-frame-options": "DENY",  # nobody may frame the big red button
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class Control:
    """Everything the handlers share: sources, auth, audit, masker, caches."""

    sources: views.Sources
    auth: Auth
    open_views: bool  # pages readable without logging in (loopback bind)
    halt_grace_s: float = 10.0
    masker: Masker = field(default_factory=Masker)
    index: RunIndex = field(init=False)
    audit: AuditLog = field(init=False)
    budget_cache: views.BudgetCache = field(init=False)

    def __post_init__(self) -> None:
        self.index = RunIndex(self.sources.run_roots)
        self.audit = AuditLog(self.sources.home / "serve-audit.ndjson")
        self.budget_cache = views.BudgetCache(self.sources)
        if self.sources.store_url:
            self.masker.add_url_credentials(self.sources.store_url)
        if self.sources.prometheus_url:
            self.masker.add_url_credentials(self.sources.prometheus_url)


def _environment(masker: Masker) -> jinja2.Environment:
    def finalize(value: Any) -> Any:
        return masker.text(value) if isinstance(value, str) else value

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        finalize=finalize,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["iso"] = views.iso
    env.filters["pct"] = lambda v: "—" if v is None else f"{100 * v:.3f}%"
    return env


def create_app(control: Control) -> ASGIApp:
    env = _environment(control.masker)

    def who(request: Request) -> Identity | None:
        return control.auth.identify(request.headers, request.cookies)

    def page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        me = who(request)
        body = env.get_template(template).render(
            me=me,
            csrf=control.auth.csrf(me) if me else "",
            halted=views.now_halted(control.sources.home),
            path=request.url.path,
            **context,
        )
        return HTMLResponse(body, status_code=status)

    def json_response(data: Any, status: int = 200) -> JSONResponse:
        return JSONResponse(control.masker.deep(data), status_code=status)

    async def now_page(request: Request) -> Response:
        data = await run_in_threadpool(views.now, control.sources, control.index, control.masker)
        return page(request, "now.html", now=data)

    async def now_api(request: Request) -> Response:
        data = await run_in_threadpool(views.now, control.sources, control.index, control.masker)
        return json_response(data)

    async def history_page(request: Request) -> Response:
        q = request.query_params
        try:
            number = int(q.get("page", "1"))
        except ValueError:
            number = 1
        data = await run_in_threadpool(
            lambda: views.history(
                control.index,
                control.sources.home,
                experiment=q.get("experiment", ""),
                tag=q.get("tag", ""),
                verdict=q.get("verdict", ""),
                page=number,
            )
        )
        gates = await run_in_threadpool(views.gates, control.sources.run_roots)
        base = {k: v for k, v in data["filters"].items() if v}
        return page(
            request,
            "history.html",
            h=data,
            gates=gates,
            gate_points=json.dumps([[g["ts"], g["score"]] for g in gates if g["score"] is not None]),
            prev_url="?" + urlencode({**base, "page": data["page"] - 1}),
            next_url="?" + urlencode({**base, "page": data["page"] + 1}),
        )

    async def run_page(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        summary = await run_in_threadpool(control.index.find, run_id)
        if summary is None:
            return page(request, "error.html", status=404, message=f"no run {run_id} under the run roots")
        live = views.live_run_ids(control.sources.home)
        state = await run_in_threadpool(views.run_live_state, summary)
        return page(request, "run.html", run=views.summary_dict(summary, live), live=state)

    async def report(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        summary = await run_in_threadpool(control.index.find, run_id)
        if summary is None or not summary.has_journal:
            return page(request, "error.html", status=404, message=f"run {run_id} has no journal (yet)")

        def render() -> str:
            from chaoslab.report.html import render_html
            from chaoslab.report.view import RunView, load_journal

            return render_html(RunView.from_journal(load_journal(summary.directory / "journal.json")))

        try:
            html = await run_in_threadpool(render)
        except Exception as exc:  # a damaged journal is shown as such, never as a 500 page
            return page(request, "error.html", status=422, message=f"cannot render the report: {exc}")
        resp = HTMLResponse(control.masker.text(html))
        # The report carries its own inline style and SVG: allow that page alone to use them.
        resp.headers["content-security-policy"] = (
            "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'"
        )
        return resp

    async def stream(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        summary = await run_in_threadpool(control.index.find, run_id)
        if summary is None:
            return PlainTextResponse(f"no run {run_id}\n", status_code=404)
        tail = EventTail(summary.directory / EVENTS)

        async def events() -> AsyncIterator[str]:
            started = last_sent = time.monotonic()
            yield "retry: 1000\n\n"
            while time.monotonic() - started < SSE_MAX_S:
                batch = tail.read()
                for e in batch:
                    kind = e.get("kind")
                    if kind not in _LIVE_KINDS:
                        continue
                    yield f"event: {kind}\ndata: {control.masker.text(json.dumps(e, default=str))}\n\n"
                    last_sent = time.monotonic()
                    if kind == "run-finished":
                        return
                if time.monotonic() - last_sent > SSE_KEEPALIVE_S:
                    yield ": keep-alive\n\n"
                    last_sent = time.monotonic()
                await asyncio.sleep(SSE_POLL_S)

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"x-accel-buffering": "no"}
        )

    async def calendar_page(request: Request) -> Response:
        data = await run_in_threadpool(views.calendar, control.sources)
        return page(request, "calendar.html", cal=data)

    async def budgets_page(request: Request) -> Response:
        data = await run_in_threadpool(control.budget_cache.get)
        return page(request, "budgets.html", b=data)

    async def login(request: Request) -> Response:
        if request.method == "GET":
            return page(
                request, "login.html", next=_safe_next(request.query_params.get("next", "/")), error=""
            )
        form = await _form(request)
        name = clean_name(str(form.get("name", "")))
        nxt = _safe_next(str(form.get("next", "/")))
        if not control.auth.token_ok(str(form.get("token", ""))):
            control.audit.record("login-refused", by=name, remote=_remote(request))
            return page(request, "login.html", status=401, next=nxt, error="wrong token")
        resp = RedirectResponse(nxt, status_code=303)
        resp.set_cookie(
            SESSION_COOKIE,
            control.auth.session_cookie(name),
            max_age=SESSION_S,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return resp

    async def logout(request: Request) -> Response:
        resp = RedirectResponse("/", status_code=303)
        resp.delete_cookie(SESSION_COOKIE)
        return resp

    async def halt_page(request: Request) -> Response:
        return page(request, "halt.html", audit=control.audit.tail(10), result=None)

    async def act(
        request: Request, action: str, do: Callable[[Identity, str], Awaitable[dict[str, Any]]]
    ) -> Response:
        me = who(request)
        form = await _form(request)
        refusal = _refusal(request, me, control.auth, str(form.get("csrf", "")))
        if refusal is not None:
            control.audit.record(
                f"{action}-refused", by=me.name if me else None, remote=_remote(request), why=refusal
            )
            status = 401 if me is None else 403
            resp = page(request, "error.html", status=status, message=f"{action} refused: {refusal}")
            return resp
        assert me is not None
        if form.get("confirm") != "yes":
            return page(
                request, "error.html", status=400, message=f"{action}: not confirmed; nothing was done"
            )
        reason = str(form.get("reason", ""))[:500]
        result = await do(me, reason)
        control.audit.record(
            action, by=me.name, auth=me.method, remote=_remote(request), reason=reason, result=result
        )
        if request.headers.get("accept", "").startswith("application/json"):
            return json_response({"action": action, "by": me.name, "result": result})
        return page(request, "halt.html", audit=control.audit.tail(10), result={"action": action, **result})

    async def do_halt(me: Identity, reason: str) -> dict[str, Any]:
        from chaoslab.safety.halt import halt

        by = f"{me.name} via chaoslab serve ({me.method})"
        report = await run_in_threadpool(
            lambda: halt(
                reason=reason or "halted from the control room",
                grace_s=control.halt_grace_s,
                home=control.sources.home,
                by=by,
            )
        )
        data: dict[str, Any] = control.masker.deep(report.to_dict())
        data["lines"] = [control.masker.text(line) for line in report.lines()]
        return data

    async def do_release(me: Identity, reason: str) -> dict[str, Any]:
        from chaoslab.safety.halt import release

        state = await run_in_threadpool(release, control.sources.home)
        text = f"released the halt ({state.describe()})" if state else "there was no halt to release"
        return {"lines": [control.masker.text(text)], "released": state is not None}

    async def halt_action(request: Request) -> Response:
        return await act(request, "halt", do_halt)

    async def release_action(request: Request) -> Response:
        return await act(request, "release", do_release)

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    routes = [
        Route("/", now_page),
        Route("/api/now", now_api),
        Route("/history", history_page),
        Route("/runs/{run_id}", run_page),
        Route("/runs/{run_id}/report", report),
        Route("/runs/{run_id}/stream", stream),
        Route("/calendar", calendar_page),
        Route("/budgets", budgets_page),
        Route("/halt", halt_page, methods=["GET"]),
        Route("/halt", halt_action, methods=["POST"]),
        Route("/release", release_action, methods=["POST"]),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/healthz", healthz),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]

    async def guard(scope: Scope, receive: Receive, send: Send) -> None:
        """Pages need a login off loopback; every response carries the security headers."""
        if scope["type"] != "http":
            await inner(scope, receive, send)
            return
        request = Request(scope)
        path = request.url.path
        open_path = path in ("/login", "/healthz") or path.startswith("/static/")
        if not control.open_views and not open_path and who(request) is None:
            if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
                resp: Response = RedirectResponse("/login?" + urlencode({"next": path}), 303)
            else:
                resp = PlainTextResponse(
                    "authentication required: log in at /login, or send the token\n", 401
                )
                if "sec-fetch-mode" not in request.headers:
                    # A script or curl: offer Basic. Never to a browser, whose fetch would
                    # wait on a password prompt instead of seeing the 401.
                    resp.headers["www-authenticate"] = 'Basic realm="chaoslab control room"'

            await with_headers(resp)(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for k, v in _SECURITY_HEADERS.items():
                    if k not in headers:
                        headers[k] = v
            await send(message)

        await inner(scope, receive, send_with_headers)

    def with_headers(resp: Response) -> Response:
        for k, v in _SECURITY_HEADERS.items():
            resp.headers.setdefault(k, v)
        return resp

    inner = Starlette(routes=routes)
    return guard


async def _form(request: Request, limit: int = 64 << 10) -> dict[str, str]:
    """An url-encoded form body (the only kind these pages send), at most ``limit`` bytes.

    Parsed here rather than by Starlette's ``request.form()``, which needs
    python-multipart for a job ``parse_qsl`` does."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return {}
    pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=50)
    return dict(pairs)


def _remote(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def _safe_next(value: str) -> str:
    """Only a path on this server (no open redirect)."""
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or not value.startswith("/") or value.startswith("//"):
        return "/"
    return value


def _refusal(request: Request, me: Identity | None, auth: Auth, csrf: str) -> str | None:
    """Why an action request is refused, or None."""
    if me is None:
        return "not authenticated (log in, or send the token)"
    origin = request.headers.get("origin")
    if origin is not None and origin != "null":
        own = f"{request.url.scheme}://{request.headers.get('host', '')}"
        if origin != own:
            return f"cross-origin request from {origin}"
    if me.method != "bearer" and not auth.csrf_ok(me, csrf):
        return "missing or wrong CSRF token (reload the page and try again)"
    return None
