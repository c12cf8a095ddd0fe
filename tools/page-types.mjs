// The pages' document types, generated from their committed JSON Schemas (which the pydantic models write:
// python -m agent.box_page.documents / trainer.fleet_pages.documents docs/schemas/pages), so that the models stay
// the one declaration: box.js, fleet.js and pages.js import these types in JSDoc instead of declaring their own.
//
//   node tools/page-types.mjs [OUT]     (npm run page-types; OUT: agent/web/static/types)
//
// One declaration file a page: box_page.d.ts (docs/schemas/pages/box_*), fleet_pages.d.ts (fleet_*), and
// protocol.d.ts: the MQTT messages the pages show (docs/schemas/command_reply.schema.json, the reply both pages
// print; sample_meta.schema.json, whose boxes the fleet's samples pass on as the device sent them). The schemas of a
// page are merged into one before compiling, so a model that two of its documents share is declared once; its root
// type names each document's type after the schema's file. Properties lose their title (pydantic's "Device",
// "Error", ...), which would each become a type alias of its own; models keep theirs; a model whose schema repeats
// another's properties (a pydantic subclass: CurrentRollout of RolloutState) extends it. The output depends on the
// schemas and json-schema-to-typescript's pinned version only (no date, no path of this machine): make lint
// regenerates it into a temporary folder and compares.
import { mkdir, readFile, readdir, writeFile } from "node:fs/promises";
import { isDeepStrictEqual } from "node:util";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { compile } from "json-schema-to-typescript";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const PAGES = "docs/schemas/pages";
const OUT = "agent/web/static/types";

/**
 * An output file: its name, its root type, what it declares, and its schemas: those of docs/schemas/pages whose name
 * starts with `prefix`, or the `schemas` listed (paths from the repository's root).
 * @typedef {{ file: string, title: string, what: string, prefix?: string, schemas?: string[] }} Group
 */

/** @type {Group[]} */
const GROUPS = [
  { file: "box_page.d.ts", title: "BoxPageDocuments", what: "The box page's documents (agent/box_page/documents.py)", prefix: "box_" },
  { file: "fleet_pages.d.ts", title: "FleetPagesDocuments", what: "The fleet pages' documents (trainer/fleet_pages/documents.py)", prefix: "fleet_" },
  {
    file: "protocol.d.ts", title: "ProtocolDocuments", what: "The MQTT messages the pages show (agent/protocol/models.py)",
    schemas: ["docs/schemas/command_reply.schema.json", "docs/schemas/sample_meta.schema.json"],
  },
];

/** The subschemas of a schema keyword: a map of schemas, a list of them, or one. */
const MAPS = ["properties", "patternProperties", "$defs", "definitions", "dependentSchemas"];
const LISTS = ["anyOf", "oneOf", "allOf", "prefixItems"];
const ONE = ["items", "additionalProperties", "not", "if", "then", "else", "contains", "propertyNames"];

/**
 * The schema as it is compiled: no title on any subschema but the models' ($defs), so that only models become
 * named types; a $ref with a description beside it (pydantic's, for a property) as allOf: [that $ref], so that the
 * property keeps its description and the model its own (json-schema-to-typescript would declare a copy of the
 * model, "Model1", with the property's description).
 * @param {unknown} schema
 * @param {boolean} named
 * @returns {unknown}
 */
function prepared(schema, named) {
  if (typeof schema !== "object" || schema === null || Array.isArray(schema)) return schema;
  if ("$ref" in schema && Object.keys(schema).length > 1) {
    const { $ref, ...beside } = schema;
    return prepared({ ...beside, allOf: [{ $ref }] }, named);
  }
  /** @type {Record<string, unknown>} */
  const out = {};
  for (const [key, value] of Object.entries(schema)) {
    if (key === "title" && !named) continue;
    if (MAPS.includes(key) && value && typeof value === "object") {
      out[key] = Object.fromEntries(Object.entries(value).map(([k, v]) => [k, prepared(v, key === "$defs" || key === "definitions")]));
    } else if (LISTS.includes(key) && Array.isArray(value)) out[key] = value.map((v) => prepared(v, false));
    else if (ONE.includes(key)) out[key] = prepared(value, false);
    else out[key] = value;
  }
  return out;
}

/**
 * The schemas of a group, sorted.
 * @param {Group} group
 * @returns {Promise<string[]>}
 */
