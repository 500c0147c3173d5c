// chaoslab control room: live charts over Server-Sent Events, a self-refreshing Now page,
// the gate score trend. No framework, no CDN; text is set with textContent only.
"use strict";

const MAX_POINTS = 600;
const W = 600;

function polyline(el, pts) {
  el.setAttribute("points", pts.map((p) => p[0].toFixed(1) + "," + p[1].toFixed(1)).join(" "));
}

function liveChart(fig) {
  const svg = fig.querySelector("svg");
  const H = svg.viewBox.baseVal.height;
  const lines = { avail: fig.querySelector("polyline.avail"), p50: fig.querySelector("polyline.p50"), p99: fig.querySelector("polyline.p99") };
  const faultsG = fig.querySelector("g.faults");
  const last = fig.querySelector(".last");
  const ymax = fig.querySelector(".ymax");
  const span = fig.querySelector(".span");
  const ticks = [];
  const faults = new Map(); // fault_id -> [start, end|null]
  let received = 0;

  function draw() {
    if (!ticks.length) return;
    const t0 = ticks[0].ts;
    const t1 = Math.max(ticks[ticks.length - 1].ts, t0 + 1);
    const x = (t) => ((t - t0) / (t1 - t0)) * W;
    let top = 1;
    for (const t of ticks) top = Math.max(top, t.p99_ms || 0, t.p50_ms || 0);
    top *= 1.1;
    const y = (v) => H - (v / top) * H;
    const ya = (a) => H - a * H; // availability: 0..1 over the full height
    polyline(lines.avail, ticks.filter((t) => t.availability != null).map((t) => [x(t.ts), ya(t.availability)]));
    polyline(lines.p50, ticks.filter((t) => t.p50_ms != null).map((t) => [x(t.ts), y(t.p50_ms)]));
    polyline(lines.p99, ticks.filter((t) => t.p99_ms != null).map((t) => [x(t.ts), y(t.p99_ms)]));
    faultsG.replaceChildren();
    for (const [start, end] of faults.values()) {
      const r = document.createElementNS("http://www.w3.org/2000/svg", "rect");
      const a = Math.max(0, x(start));
      const b = Math.min(W, x(end == null ? t1 : end));
      r.setAttribute("x", a.toFixed(1));
      r.setAttribute("width", Math.max(1, b - a).toFixed(1));
      r.setAttribute("y", "0");
      r.setAttribute("height", String(H));
      faultsG.appendChild(r);
    }
    const l = ticks[ticks.length - 1];
    const fmt = (v, d) => (v == null ? "—" : v.toFixed(d));
    last.textContent = "availability " + fmt(l.availability == null ? null : l.availability * 100, 2) + "% · p50 " +
      fmt(l.p50_ms, 1) + " ms · p99 " + fmt(l.p99_ms, 1) + " ms · " + fmt(l.rate, 0) + " req/s";
    ymax.textContent = "latency axis: 0–" + top.toFixed(0) + " ms";
    span.textContent = Math.round(t1 - t0) + " s shown";
    fig.dataset.points = String(received);
  }

  const table = document.querySelector("#run-faults tbody");
  const es = new EventSource(fig.dataset.stream);
  es.addEventListener("sli-tick", (m) => {
    const e = JSON.parse(m.data);
    ticks.push(e);
    received += 1;
    if (ticks.length > MAX_POINTS) ticks.shift();
    draw();
  });
  es.addEventListener("fault-injected", (m) => {
    const e = JSON.parse(m.data);
    faults.set(e.fault_id, [e.ts, null]);
    if (table && !table.querySelector('tr[data-fault="' + CSS.escape(e.fault_id) + '"]')) {
      const tr = document.createElement("tr");
      tr.dataset.fault = e.fault_id;
      for (const v of [e.target, e.driver + "." + e.operation, new Date(e.ts * 1000).toISOString(), e.lease_s]) {
        const td = document.createElement("td");
        td.textContent = v == null ? "" : String(v);
        tr.appendChild(td);
      }
      table.appendChild(tr);
    }
    draw();
  });
  es.addEventListener("fault-reverted", (m) => {
    const e = JSON.parse(m.data);
    const f = faults.get(e.fault_id);
    if (f) f[1] = e.ts;
    if (table) {
      const tr = table.querySelector('tr[data-fault="' + CSS.escape(e.fault_id) + '"]');
      if (tr) tr.remove();
    }
    draw();
  });
  // Phase and guard of this run: in the chart's article (Now page) or the run page.
  const scope = fig.closest("article") || document;
  const setText = (sel, text) => { const el = scope.querySelector(sel); if (el) el.textContent = text; };
  es.addEventListener("phase-started", (m) => setText(".phase", JSON.parse(m.data).phase));
  es.addEventListener("guard-armed", () => setText(".guard", "armed"));
  es.addEventListener("guard-tripped", (m) => setText(".guard", "tripped: " + JSON.parse(m.data).reason));
  es.addEventListener("guard-stopped", (m) => {
    const e = JSON.parse(m.data);
    setText(".guard", e.tripped ? "tripped: " + e.reason : "stopped (did not trip)");
  });
  es.addEventListener("run-finished", (m) => {
    const e = JSON.parse(m.data);
    es.close();
    fig.dataset.finished = e.verdict;
    const v = document.getElementById("verdict");
    if (v) { v.textContent = e.verdict; v.className = "verdict v-" + e.verdict; }
  });
}

