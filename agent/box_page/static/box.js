// The box page: polls /api/state every 2 s, refreshes each camera's preview at the console's rate, sends
// commands after a confirmation. Everything comes from this box; nothing is fetched from elsewhere.
// A native ES module: the helpers both pages share are /pages.js (agent/web/static/pages.js).
import { $, HttpError, ago, clock, el, fmt, getJSON, postJSON, replyLine, since } from "./pages.js";

/** @typedef {import("./pages.js").CommandForm} CommandForm */
/** @typedef {import("./pages.js").CommandReply} CommandReply */

// The documents it reads are declared in agent/box_page/documents.py; their types are generated from the models' JSON
// Schemas (docs/schemas/pages/box_*) into agent/web/static/types/box_page.d.ts (npm run page-types).
/** GET /api/state (documents.PageState). @typedef {import("../../web/static/types/box_page").BoxPageState} BoxState */
/** @typedef {import("../../web/static/types/box_page").RecentOutput} RecentOutput */

let previewFps = 2;
/** @type {string[]} */
let cameras = [];
/** @type {Record<string, number>} */
let previewTimers = {};

/**
 * A two-column table: a name and its value on each row.
 * @param {HTMLElement} table
 * @param {Array<[string, number | string | boolean | null | undefined]>} pairs
 */
function rows(table, pairs) {
  table.replaceChildren(...pairs.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, fmt(v, 0)))));
}

/** @param {BoxState} state */
function render(state) {
  const st = state.status, health = state.health;
  $("title").textContent = `${st.device || "edge-agent"} · ${st.site || ""}`;
  const badge = $("health");
  badge.textContent = health.verdict + (state.source === "file" ? " (from status.json)" : "");
  badge.className = "badge " + ["ok", "warn", "bad", "bad"][health.code];
  $("updated").textContent = `agent ${st.agent_version} · updated ${clock()}`;
  $("problems-card").hidden = health.problems.length === 0;
  $("problems").replaceChildren(...health.problems.map((p) => el("li", {}, p)));
  const cams = st.cameras || {};
  const body = $("cameras", HTMLTableElement).tBodies[0];
  body.replaceChildren(...Object.keys(cams).sort().map((name) => {
    const c = cams[name];
    const cls = c.state === "streaming" ? "ok" : (["reconnecting", "stalled", "error"].includes(c.state || "") ? "bad" : "warn");
    return el("tr", {}, el("td", {}, name), el("td", { className: cls }, c.state + (c.reason ? `: ${c.reason}` : "")),
      el("td", {}, fmt(c.fps)), el("td", {}, fmt(c.dropped, 0)), el("td", {}, fmt(c.reconnects, 0)),
      el("td", {}, fmt(c.alerts, 0)), el("td", {}, fmt(c.samples, 0)), el("td", {}, c.latency_p99_ms == null ? "-" : `${fmt(c.latency_p99_ms, 0)} ms`));
  }));
  // a section the daemon could not read is an error; one of a part that does not run, empty
  const ota = state.ota && "active" in state.ota ? state.ota : null, trial = ota?.probation, q = ota?.queued;
  const m = "name" in st.model ? st.model : null, modelError = "error" in st.model ? st.model.error : null;
  // the daemon's own view of the trial: probation counts from when it serves the release, in running time
  const live = st.model_updates?.probation;
  const served = live && live.served_by_daemon ? `served ${fmt(live.served_s, 0)} of ${fmt(live.period_s, 0)} s` : "not served by the daemon yet";
  rows($("model"), [["name", m?.name], ["version", m?.version], ["sha256", (m?.sha256 || "").slice(0, 16)], ["file", m?.path],
    ["OTA active", ota?.active ? `${ota.active.name} ${ota.active.version}` : (state.ota ? "-" : "OTA not configured")],
    ["probation", trial ? `on trial: ${served} (${trial.starts} starts, ${trial.crashes} crashes, ${trial.power_losses || 0} power losses)` : (ota?.active ? "committed" : "-")],
    ["queued", q ? `${q.release.name} ${q.release.version}: verified, installs when the probation ends (from ${q.source})` : "-"],
    ["last OTA event", st.ota ? `${st.ota.kind}${st.ota.detail ? ": " + st.ota.detail : ""}` : "-"], ["error", modelError]]);
  const sp = "items" in st.spool ? st.spool : null, byKind = sp?.by_kind || {}, oldest = sp?.oldest_by_kind || {};
  rows($("spool"), [["items", sp?.items], ["bytes", sp?.bytes], ...Object.keys(byKind).sort().map(
    (k) => /** @type {[string, string]} */ ([k, `${byKind[k]} (oldest ${ago(since(oldest[k]))})`]))]);
  const mq = "connected" in st.mqtt ? st.mqtt : null;
  rows($("mqtt"), [["connected", mq?.connected ? "yes" : "no"], ["down since", mq?.down_since], ["last CONNACK", mq?.last_connack],
    ["connects", mq?.connects], ["disconnects", mq?.disconnects], ["published / acked", `${fmt(mq?.published, 0)} / ${fmt(mq?.acked, 0)}`],
    ["commands", mq?.commands]]);
  thumbs($("alerts"), state.alerts); thumbs($("samples"), state.samples);
  previewFps = state.preview_fps || 1;
  const names = Object.keys(cams).sort();
  if (names.join() !== cameras.join()) { cameras = names; buildPreviews(); }
}

