/** The README's snippet is test/readme-example.ts word for word, and runs as the README says. */

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";

import { readmeBlocks, startServer, type Server } from "./server.js";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");
let server: Server;
before(async () => (server = await startServer()));
after(async () => server.stop());

test("the README's snippet runs", () => {
  const [block] = readmeBlocks(join(root, "README.md"));
  assert.equal(block, readFileSync(join(root, "test", "readme-example.ts"), "utf8"));
  // The package resolves by its own name (Node's self-reference through `exports`), as for
  // someone who installed it.
  const out = execFileSync(process.execPath, [join(here, "readme-example.js")], {
    env: { ...process.env, AGENTNEXUS_URL: server.url, AGENTNEXUS_KEY: server.agentKey },
  }).toString();
  assert.deepEqual(out.trim().split("\n"), ["allow allowed", "refunded ch_1", "denied: Deletes are not for agents"]);
});
