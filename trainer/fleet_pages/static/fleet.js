// The fleet pages: one document, four views chosen by the URL's hash; each view reads its /api/ endpoint
// and redraws every 5 s. Promote and halt ask for confirmation. No outside resources.
// A native ES module: the helpers both pages share are /pages.js (agent/web/static/pages.js).
import { $, clock, el, find, fmt, getJSON, postJSON, replyFields, replyLine, ago } from "./pages.js";

/** @typedef {import("./pages.js").Child} Child */
/** @typedef {import("./pages.js").CommandForm} CommandForm */

// The documents it reads are declared in trainer/fleet_pages/documents.py; their types are generated from the models'
// JSON Schemas (docs/schemas/pages/fleet_*) into agent/web/static/types/fleet_pages.d.ts (npm run page-types).
/** GET /api/fleet. @typedef {import("../../../agent/web/static/types/fleet_pages").FleetDocument} FleetDocument */
/** POST /api/devices/<device>/commands. @typedef {import("../../../agent/web/static/types/fleet_pages").CommandSent} CommandSent */
/** GET /api/rollouts. @typedef {import("../../../agent/web/static/types/fleet_pages").RolloutsDocument} RolloutsDocument */
/** GET /api/rounds. @typedef {import("../../../agent/web/static/types/fleet_pages").RoundsDocument} RoundsDocument */
/** GET /api/samples. @typedef {import("../../../agent/web/static/types/fleet_pages").SamplesDocument} SamplesDocument */
/** @typedef {import("../../../agent/web/static/types/fleet_pages").SampleItem} SampleItem */
/** What drawBoxes() draws of a predicted box (sample_meta.schema.json's Box: the samples pass them on as sent).
 * @typedef {Pick<import("../../../agent/web/static/types/protocol").Box, "x1" | "y1" | "x2" | "y2" | "class_name" | "confidence">} DrawnBox */

/** @typedef {{ site?: string | null, group?: string | null, version?: string | null }} FleetFilters */
/** @typedef {{ device?: string | null, camera?: string | null, reason?: string | null, label_state?: string | null, before?: number }} SampleFilters */
/** @typedef {{ device: string | null, cameras: string[], log: string[] }} Panel */

/** @param {number | null | undefined} t seconds since 1970 */
const when = (t) => t ? new Date(t * 1000).toLocaleString() : "-";
/** @param {string} title @param {boolean} wide @param {...Child} body */
const card = (title, wide, ...body) => el("section", { className: "card" + (wide ? " wide" : "") }, el("h2", {}, title), ...body);
/** @param {string[]} heads @param {HTMLTableRowElement[]} rows */
const table = (heads, rows) => el("table", {}, el("thead", {}, el("tr", {}, ...heads.map((h) => el("th", {}, h)))), el("tbody", {}, ...rows));
/** @param {...Child} cells */
const tr = (...cells) => el("tr", {}, ...cells.map((c) => el("td", {}, c)));
/** @param {string | null} text @param {string} [kind] */
const badge = (text, kind) => el("span", { className: `badge ${kind || ""}` }, text);
/** @type {Record<string, string>} */
const PHASE_KINDS = { committed: "ok", probation: "warn", downloading: "warn", installing: "warn", rolled_back: "bad", failed: "bad" };
/** @param {string | null} p */
const phaseKind = (p) => PHASE_KINDS[String(p)] || "";
/** @param {unknown} e */
const why = (e) => e instanceof Error ? e.message : String(e);
/** @param {Record<string, string | number | null | undefined>} f the filters set, as a query */
const query = (f) => new URLSearchParams(Object.entries(f).flatMap(([k, v]) => v ? [[k, String(v)]] : []));
/** @type {number | undefined} */
let timer;
let lastReply = "";
/** @type {{ fleet: FleetFilters, samples: SampleFilters }} */
const filters = { fleet: {}, samples: {} };
/** @type {Panel} */
let panel = { device: null, cameras: [], log: [] };

/**
 * A filter's choice: all, or one of `values`.
 * @param {string} name
 * @param {string[]} values
 * @param {string | null} current
 * @param {(value: string | null) => void} onchange
 */
function select(name, values, current, onchange) {
  const s = el("select", { id: `filter-${name}` }, el("option", { value: "" }, `all ${name}s`), ...values.map((v) => el("option", { value: v, selected: v === current }, v)));
  s.onchange = () => onchange(s.value || null);
  return el("label", {}, s);
}