function cell(tr, text) {
  const td = document.createElement("td");
  td.textContent = text == null ? "—" : String(text);
  tr.appendChild(td);
}

function nowPage(root) {
  const body = document.querySelector("#faults tbody");
  let busy = false;
  async function refresh() {
    if (busy) return;
    busy = true;
    try {
      const r = await fetch("/api/now", { credentials: "same-origin", headers: { accept: "application/json" } });
      if (!r.ok) return;
      const d = await r.json();
      const ids = d.running.map((x) => x.run.run_id).join(",");
      if (ids !== root.dataset.ids || (d.halted != null) !== (document.getElementById("halt-banner") != null)) {
        location.reload();
        return;
      }
      document.getElementById("generated").textContent = d.generated;
      document.getElementById("fault-count").textContent = String(d.ledger.length);
      const rows = d.ledger.map((f) => {
        const tr = document.createElement("tr");
        tr.dataset.fault = f.fault_id;
        cell(tr, f.target);
        const td = document.createElement("td");
        td.textContent = f.what + " ";
        const sm = document.createElement("small");
        sm.textContent = f.fault_id;
        td.appendChild(sm);
        tr.appendChild(td);
        cell(tr, f.run_id); cell(tr, f.lease_expires); cell(tr, f.lease_left_s); cell(tr, f.owner);
        return tr;
      });
      if (!rows.length) {
        const tr = document.createElement("tr");
        tr.className = "empty";
        const td = document.createElement("td");
        td.colSpan = 6;
        td.textContent = "none";
        tr.appendChild(td);
        rows.push(tr);
      }
      body.replaceChildren(...rows);
    } catch (err) {
      // the server restarting: try again on the next tick
    } finally {
      busy = false;
    }
  }
  setInterval(refresh, 1000);
}

function trend(fig) {
  const pts = JSON.parse(fig.dataset.points || "[]");
  if (pts.length < 1) return;
  const svg = fig.querySelector("svg");
  const H = svg.viewBox.baseVal.height;
  const t0 = pts[0][0];
  const t1 = Math.max(pts[pts.length - 1][0], t0 + 1);
  polyline(fig.querySelector("polyline"), pts.map((p) => [((p[0] - t0) / (t1 - t0)) * W, H - (p[1] / 100) * H]));
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("figure.chart[data-stream]").forEach(liveChart);
  document.querySelectorAll("figure.trend").forEach(trend);
  const running = document.getElementById("running");
  if (running) nowPage(running);
});
