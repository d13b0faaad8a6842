#!/usr/bin/env node
// Writes src/openapi.ts: the TypeScript types of the server's OpenAPI document
// (docs/openapi.json at the repository's root), made by the pinned `openapi-typescript`.
//
//   npm run generate                                    # writes src/openapi.ts
//   node scripts/generate-openapi.mjs --out FILE        # writes FILE instead (the freshness test)
//
// Offline and deterministic: the document is read from disk, no Redocly config file is looked
// for, and the output is TypeScript's own printer (LF line endings), so the same document and
// the same locked packages give the same bytes. test/openapi.test.ts compares a fresh run with
// the checked-in src/openapi.ts.

import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import openapiTS, { astToString } from "openapi-typescript";

const root = new URL("../", import.meta.url);
const input = new URL("../../docs/openapi.json", root);

const args = process.argv.slice(2);
let out = fileURLToPath(new URL("src/openapi.ts", root));
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--out" && args[i + 1] !== undefined) out = args[++i];
  else {
    console.error(`usage: node scripts/generate-openapi.mjs [--out FILE] (not ${args[i]})`);
    process.exit(2);
  }
}

// OpenAPI wants every operationId unique; the document gives some to several operations (`list`,
// `get`, `put`: utoipa names them after the handler function). openapi-typescript would then
// declare `operations["list"]` once per operation (a type error) and point every path at the
// same one. Such operations lose their operationId here, so their types are written inline under
// `paths` (correct, just unnamed); the header lists them, and they come back named by
// themselves once the server gives them unique ids.
const doc = JSON.parse(readFileSync(input, "utf8"));
const byId = new Map();
for (const [path, item] of Object.entries(doc.paths ?? {})) {
  for (const [method, op] of Object.entries(item)) {
    if (typeof op !== "object" || op === null || typeof op.operationId !== "string") continue;
    byId.set(op.operationId, [...(byId.get(op.operationId) ?? []), { path, method, op }]);
  }
}
const shared = [...byId].filter(([, ops]) => ops.length > 1).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
for (const [, ops] of shared) for (const { op } of ops) delete op.operationId;

const { version } = createRequire(import.meta.url)("openapi-typescript/package.json");

const header = `/**
 * GENERATED FILE, do not edit: the types of the server's OpenAPI document (docs/openapi.json),
 * made by openapi-typescript ${version} (scripts/generate-openapi.mjs).
 *
 * Regenerate with \`npm run generate\` in sdks/typescript, after the document changed
 * (\`UPDATE_OPENAPI=1 cargo test -p agentnexus-server --test openapi\`). test/openapi.test.ts
 * fails while this file differs from what the generator makes of the checked-in document.${
  shared.length === 0
    ? ""
    : `
 *
 * Not in \`operations\` (their operationId is not unique in the document; typed under \`paths\`):
${shared.map(([id, ops]) => ` * - ${id}: ${ops.map(({ method, path }) => `${method.toUpperCase()} ${path}`).join(", ")}`).join("\n")}`
}
 */

`;

const ast = await openapiTS(doc, {
  // `type: object` without properties is any object (Record<string, unknown>), not an empty one.
  emptyObjectsUnknown: true,
});
writeFileSync(out, header + astToString(ast));
