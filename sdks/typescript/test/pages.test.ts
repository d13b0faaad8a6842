/** docs/integrations' TypeScript pages, run as written: each page's snippet is a file here word
 * for word, imported and called with the framework's own kind of fake model asking for a $50
 * refund, while an owner approves it from the dashboard. */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { after, before, test } from "node:test";
import { fileURLToPath } from "node:url";

import { setTracingDisabled } from "@openai/agents";

import { Scripted, scripted } from "./models.js";
import { startServer, type Server } from "./server.js";

setTracingDisabled(true);
const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "..", "..");
const docs = join(root, "..", "..", "docs", "integrations");

let server: Server;
before(async () => {
  server = await startServer();
  process.env.AGENTNEXUS_URL = server.url;
  process.env.AGENTNEXUS_KEY = server.agentKey;
});
after(async () => server.stop());

/** The page's one `ts` block, which must be `test/pages/NAME.ts`. */
function samePage(page: string, file: string): void {
  const blocks = [...readFileSync(join(docs, page), "utf8").matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]);
  assert.deepEqual(blocks, [readFileSync(join(root, "test", "pages", file), "utf8")]);
}

/** Approves support-bot's next pending evaluation as the owner, as soon as there is one. */
async function approveWhenPending(): Promise<void> {
  for (let i = 0; i < 300; i++) {
    const r = await fetch(`${server.url}/api/v1/evaluations?agent_id=support-bot&status=pending`, {
      headers: { Authorization: `Bearer ${server.adminKey}` },
    });
    const [pending] = ((await r.json()) as { evaluations: { evaluation_id: string }[] }).evaluations;
    if (pending) return server.approve(pending.evaluation_id);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function said(run: () => Promise<unknown>): Promise<{ lines: string[]; answer: unknown }> {
  const lines: string[] = [];
  const log = console.log;
  console.log = (...args: unknown[]) => void lines.push(args.join(" "));
  try {
    const [answer] = await Promise.all([run(), approveWhenPending()]);
    return { lines, answer };
  } finally {
    console.log = log;
  }
}

test("the Vercel AI SDK page", async () => {
  samePage("vercel-ai.md", "vercel-ai.ts");
  const page = await import("./pages/vercel-ai.js");
  const out = await said(() => page.support(scripted({ charge: "ch_2", amount_cents: 5000 }, "page_ai"), "Refund ch_2, $50"));
  assert.deepEqual(out.lines, ["waiting for a person"]);
  assert.match(String(out.answer), /refunded 5000 on ch_2/);
});

test("the OpenAI Agents SDK page", async () => {
  samePage("openai-agents-js.md", "openai-agents.ts");
  const page = await import("./pages/openai-agents.js");
  const out = await said(() => page.support(new Scripted({ charge: "ch_2", amount_cents: 5000 }, "page_oa"), "Refund ch_2, $50"));
  assert.deepEqual(out.lines, ["waiting for a person"]);
  assert.match(String(out.answer), /refunded 5000 on ch_2/);
});
