// The fleet pages: one document, four views chosen by the URL's hash; each view reads its /api/ endpoint
// and redraws every 5 s. Promote and halt ask for confirmation. No outside resources.
"use strict";
const $ = (id) => document.getElementById(id);
const el = (tag, attrs, ...children) => {
  const e = document.createElement(tag); Object.assign(e, attrs || {});
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c === null || c === undefined ? "-" : String(c)));
  return e;
};
const num = (v, d) => (v === null || v === undefined) ? "-" : Number(v).toFixed(d === undefined ? 1 : d);
const when = (t) => t ? new Date(t * 1000).toLocaleString() : "-";
const ago = (s) => s === null || s === undefined ? "-" : s < 90 ? `${s.toFixed(0)} s ago` : s < 5400 ? `${(s / 60).toFixed(0)} min ago` : `${(s / 3600).toFixed(1)} h ago`;
const card = (title, wide, ...body) => el("section", { className: "card" + (wide ? " wide" : "") }, el("h2", {}, title), ...body);
const table = (heads, rows) => el("table", {}, el("thead", {}, el("tr", {}, ...heads.map((h) => el("th", {}, h)))), el("tbody", {}, ...rows));
const tr = (...cells) => el("tr", {}, ...cells.map((c) => c instanceof Node ? el("td", {}, c) : el("td", {}, c)));
const badge = (text, kind) => el("span", { className: `badge ${kind || ""}` }, text);
const phaseKind = (p) => ({ committed: "ok", probation: "warn", downloading: "warn", installing: "warn", rolled_back: "bad", failed: "bad" })[p] || "";
let timer = null, lastReply = "", filters = { fleet: {}, samples: {} }, panel = { device: null, cameras: [], log: [] };

