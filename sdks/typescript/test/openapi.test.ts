/** src/openapi.ts is what the pinned openapi-typescript makes of the checked-in OpenAPI document
 * (docs/openapi.json): the generator runs again here, offline (no server needed), into a
 * temporary file, and the two must be the same bytes. */

import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { test } from "node:test";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const REGENERATE = "`npm run generate` in sdks/typescript (after `UPDATE_OPENAPI=1 cargo test -p agentnexus-server --test openapi` when the server changed)";

test("src/openapi.ts is generated from the checked-in docs/openapi.json", (t) => {
  const dir = mkdtempSync(join(tmpdir(), "agentnexus-openapi-"));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  const fresh = join(dir, "openapi.ts");
  const run = spawnSync(process.execPath, [join(root, "scripts", "generate-openapi.mjs"), "--out", fresh], {
    cwd: root,
    encoding: "utf8",
  });
  assert.equal(run.status, 0, `the generator failed:\n${run.stderr}`);

  const expected = readFileSync(fresh);
  const committed = readFileSync(join(root, "src", "openapi.ts"));
  if (!committed.equals(expected)) {
    const a = committed.toString("utf8").split("\n");
    const b = expected.toString("utf8").split("\n");
    let line = 0;
    while (line < a.length && line < b.length && a[line] === b[line]) line++;
    assert.fail(
      `src/openapi.ts is stale (it differs from the generator's output from line ${line + 1}: ` +
        `checked in ${JSON.stringify(a[line] ?? "<end of file>")}, generated ${JSON.stringify(b[line] ?? "<end of file>")}); ` +
        `regenerate it with ${REGENERATE}, and commit it`,
    );
  }
});
