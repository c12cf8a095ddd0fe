// What both pages share (the box page, agent/box_page/static/box.js, and the fleet pages,
// trainer/fleet_pages/static/fleet.js): finding and building elements, formatting figures and times, reading and
// posting JSON, and the command reply both pages print. A native ES module served at /pages.js beside the pages
// (no bundler, nothing fetched from elsewhere); the pages import it as "./pages.js", which the browser resolves to
// /pages.js and tsc to this file (tsconfig.json's rootDirs: the three static folders are one folder when served).

// The documents the pages read are declared once, as pydantic models; their TypeScript types are generated from the
// models' JSON Schemas into agent/web/static/types/ (npm run page-types: tools/page-types.mjs) and imported below
// and in each page's script. Never served (the server serves only the .html / .js / .css files beside a page).

/** A command's reply (agent.protocol.models.CommandReply: docs/schemas/command_reply.schema.json).
 * @typedef {import("./types/protocol").CommandReply} CommandReply */

/** What replyLine() prints of a reply.
 * @typedef {Pick<CommandReply, "status" | "error" | "result">} ReplyFields */

/**
 * What a button sends (agent.web.forms.command_payload reads it).
 * @typedef {{ type: "flag_window", camera: string, seconds: number, note?: string }
 *   | { type: "request_snapshot", camera: string }
 *   | { type: "rollback", reason: string }} CommandForm
 */

/**
 * What el() takes as properties: any of the element's own (style as its CSS text).
 * @template {keyof HTMLElementTagNameMap} K
 * @typedef {Partial<Omit<HTMLElementTagNameMap[K], "style">> & { style?: string }} Props
 */

/** A child for el(): an element, or a value shown as text (null and undefined as "-").
 * @typedef {Node | string | number | boolean | null | undefined} Child */

/**
 * The element with this id, or null; of class `type` when given (an element of another class: null too).
 * @template {HTMLElement} [T=HTMLElement]
 * @param {string} id
 * @param {{ new (): T }} [type]
 * @returns {T | null}
 */
export function find(id, type) {
  const e = document.getElementById(id);
  if (e === null || (type !== undefined && !(e instanceof type))) return null;
  return /** @type {T} */ (e);
}

/**
 * The element with this id, which the page has (of class `type` when given); throws when it has none.
 * @template {HTMLElement} [T=HTMLElement]
 * @param {string} id
 * @param {{ new (): T }} [type]
 * @returns {T}
 */
export function $(id, type) {
  const e = find(id, type);
  if (e === null) throw new Error(`the page has no element #${id}${type ? ` (${type.name})` : ""}`);
  return e;
}

/**
 * A new element with these properties and children.
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Props<K>} [props]
 * @param {...Child} children
 * @returns {HTMLElementTagNameMap[K]}
 */
export function el(tag, props, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, props || {});
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c === null || c === undefined ? "-" : String(c)));
  return e;
}

/**
 * A figure with `digits` decimals (1 unless given); "-" for none; anything else as text.
 * @param {number | string | boolean | null | undefined} value
 * @param {number} [digits]
 * @returns {string}
 */
export function fmt(value, digits) {
  if (value === null || value === undefined) return "-";
  return typeof value === "number" ? value.toFixed(digits === undefined ? 1 : digits) : String(value);
}

/**
 * Seconds since an ISO 8601 time (null for none).
 * @param {string | null | undefined} iso
 * @returns {number | null}
 */
export function since(iso) {
  return iso ? (Date.now() - Date.parse(iso)) / 1000 : null;
}

/**
 * An age in words: "12 s ago", "5 min ago", "2.5 h ago"; "-" for none.
 * @param {number | null | undefined} seconds
 * @returns {string}
 */
export function ago(seconds) {
  if (seconds === null || seconds === undefined) return "-";
  if (seconds < 90) return `${seconds.toFixed(0)} s ago`;
  return seconds < 5400 ? `${(seconds / 60).toFixed(0)} min ago` : `${(seconds / 3600).toFixed(1)} h ago`;
}

/**
 * The local time of day of `time` (a Date, an ISO 8601 text or milliseconds since 1970), now when not given.
 * @param {Date | string | number | null} [time]
 * @returns {string}
 */
export function clock(time) {
  return (time === undefined ? new Date() : new Date(time ?? 0)).toLocaleTimeString();
}

/** An answer of the page's server that is not 2xx: its status and its JSON's error (or "HTTP <status>"). */
export class HttpError extends Error {
  /**
   * @param {number} status
   * @param {string} message
   */
  constructor(status, message) {
    super(message);
    this.name = "HttpError";
    /** @type {number} */
    this.status = status;
  }
}

/**
 * @param {string} path
 * @param {RequestInit} options
 * @returns {Promise<unknown>}
 */
async function request(path, options) {
  const r = await fetch(path, options);
  if (r.ok) return /** @type {unknown} */ (await r.json());
  /** @type {unknown} */
  let error = null;
  try {
    const doc = /** @type {unknown} */ (await r.json());
    if (typeof doc === "object" && doc !== null && "error" in doc) error = doc.error;
  } catch { /* not JSON (a proxy's page): the status says enough */ }
  throw new HttpError(r.status, typeof error === "string" && error ? error : `HTTP ${r.status}`);
}

/**
 * GET a JSON document of the page's server (never from the cache); an answer that is not 2xx: HttpError.
 * What it holds is the caller's to declare (a JSDoc cast to the document's typedef).
 * @param {string} path
 * @returns {Promise<unknown>}
 */
export function getJSON(path) {
  return request(path, { cache: "no-store" });
}

/**
 * POST `body` as JSON to the page's server, and its JSON answer; an answer that is not 2xx: HttpError.
 * @param {string} path
 * @param {unknown} body
 * @returns {Promise<unknown>}
 */
export function postJSON(path, body) {
  return request(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
}

/**
 * A command's reply in one line: its status, error and result ("ok {...}", "error (code: message) ").
 * @param {ReplyFields} reply
 * @returns {string}
 */
export function replyLine(reply) {
  return `${reply.status}${reply.error ? ` (${reply.error.code}: ${reply.error.message})` : ""} ${reply.result ? JSON.stringify(reply.result) : ""}`;
}

/**
 * The fields replyLine() prints, read from a reply that no schema of the page declares (the fleet pages pass on the
 * device's reply as it came): an object that is no command reply is an error reply that says so.
 * @param {{ [k: string]: unknown }} reply
 * @returns {ReplyFields}
 */
export function replyFields(reply) {
  const { status, error, result } = reply;
  if (status !== "ok" && status !== "error") return { status: "error", error: { code: "bad_reply", message: JSON.stringify(reply) } };
  /** @type {ReplyFields} */
  const fields = { status };
  if (typeof error === "object" && error !== null && "code" in error && "message" in error) {
    fields.error = { code: String(error.code), message: String(error.message) };
  }
  if (typeof result === "object" && result !== null) {
    /** @type {Record<string, string | number | boolean | null>} */
    const flat = {};
    for (const [k, v] of Object.entries(result)) {
      flat[k] = v === null || typeof v === "string" || typeof v === "number" || typeof v === "boolean" ? v : JSON.stringify(v);
    }
    fields.result = flat;
  }
  return fields;
}