async function schemasOf(group) {
  if (group.schemas) return group.schemas;
  const prefix = group.prefix || "";
  const names = (await readdir(path.join(ROOT, PAGES))).filter((n) => n.startsWith(prefix) && n.endsWith(".schema.json"));
  return names.sort().map((n) => `${PAGES}/${n}`);
}

/**
 * @param {unknown} schema
 * @returns {{ properties: Record<string, unknown>, required: string[] } | null} a model's properties
 */
function fields(schema) {
  if (typeof schema !== "object" || schema === null || !("properties" in schema)) return null;
  return { properties: schema.properties, required: schema.required || [] };
}

/**
 * The model `name` as it is compiled: a model that has every property of another (the same schema, as required),
 * and more, extends it (pydantic's subclass: its schema repeats the base's properties), declaring only its own; of
 * two such bases, the larger (then the first by name).
 * @param {string} name
 * @param {Record<string, unknown>} defs
 * @returns {unknown}
 */
function extended(name, defs) {
  const model = fields(defs[name]);
  if (!model) return defs[name];
  const has = (/** @type {string} */ p, /** @type {unknown} */ schema, /** @type {string[]} */ required) =>
    p in model.properties && isDeepStrictEqual(model.properties[p], schema) && model.required.includes(p) === required.includes(p);
  let base = null, baseSize = 0;
  for (const other of Object.keys(defs).sort()) {
    const b = fields(defs[other]), size = b ? Object.keys(b.properties).length : 0;
    if (!b || other === name || size === 0 || size >= Object.keys(model.properties).length || size <= baseSize) continue;
    if (Object.entries(b.properties).every(([p, schema]) => has(p, schema, b.required))) { base = other; baseSize = size; }
  }
  if (base === null) return defs[name];
  const inherited = Object.keys(fields(defs[base])?.properties || {});
  return {
    ...defs[name], extends: [{ $ref: `#/$defs/${base}` }],
    properties: Object.fromEntries(Object.entries(model.properties).filter(([p]) => !inherited.includes(p))),
    required: model.required.filter((p) => !inherited.includes(p)),
  };
}

/**
 * One schema of a group's schemas: each document's model and the models they use in $defs (one declaration for a
 * name: two that differ are an error), and a root object whose properties name each document's model.
 * @param {Group} group
 * @param {string[]} files
 * @returns {Promise<unknown>}
 */
async function merged(group, files) {
  /** @type {Record<string, unknown>} */
  const defs = {};
  /** @type {Record<string, unknown>} */
  const properties = {};
  /** @param {string} name @param {unknown} schema @param {string} file */
  const define = (name, schema, file) => {
    if (name in defs && !isDeepStrictEqual(defs[name], schema)) throw new Error(`${file}: ${name} differs from the ${name} of another schema of ${group.file}`);
    defs[name] = schema;
  };
  for (const file of files) {
    const schema = JSON.parse(await readFile(path.join(ROOT, file), "utf8"));
    const { $defs = {}, ...model } = schema;
    delete model.$id;
    delete model.$schema;
    if (typeof model.title !== "string") throw new Error(`${file}: no title (the name of its model)`);
    for (const [name, def] of Object.entries($defs)) define(name, def, file);
    define(model.title, model, file);
    properties[path.basename(file, ".schema.json")] = { $ref: `#/$defs/${model.title}` };
  }
  const sorted = Object.fromEntries(Object.keys(defs).sort().map((k) => [k, extended(k, defs)]));
  return prepared({
    title: group.title, description: `${group.what}: each schema's model, by the schema's name.`, type: "object",
    additionalProperties: false, required: Object.keys(properties), properties, $defs: sorted,
  }, true);
}

const out = path.resolve(process.argv[2] || path.join(ROOT, OUT));
await mkdir(out, { recursive: true });
for (const group of GROUPS) {
  const files = await schemasOf(group);
  const banner = `// Generated by tools/page-types.mjs (json-schema-to-typescript) from ${files.map((f) => path.basename(f)).join(", ")}:\n`
    + "// do not edit; regenerate with npm run page-types after the schemas change.";
  const code = await compile(await merged(group, files), group.title, {
    bannerComment: banner, unknownAny: true, format: true, cwd: ROOT,
  });
  await writeFile(path.join(out, group.file), code);
}
