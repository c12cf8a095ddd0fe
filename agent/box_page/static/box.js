// The box page: polls /api/state every 2 s, refreshes each camera's preview at the console's rate, sends
// commands after a confirmation. Everything comes from this box; nothing is fetched from elsewhere.
"use strict";
const $ = (id) => document.getElementById(id);
const el = (tag, attrs, text) => { const e = document.createElement(tag); Object.assign(e, attrs || {}); if (text !== undefined) e.textContent = text; return e; };
const fmt = (v, d) => (v === null || v === undefined) ? "-" : (typeof v === "number" ? v.toFixed(d === undefined ? 1 : d) : String(v));
let previewFps = 2, cameras = [], previewTimers = {};

function rows(table, pairs) {
  table.replaceChildren(...pairs.map(([k, v]) => { const tr = el("tr"); tr.append(el("th", {}, k), el("td", {}, fmt(v, 0))); return tr; }));
}

function ago(iso) {
  if (!iso) return "-";
  const s = (Date.now() - Date.parse(iso)) / 1000;
  return s < 90 ? `${s.toFixed(0)} s ago` : s < 5400 ? `${(s / 60).toFixed(0)} min ago` : `${(s / 3600).toFixed(1)} h ago`;
}

function render(state) {
  const st = state.status, health = state.health;
  $("title").textContent = `${st.device || "edge-agent"} · ${st.site || ""}`;
  const badge = $("health");
  badge.textContent = health.verdict + (state.source === "file" ? " (from status.json)" : "");
  badge.className = "badge " + ["ok", "warn", "bad", "bad"][health.code];
  $("updated").textContent = `agent ${st.agent_version} · updated ${new Date().toLocaleTimeString()}`;
  $("problems-card").hidden = health.problems.length === 0;
  $("problems").replaceChildren(...health.problems.map((p) => el("li", {}, p)));
  const cams = st.cameras || {};
  const body = $("cameras").tBodies[0];
  body.replaceChildren(...Object.keys(cams).sort().map((name) => {
    const c = cams[name], tr = el("tr");
    const cls = c.state === "streaming" ? "ok" : (["reconnecting", "stalled", "error"].includes(c.state) ? "bad" : "warn");
    tr.append(el("td", {}, name), el("td", { className: cls }, c.state + (c.reason ? `: ${c.reason}` : "")),
      el("td", {}, fmt(c.fps)), el("td", {}, fmt(c.dropped, 0)), el("td", {}, fmt(c.reconnects, 0)),
      el("td", {}, fmt(c.alerts, 0)), el("td", {}, fmt(c.samples, 0)), el("td", {}, c.latency_p99_ms == null ? "-" : `${fmt(c.latency_p99_ms, 0)} ms`));
    return tr;
  }));
  const m = st.model || {}, ota = state.ota || {}, trial = ota.probation, q = ota.queued;
  // the daemon's own view of the trial: probation counts from when it serves the release, in running time
  const live = (st.model_updates || {}).probation;
  const served = live && live.served_by_daemon ? `served ${fmt(live.served_s, 0)} of ${fmt(live.period_s, 0)} s` : "not served by the daemon yet";
  rows($("model"), [["name", m.name], ["version", m.version], ["sha256", (m.sha256 || "").slice(0, 16)], ["file", m.path],
    ["OTA active", ota.active ? `${ota.active.name} ${ota.active.version}` : (state.ota ? "-" : "OTA not configured")],
    ["probation", trial ? `on trial: ${served} (${trial.starts} starts, ${trial.crashes} crashes, ${trial.power_losses || 0} power losses)` : (ota.active ? "committed" : "-")],
    ["queued", q ? `${q.release.name} ${q.release.version}: verified, installs when the probation ends (from ${q.source})` : "-"],
    ["last OTA event", st.ota ? `${st.ota.kind}${st.ota.detail ? ": " + st.ota.detail : ""}` : "-"], ["error", m.error]]);
  const sp = st.spool || {}, byKind = sp.by_kind || {}, oldest = sp.oldest_by_kind || {};
  rows($("spool"), [["items", sp.items], ["bytes", sp.bytes], ...Object.keys(byKind).sort().map((k) => [k, `${byKind[k]} (oldest ${ago(oldest[k])})`])]);
  const mq = st.mqtt || {};
  rows($("mqtt"), [["connected", mq.connected ? "yes" : "no"], ["down since", mq.down_since], ["last CONNACK", mq.last_connack],
    ["connects", mq.connects], ["disconnects", mq.disconnects], ["published / acked", `${fmt(mq.published, 0)} / ${fmt(mq.acked, 0)}`],
    ["commands", mq.commands]]);
  thumbs($("alerts"), state.alerts); thumbs($("samples"), state.samples);
  previewFps = state.preview_fps || 1;
  const names = Object.keys(cams).sort();
  if (names.join() !== cameras.join()) { cameras = names; buildPreviews(); }
}