async function fleetView() {
  const doc = /** @type {FleetDocument} */ (await getJSON(`/api/fleet?${query(filters.fleet)}`));
  /** @param {keyof FleetFilters} k */
  const set = (k) => (/** @type {string | null} */ v) => { filters.fleet[k] = v; render(); };
  const rows = doc.devices.map((d) => tr(d.device, d.site, d.groups.join(", ") || "-", `${d.model_name || "-"} ${d.model_version || ""}`,
    badge(d.ota_phase || "-", phaseKind(d.ota_phase)), ago(d.last_seen_s), d.state || "-", fmt(d.alerts_per_hour),
    fmt(d.samples_per_hour_total), d.cameras.map((c) => `${c.camera} ${c.state} ${fmt(c.fps)} fps`).join("; ") || "-",
    el("button", { className: "cmd-open", onclick: () => { panel = { device: d.device, cameras: d.cameras.map((c) => c.camera), log: [] }; render(); } }, "commands…")));
  const out = panel.device ? [commandPanel(panel.device)] : [];
  return [...out, card(`Fleet · ${doc.devices.length} devices`, true,
    el("div", { className: "filters" }, select("site", doc.sites, doc.filters.site, set("site")), select("group", doc.groups, doc.filters.group, set("group")),
      select("version", doc.versions, doc.filters.version, set("version"))),
    table(["device", "site", "groups", "model", "OTA", "last seen", "state", "alerts/h", "samples/h", "cameras", ""], rows),
    el("p", { className: "mute" }, `rates over the last ${fmt((doc.window_s || 3600) / 3600, 1)} h`))];
}