/**
 * @param {HTMLElement} box
 * @param {RecentOutput[]} items
 */
function thumbs(box, items) {
  box.replaceChildren(...(items.length ? items.map((o) => {
    const f = el("figure");
    if (o.image) f.append(el("img", { src: o.image, alt: o.what }));
    f.append(el("figcaption", {}, `${o.camera} · ${o.what} · ${clock(o.at)} · ${o.detail}`));
    return f;
  }) : [el("span", { className: "mute" }, "none yet")]));
}

function buildPreviews() {
  Object.values(previewTimers).forEach(clearTimeout); previewTimers = {};
  const box = $("previews"), select = $("cmd-camera", HTMLSelectElement);
  box.replaceChildren(); select.replaceChildren(...cameras.map((c) => el("option", { value: c }, c)));
  for (const name of cameras) {
    const img = el("img", { alt: `preview of ${name}` }), cap = el("figcaption", {}, "waiting for a frame");
    const wrap = el("div", { className: "preview" }, el("figure", {}, img, cap)); wrap.dataset.camera = name; box.append(wrap);
    const tick = async () => {
      try {
        const r = await fetch(`/api/preview/${encodeURIComponent(name)}.jpg`, { cache: "no-store" });
        if (r.ok) {
          const url = URL.createObjectURL(await r.blob()), old = img.src;
          img.src = url; if (old.startsWith("blob:")) URL.revokeObjectURL(old);
          wrap.dataset.frame = String(r.headers.get("X-Frame-Index"));
          cap.textContent = `${name} · frame ${r.headers.get("X-Frame-Index")} · ${r.headers.get("X-Detections")} detections · ${clock(r.headers.get("X-Captured"))}`;
        } else { cap.textContent = `${name}: ${(/** @type {{ error: string }} */ (await r.json())).error}`; }
      } catch (e) { cap.textContent = `${name}: ${e}`; }
      previewTimers[name] = setTimeout(tick, 1000 / previewFps);
    };
    tick();
  }
}

/**
 * Sends a button's command after the person confirms it, and prints the daemon's reply.
 * @param {CommandForm} form
 * @param {string} question
 */
async function send(form, question) {
  if (!window.confirm(question)) return;
  const log = $("replies");
  try {
    let line;
    try {
      const reply = /** @type {CommandReply} */ (await postJSON("/api/commands", form));
      line = `${reply.request_id}: ${replyLine(reply)}`;
    } catch (e) {
      if (!(e instanceof HttpError)) throw e;
      line = `refused: ${e.message}`;
    }
    log.textContent = `${clock()} ${form.type} -> ${line}\n` + (log.textContent === "replies appear here" ? "" : log.textContent);
  } catch (e) { log.textContent = `${form.type}: ${e}\n` + log.textContent; }
}

$("btn-flag").onclick = () => {
  const camera = $("cmd-camera", HTMLSelectElement).value, seconds = Number($("flag-seconds", HTMLInputElement).value);
  send({ type: "flag_window", camera, seconds, note: $("flag-note", HTMLInputElement).value }, `Flag the next ${seconds} s of ${camera} as misdetections (each frame's detections are sent back for labelling)?`);
};
$("btn-snapshot").onclick = () => { const camera = $("cmd-camera", HTMLSelectElement).value; send({ type: "request_snapshot", camera }, `Request a snapshot of ${camera}?`); };
$("btn-rollback").onclick = () => send({ type: "rollback", reason: $("rollback-reason", HTMLInputElement).value }, "Roll the model back to the previous release?");

async function poll() {
  try { render(/** @type {BoxState} */ (await getJSON("/api/state"))); }
  catch (e) { $("updated").textContent = e instanceof HttpError ? `state: HTTP ${e.status}` : `unreachable: ${e}`; }
  setTimeout(poll, 2000);
}
poll();
