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

// OpenAPI wants every operationId unique, and openapi-typescript names `operations[...]` by it:
// a document that repeats one is refused here rather than typed wrongly.
const doc = JSON.parse(readFileSync(input, "utf8"));
const byId = new Map();
for (const [path, item] of Object.entries(doc.paths ?? {})) {
  for (const [method, op] of Object.entries(item)) {
    if (typeof op !== "object" || op === null || typeof op.operationId !== "string") continue;
    byId.set(op.operationId, [...(byId.get(op.operationId) ?? []), `${method.toUpperCase()} ${path}`]);
  }
}
const shared = [...byId].filter(([, ops]) => ops.length > 1);
if (shared.length > 0) {
  console.error(`operationIds given to several operations: ${shared.map(([id, ops]) => `${id} (${ops.join(", ")})`).join("; ")}`);
  process.exit(1);
}

const { version } = createRequire(import.meta.url)("openapi-typescript/package.json");

const header = `/**
 * GENERATED FILE, do not edit: the types of the server's OpenAPI document (docs/openapi.json),
 * made by openapi-typescript ${version} (scripts/generate-openapi.mjs).
 *
 * Regenerate with \`npm run generate\` in sdks/typescript, after the document changed
 * (\`UPDATE_OPENAPI=1 cargo test -p agentnexus-server --test openapi\`). test/openapi.test.ts
 * fails while this file differs from what the generator makes of the checked-in document.
 */

`;

const ast = await openapiTS(doc, {
  // `type: object` without properties is any object (Record<string, unknown>), not an empty one.
  emptyObjectsUnknown: true,
});
writeFileSync(out, header + astToString(ast));