function thumbs(box, items) {
  box.replaceChildren(...(items.length ? items.map((o) => {
    const f = el("figure");
    if (o.image) f.append(el("img", { src: o.image, alt: o.what }));
    f.append(el("figcaption", {}, `${o.camera} · ${o.what} · ${new Date(o.at).toLocaleTimeString()} · ${o.detail}`));
    return f;
  }) : [el("span", { className: "mute" }, "none yet")]));
}

function buildPreviews() {
  Object.values(previewTimers).forEach(clearTimeout); previewTimers = {};
  const box = $("previews"), select = $("cmd-camera");
  box.replaceChildren(); select.replaceChildren(...cameras.map((c) => el("option", { value: c }, c)));
  for (const name of cameras) {
    const img = el("img", { alt: `preview of ${name}` }), cap = el("figcaption", {}, "waiting for a frame");
    const fig = el("figure"); fig.append(img, cap);
    const wrap = el("div", { className: "preview" }); wrap.dataset.camera = name; wrap.append(fig); box.append(wrap);
    const tick = async () => {
      try {
        const r = await fetch(`/api/preview/${encodeURIComponent(name)}.jpg`, { cache: "no-store" });
        if (r.ok) {
          const url = URL.createObjectURL(await r.blob()), old = img.src;
          img.src = url; if (old.startsWith("blob:")) URL.revokeObjectURL(old);
          wrap.dataset.frame = r.headers.get("X-Frame-Index");
          cap.textContent = `${name} · frame ${r.headers.get("X-Frame-Index")} · ${r.headers.get("X-Detections")} detections · ${new Date(r.headers.get("X-Captured")).toLocaleTimeString()}`;
        } else { cap.textContent = `${name}: ${(await r.json()).error}`; }
      } catch (e) { cap.textContent = `${name}: ${e}`; }
      previewTimers[name] = setTimeout(tick, 1000 / previewFps);
    };
    tick();
  }
}

async function send(form, question) {
  if (!window.confirm(question)) return;
  const log = $("replies");
  try {
    const r = await fetch("/api/commands", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(form) });
    const body = await r.json();
    const line = r.ok ? `${body.request_id}: ${body.status}${body.error ? ` (${body.error.code}: ${body.error.message})` : ""} ${body.result ? JSON.stringify(body.result) : ""}`
      : `refused: ${body.error}`;
    log.textContent = `${new Date().toLocaleTimeString()} ${form.type} -> ${line}\n` + (log.textContent === "replies appear here" ? "" : log.textContent);
  } catch (e) { log.textContent = `${form.type}: ${e}\n` + log.textContent; }
}

$("btn-flag").onclick = () => {
  const camera = $("cmd-camera").value, seconds = Number($("flag-seconds").value);
  send({ type: "flag_window", camera, seconds, note: $("flag-note").value }, `Flag the next ${seconds} s of ${camera} as misdetections (each frame's detections are sent back for labelling)?`);
};
$("btn-snapshot").onclick = () => { const camera = $("cmd-camera").value; send({ type: "request_snapshot", camera }, `Request a snapshot of ${camera}?`); };
$("btn-rollback").onclick = () => send({ type: "rollback", reason: $("rollback-reason").value }, "Roll the model back to the previous release?");

async function poll() {
  try { const r = await fetch("/api/state", { cache: "no-store" }); if (r.ok) render(await r.json()); else $("updated").textContent = `state: HTTP ${r.status}`; }
  catch (e) { $("updated").textContent = `unreachable: ${e}`; }
  setTimeout(poll, 2000);
}
poll();