/** @param {string} device the device the panel's commands go to */
function commandPanel(device) {
  const camera = el("select", { id: "cmd-camera" }, ...panel.cameras.map((c) => el("option", { value: c }, c)));
  const seconds = el("input", { id: "cmd-seconds", type: "number", min: "1", max: "3600", value: "30", style: "width:5em" });
  const reason = el("input", { id: "cmd-reason", placeholder: "reason" });
  const log = el("pre", { className: "log", id: "device-replies" }, panel.log.join("\n") || "replies appear here");
  /** @param {CommandForm} form @param {string} question */
  const send = async (form, question) => {
    if (!window.confirm(question)) return;
    log.textContent = `${form.type}: sent, waiting for ${device}'s reply…\n` + log.textContent;
    try {
      const doc = /** @type {CommandSent} */ (await postJSON(`/api/devices/${encodeURIComponent(device)}/commands`, form));
      const r = doc.reply;
      const line = r ? `${doc.request_id}: ${replyLine(replyFields(r))}`
        : `${doc.request_id}: no reply within ${doc.waited_s} s (the box may be offline; the broker keeps the command for its session)`;
      panel.log.unshift(`${clock()} ${form.type} -> ${line}`);
    } catch (e) { panel.log.unshift(`${clock()} ${form.type} refused: ${why(e)}`); }
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

/** @param {"promote" | "halt"} kind */
async function rolloutAction(kind) {
  /** @param {string} t */
  const say = (t) => { lastReply = t; const shown = find("rollout-reply"); if (shown) shown.textContent = t; };
  try {
    if (kind === "halt") {
      const reason = $("halt-reason", HTMLInputElement).value.trim();
      if (!reason) { say("give a reason: the devices and the record are told"); return; }
      if (!window.confirm(`Halt the rollout? Every stage's previous push is restored and devices running the new release roll back.\n\nReason: ${reason}`)) return;
      await postJSON("/api/rollouts/halt", { reason });
    } else {
      const force = $("promote-force", HTMLInputElement).checked;
      if (!window.confirm(force ? "Promote the current stage NOW, without waiting for its conditions?" : "Promote the current stage?")) return;
      await postJSON("/api/rollouts/promote", { force });
    }
    say(`${kind}: done`);
  } catch (e) { say(`${kind} refused: ${why(e)}`); }
  render();
}

async function rolloutsView() {
  const doc = /** @type {RolloutsDocument} */ (await getJSON("/api/rollouts"));
  if (!doc.configured) return [card("Rollouts", true, el("p", {}, "trainer.yaml has no rollout section."))];
  const out = [];
  const c = doc.current;
  if (c) {
    const rel = c.release;
    const head = el("div", { className: "row" }, badge(c.state, c.state === "halted" ? "bad" : c.state === "completed" ? "ok" : "warn"),
      el("strong", {}, `${rel.name} ${rel.version} (#${rel.counter})`), el("span", { className: "mute" }, `rollout ${c.id}, started ${when(c.started_at)}`));
    /** @type {HTMLElement[]} */
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
      for (const s of d.signals) signalRows.push(tr(d.device, badge(d.ota_phase || "-", phaseKind(d.ota_phase)), s.name, `${fmt(s.before, 4)} → ${fmt(s.after, 4)} (${s.change})`, s.bound, badge(s.ok ? "ok" : "out of bounds", s.ok ? "ok" : "bad"), d.problem || ""));
    }
    out.push(card("Quality signals against their bounds", true, table(["device", "OTA", "signal", "before → after", "bound", "", "problem"], signalRows),
      el("p", { className: "mute" }, `each device against itself, from ${b.min_frames} frames on each model`)));
    out.push(card("Events", true, el("pre", { className: "log" }, c.events.slice().reverse().map((e) => `${when(e.at)}  ${e.event}  ${e.detail || ""}`).join("\n"))));
  } else out.push(card("Current rollout", true, el("p", {}, "No rollout has been started (edge-trainer rollout start).")));
  out.push(card("All rollouts", true, table(["id", "release", "state", "stage", "started", "halt"], doc.history.map((h) => tr(h.id, h.release, h.state, h.stage, when(h.started_at), h.halt || "")))));
  return out;
}

async function roundsView() {
  const doc = /** @type {RoundsDocument} */ (await getJSON("/api/rounds"));
  if (!doc.configured) return [card("Rounds", true, el("p", {}, "trainer.yaml has no rounds section."))];
  if (!doc.rounds.length) return [card("Rounds", true, el("p", {}, "No learning round yet."))];
  const out = [card("Learning rounds", true, table(["round", "state", "from → candidate", "base mAP50-95", "new-domain mAP50-95", "gate", "why"],
    doc.rounds.map((r) => tr(r.id, badge(r.state, r.state === "published" ? "ok" : r.state === "rejected" || r.state === "failed" ? "bad" : "warn"),
      `${r.from?.version || "-"} → ${r.candidate?.version || "-"}`, `${fmt(r.map50_95.base_before, 3)} → ${fmt(r.map50_95.base_after, 3)}`,
      `${fmt(r.map50_95.new_before, 3)} → ${fmt(r.map50_95.new_after, 3)}`, r.gate ? (r.gate.passed ? "passed" : "rejected") : "-", (r.reasons || []).join("; ") || r.error || ""))))];
  for (const r of doc.rounds) {
    const body = [];
    const pc = Object.entries(r.per_class).sort().map(([name, v]) => tr(name, `${fmt(v.base_before, 3)} → ${fmt(v.base_after, 3)}`, `${fmt(v.new_before, 3)} → ${fmt(v.new_after, 3)}`));
    if (pc.length) body.push(table(["class", "base holdout mAP50-95 before → after", "new-domain holdout before → after"], pc));
    if (r.split) body.push(el("p", {}, `${r.split.train} field samples trained on, ${r.split.holdout} held out; by reason ${JSON.stringify(r.split.by_reason)}; by device ${JSON.stringify(r.split.by_device)}`));
    for (const [name, url] of Object.entries(r.plots)) body.push(el("figure", {}, el("img", { className: "plot", src: url, alt: `${r.id} ${name}` }), el("figcaption", { className: "mute" }, name.replace("_", " "))));
    out.push(card(`Round ${r.id}`, true, ...body));
  }
  return out;
}

/**
 * A prediction of a sample (an object as the device sent it) that has the fields of a box.
 * @param {{ [k: string]: unknown }} p
 * @returns {p is DrawnBox}
 */
function isBox(p) {
  return ["x1", "y1", "x2", "y2", "confidence"].every((k) => typeof p[k] === "number") && typeof p.class_name === "string";
}

/**
 * The sample's image on the canvas, its predicted boxes drawn over it.
 * @param {HTMLCanvasElement} canvas
 * @param {HTMLImageElement} img
 * @param {SampleItem} sample
 */
function drawBoxes(canvas, img, sample) {
  const ctx = canvas.getContext("2d");
  if (!ctx) return;
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  ctx.drawImage(img, 0, 0);
  ctx.lineWidth = Math.max(1, img.naturalWidth / 300); ctx.font = `${Math.max(10, img.naturalWidth / 40)}px sans-serif`;
  for (const p of sample.predictions.filter(isBox)) {
    ctx.strokeStyle = "#f59e0b"; ctx.fillStyle = "#f59e0b";
    ctx.strokeRect(p.x1, p.y1, p.x2 - p.x1, p.y2 - p.y1);
    ctx.fillText(`${p.class_name} ${p.confidence.toFixed(2)}`, p.x1 + 2, Math.max(10, p.y1 - 3));
  }
}

async function samplesView() {
  const doc = /** @type {SamplesDocument} */ (await getJSON(`/api/samples?${query(filters.samples)}`));
  const st = doc.stats;
  /** @param {"device" | "camera" | "reason" | "label_state"} k */
  const set = (k) => (/** @type {string | null} */ v) => { filters.samples[k] = v; render(); };
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

/** @type {Record<string, () => Promise<HTMLElement[]>>} */
const VIEWS = { fleet: fleetView, rollouts: rolloutsView, rounds: roundsView, samples: samplesView };

async function render() {
  clearTimeout(timer);
  const name = (location.hash || "#fleet").slice(1), view = VIEWS[name] || fleetView;
  for (const k of Object.keys(VIEWS)) $(`nav-${k}`).className = k === name ? "here" : "";
  const focused = document.activeElement && document.activeElement.id;
  const typed = find("halt-reason", HTMLInputElement)?.value ?? "";
  try {
    const parts = await view();
    $("page").replaceChildren(...parts);
    const halt = find("halt-reason", HTMLInputElement);
    if (halt) halt.value = typed;
    if (focused) find(focused)?.focus();
    $("updated").textContent = `updated ${clock()}`;
  } catch (e) { $("page").replaceChildren(card("Error", true, el("p", { className: "bad" }, why(e)))); }
  // the samples view and an open command panel refresh on demand (a redraw would lose what is being typed)
  if (name !== "samples" && !(name === "fleet" && panel.device)) timer = setTimeout(render, 5000);
}
window.addEventListener("hashchange", () => { filters.samples.before = undefined; render(); });
render();