async function api(path, body) {
  const options = body === undefined ? { cache: "no-store" } : { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const r = await fetch(path, options);
  const doc = await r.json();
  if (!r.ok) throw new Error(doc.error || `HTTP ${r.status}`);
  return doc;
}

function select(name, values, current, onchange) {
  const s = el("select", { id: `filter-${name}` }, el("option", { value: "" }, `all ${name}s`), ...values.map((v) => el("option", { value: v, selected: v === current }, v)));
  s.onchange = () => onchange(s.value || null);
  return el("label", {}, s);
}

async function fleetView() {
  const q = new URLSearchParams(Object.entries(filters.fleet).filter(([, v]) => v));
  const doc = await api(`/api/fleet?${q}`);
  const set = (k) => (v) => { filters.fleet[k] = v; render(); };
  const rows = doc.devices.map((d) => tr(d.device, d.site, d.groups.join(", ") || "-", `${d.model_name || "-"} ${d.model_version || ""}`,
    badge(d.ota_phase || "-", phaseKind(d.ota_phase)), ago(d.last_seen_s), d.state || "-", num(d.alerts_per_hour),
    num(d.samples_per_hour_total), d.cameras.map((c) => `${c.camera} ${c.state} ${num(c.fps)} fps`).join("; ") || "-",
    el("button", { className: "cmd-open", onclick: () => { panel = { device: d.device, cameras: d.cameras.map((c) => c.camera), log: [] }; render(); } }, "commands…")));
  const out = panel.device ? [commandPanel()] : [];
  return [...out, card(`Fleet · ${doc.devices.length} devices`, true,
    el("div", { className: "filters" }, select("site", doc.sites, doc.filters.site, set("site")), select("group", doc.groups, doc.filters.group, set("group")),
      select("version", doc.versions, doc.filters.version, set("version"))),
    table(["device", "site", "groups", "model", "OTA", "last seen", "state", "alerts/h", "samples/h", "cameras", ""], rows),
    el("p", { className: "mute" }, `rates over the last ${num((doc.window_s || 3600) / 3600, 1)} h`))];
}

function commandPanel() {
  const device = panel.device;
  const camera = el("select", { id: "cmd-camera" }, ...panel.cameras.map((c) => el("option", { value: c }, c)));
  const seconds = el("input", { id: "cmd-seconds", type: "number", min: 1, max: 3600, value: 30, style: "width:5em" });
  const reason = el("input", { id: "cmd-reason", placeholder: "reason" });
  const log = el("pre", { className: "log", id: "device-replies" }, panel.log.join("\n") || "replies appear here");
  const send = async (form, question) => {
    if (!window.confirm(question)) return;
    log.textContent = `${form.type}: sent, waiting for ${device}'s reply…\n` + log.textContent;
    try {
      const doc = await api(`/api/devices/${encodeURIComponent(device)}/commands`, form);
      const r = doc.reply;
      const line = r ? `${doc.request_id}: ${r.status}${r.error ? ` (${r.error.code}: ${r.error.message})` : ""} ${r.result ? JSON.stringify(r.result) : ""}`
        : `${doc.request_id}: no reply within ${doc.waited_s} s (the box may be offline; the broker keeps the command for its session)`;
      panel.log.unshift(`${new Date().toLocaleTimeString()} ${form.type} -> ${line}`);
    } catch (e) { panel.log.unshift(`${new Date().toLocaleTimeString()} ${form.type} refused: ${e.message}`); }
    log.textContent = panel.log.join("\n");
  };
  return card(`Commands to ${device} (over the site broker)`, true,
    el("div", { className: "row" }, el("label", {}, "camera ", camera),
      el("button", { id: "cmd-snapshot", onclick: () => send({ type: "request_snapshot", camera: camera.value }, `Ask ${device} for a snapshot of ${camera.value}?`) }, "Request snapshot"),
      el("label", {}, "flag the next ", seconds, " s"),
      el("button", { id: "cmd-flag", className: "primary", onclick: () => send({ type: "flag_window", camera: camera.value, seconds: Number(seconds.value) }, `Flag the next ${seconds.value} s of ${device}/${camera.value} as misdetections?`) }, "Flag"),
      reason, el("button", { id: "cmd-rollback", className: "danger", onclick: () => send({ type: "rollback", reason: reason.value }, `Roll ${device}'s model back?`) }, "Roll back"),
      el("button", { onclick: () => { panel = { device: null, cameras: [], log: [] }; render(); } }, "close")),
    log);
}

async function rolloutAction(kind) {
  const log = { set textContent(t) { lastReply = t; if ($("rollout-reply")) $("rollout-reply").textContent = t; } };
  try {
    if (kind === "halt") {
      const reason = $("halt-reason").value.trim();
      if (!reason) { log.textContent = "give a reason: the devices and the record are told"; return; }
      if (!window.confirm(`Halt the rollout? Every stage's previous push is restored and devices running the new release roll back.\n\nReason: ${reason}`)) return;
      await api("/api/rollouts/halt", { reason });
    } else {
      const force = $("promote-force").checked;
      if (!window.confirm(force ? "Promote the current stage NOW, without waiting for its conditions?" : "Promote the current stage?")) return;
      await api("/api/rollouts/promote", { force });
    }
    log.textContent = `${kind}: done`;
  } catch (e) { log.textContent = `${kind} refused: ${e.message}`; }
  render();
}

async function rolloutsView() {
  const doc = await api("/api/rollouts");
  if (!doc.configured) return [card("Rollouts", true, el("p", {}, "trainer.yaml has no rollout section."))];
  const out = [];
  const c = doc.current;
  if (c) {
    const rel = c.release;
    const head = el("div", { className: "row" }, badge(c.state, c.state === "halted" ? "bad" : c.state === "completed" ? "ok" : "warn"),
      el("strong", {}, `${rel.name} ${rel.version} (#${rel.counter})`), el("span", { className: "mute" }, `rollout ${c.id}, started ${when(c.started_at)}`));
    const parts = [head];
    if (c.halt) parts.push(el("div", { id: "halt-reason-shown", className: "bad" }, `Halted at stage ${c.stages[c.halt.stage].name}: ${c.halt.reasons.join("; ")}`));
    if (c.last_decision && c.state === "running") parts.push(el("p", {}, `last decision: ${c.last_decision.action}: ${c.last_decision.reasons.join("; ")}`));
    parts.push(table(["stage", "group", "devices", "committed / needed", "watch", "pushed", "promoted"],
      c.stage_rows.map((s) => tr(s.here ? el("strong", {}, `▶ ${s.name}`) : s.name, s.group || "(everyone)",
        s.devices === null ? "not reached" : s.devices.join(", ") || "-", s.devices === null ? `- / ${s.min_committed}` : `${s.committed} / ${s.min_committed}`, `${s.watch_s} s`, s.pushed ? when(s.pushed_at) : "no", s.promoted_at ? when(s.promoted_at) : "-"))));
    if (c.state === "running") {
      parts.push(el("div", { className: "row" }, el("button", { id: "btn-promote", className: "primary", onclick: () => rolloutAction("promote") }, "Promote stage"),
        el("label", {}, el("input", { type: "checkbox", id: "promote-force" }), " force"),
        el("input", { id: "halt-reason", placeholder: "why halt (required)", size: 40 }),
        el("button", { id: "btn-halt", className: "danger", onclick: () => rolloutAction("halt") }, "Halt rollout")));
    }
    parts.push(el("pre", { className: "log", id: "rollout-reply" }, lastReply));
    out.push(card("Current rollout", true, ...parts));
    const b = doc.bounds;
    const signalRows = [];
    for (const d of c.devices) {
      if (!d.signals.length) signalRows.push(tr(d.device, badge(d.ota_phase || "-", phaseKind(d.ota_phase)), `not judged yet (${d.after_frames} frames under the new model)`, "-", "-", "-", d.problem || ""));
      for (const s of d.signals) signalRows.push(tr(d.device, badge(d.ota_phase || "-", phaseKind(d.ota_phase)), s.name, `${num(s.before, 4)} → ${num(s.after, 4)} (${s.change})`, s.bound, badge(s.ok ? "ok" : "out of bounds", s.ok ? "ok" : "bad"), d.problem || ""));
    }
    out.push(card("Quality signals against their bounds", true, table(["device", "OTA", "signal", "before → after", "bound", "", "problem"], signalRows),
      el("p", { className: "mute" }, `each device against itself, from ${b.min_frames} frames on each model`)));
    out.push(card("Events", true, el("pre", { className: "log" }, c.events.slice().reverse().map((e) => `${when(e.at)}  ${e.event}  ${e.detail || ""}`).join("\n"))));
  } else out.push(card("Current rollout", true, el("p", {}, "No rollout has been started (edge-trainer rollout start).")));
  out.push(card("All rollouts", true, table(["id", "release", "state", "stage", "started", "halt"], doc.history.map((h) => tr(h.id, h.release, h.state, h.stage, when(h.started_at), h.halt || "")))));
  return out;
}

async function roundsView() {
  const doc = await api("/api/rounds");
  if (!doc.configured) return [card("Rounds", true, el("p", {}, "trainer.yaml has no rounds section."))];
  if (!doc.rounds.length) return [card("Rounds", true, el("p", {}, "No learning round yet."))];
  const out = [card("Learning rounds", true, table(["round", "state", "from → candidate", "base mAP50-95", "new-domain mAP50-95", "gate", "why"],
    doc.rounds.map((r) => tr(r.id, badge(r.state, r.state === "published" ? "ok" : r.state === "rejected" || r.state === "failed" ? "bad" : "warn"),
      `${(r.from || {}).version || "-"} → ${(r.candidate || {}).version || "-"}`, `${num(r.map50_95.base_before, 3)} → ${num(r.map50_95.base_after, 3)}`,
      `${num(r.map50_95.new_before, 3)} → ${num(r.map50_95.new_after, 3)}`, r.gate ? (r.gate.passed ? "passed" : "rejected") : "-", (r.reasons || []).join("; ") || r.error || ""))))];
  for (const r of doc.rounds) {
    const body = [];
    const pc = Object.entries(r.per_class).sort().map(([name, v]) => tr(name, `${num(v.base_before, 3)} → ${num(v.base_after, 3)}`, `${num(v.new_before, 3)} → ${num(v.new_after, 3)}`));
    if (pc.length) body.push(table(["class", "base holdout mAP50-95 before → after", "new-domain holdout before → after"], pc));
    if (r.split) body.push(el("p", {}, `${r.split.train} field samples trained on, ${r.split.holdout} held out; by reason ${JSON.stringify(r.split.by_reason)}; by device ${JSON.stringify(r.split.by_device)}`));
    for (const [name, url] of Object.entries(r.plots)) body.push(el("figure", {}, el("img", { className: "plot", src: url, alt: `${r.id} ${name}` }), el("figcaption", { className: "mute" }, name.replace("_", " "))));
    out.push(card(`Round ${r.id}`, true, ...body));
  }
  return out;
}

function drawBoxes(canvas, img, sample) {
  const ctx = canvas.getContext("2d");
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  ctx.drawImage(img, 0, 0);
  ctx.lineWidth = Math.max(1, img.naturalWidth / 300); ctx.font = `${Math.max(10, img.naturalWidth / 40)}px sans-serif`;
  for (const p of sample.predictions) {
    ctx.strokeStyle = "#f59e0b"; ctx.fillStyle = "#f59e0b";
    ctx.strokeRect(p.x1, p.y1, p.x2 - p.x1, p.y2 - p.y1);
    ctx.fillText(`${p.class_name} ${p.confidence.toFixed(2)}`, p.x1 + 2, Math.max(10, p.y1 - 3));
  }
}

async function samplesView() {
  const q = new URLSearchParams(Object.entries(filters.samples).filter(([, v]) => v));
  const doc = await api(`/api/samples?${q}`);
  const st = doc.stats, set = (k) => (v) => { filters.samples[k] = v; render(); };
  const grid = el("div", { className: "thumbs", id: "sample-grid" });
  for (const s of doc.samples) {
    const canvas = el("canvas", { style: "width:240px" }), img = new Image();
    img.onload = () => drawBoxes(canvas, img, s); img.src = s.image;
    const links = s.label_studio ? el("a", { href: s.label_studio, target: "_blank", rel: "noopener" }, "Label Studio task") : el("span", { className: "mute" }, "not sent for labelling");
    grid.append(el("figure", { style: "width:240px", className: "sample" }, canvas,
      el("figcaption", {}, `#${s.sid} ${s.device}/${s.camera} · ${s.reason} · ${s.label_state} · ${s.predictions.length} boxes · ${when(s.frame_time)}`, el("br"), links)));
  }
  const more = doc.samples.length ? el("button", { onclick: () => { filters.samples.before = doc.samples[doc.samples.length - 1].sid; render(); } }, "older") : "";
  return [card(`Samples · ${st.samples} stored`, true,
    el("div", { className: "filters" }, select("device", Object.keys(st.by_device), doc.filters.device, set("device")), select("camera", st.cameras, doc.filters.camera, set("camera")),
      select("reason", Object.keys(st.by_reason), doc.filters.reason, set("reason")), select("label_state", Object.keys(st.by_label_state), doc.filters.label_state, set("label_state"))),
    grid, el("div", { className: "row" }, more))];
}

const VIEWS = { fleet: fleetView, rollouts: rolloutsView, rounds: roundsView, samples: samplesView };

async function render() {
  clearTimeout(timer);
  const name = (location.hash || "#fleet").slice(1), view = VIEWS[name] || fleetView;
  for (const k of Object.keys(VIEWS)) $(`nav-${k}`).className = k === name ? "here" : "";
  const focused = document.activeElement && document.activeElement.id;
  const typed = $("halt-reason") ? $("halt-reason").value : "";
  try {
    const parts = await view();
    $("page").replaceChildren(...parts);
    if ($("halt-reason")) $("halt-reason").value = typed;
    if (focused && $(focused)) $(focused).focus();
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) { $("page").replaceChildren(card("Error", true, el("p", { className: "bad" }, e.message))); }
  // the samples view and an open command panel refresh on demand (a redraw would lose what is being typed)
  if (name !== "samples" && !(name === "fleet" && panel.device)) timer = setTimeout(render, 5000);
}
window.addEventListener("hashchange", () => { filters.samples.before = undefined; render(); });
render();
