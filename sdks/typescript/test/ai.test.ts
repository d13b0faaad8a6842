/** The Vercel AI SDK guard in the SDK's own loop (`generateText` with `toolApproval`), driven by
 * the SDK's own `MockLanguageModelV3` asking to call a tool, against a real server: allowed runs
 * once with a conforming receipt; denied never runs and the model is told why; approval pauses
 * with the SDK's own approval request, and after the owner approves, the next call runs the tool
 * once. */

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { generateText, jsonSchema, stepCountIs, tool, type ModelMessage } from "ai";

import { AgentNexus, AiGuard } from "../src/index.js";
import { scripted } from "./models.js";
import { startServer, type Server } from "./server.js";

let server: Server;
before(async () => (server = await startServer()));
after(async () => server.stop());


const ran: number[] = [];
const refund = tool({
  description: "Refund a charge",
  inputSchema: jsonSchema<{ charge: string; amount_cents: number }>({
    type: "object",
    properties: { charge: { type: "string" }, amount_cents: { type: "number" } },
    required: ["charge", "amount_cents"],
  }),
  execute: async ({ charge, amount_cents }) => {
    ran.push(amount_cents);
    return `refunded ${amount_cents} on ${charge}`;
  },
});

async function receipt(evaluationId: string): Promise<{ outcome: string; conforms: boolean }> {
  const r = await fetch(`${server.url}/api/v1/evaluations/${evaluationId}`, { headers: { Authorization: `Bearer ${server.adminKey}` } });
  return ((await r.json()) as { receipt: { outcome: string; conforms: boolean } }).receipt;
}

test("the guard in generateText's loop", async () => {
  const client = new AgentNexus(server.url, server.agentKey);
  const guard = (action = "stripe.refund") =>
    new AiGuard({ client, agentId: "ai-bot", actions: { refund: action }, amountCents: (_, i) => i.amount_cents as number, waitSecs: 30 });

  let g = guard();
  let result = await generateText({
    model: scripted({ charge: "ch_1", amount_cents: 500 }, "a1"),
    tools: g.tools({ refund }),
    toolApproval: g.toolApproval,
    stopWhen: stepCountIs(3),
    prompt: "refund ch_1",
  });
  assert.deepEqual(ran, [500]);
  assert.match(result.text, /refunded 500 on ch_1/);

  g = guard("db.delete");
  result = await generateText({
    model: scripted({ charge: "ch_x", amount_cents: 1 }, "a2"),
    tools: g.tools({ refund }),
    toolApproval: g.toolApproval,
    stopWhen: stepCountIs(3),
    prompt: "delete",
  });
  assert.deepEqual(ran, [500], "a denied call never runs");
  assert.match(result.text, /Deletes are not for agents/);

  g = guard();
  const model = scripted({ charge: "ch_2", amount_cents: 5000 }, "a3");
  const messages: ModelMessage[] = [{ role: "user", content: "refund ch_2" }];
  result = await generateText({ model, tools: g.tools({ refund }), toolApproval: g.toolApproval, stopWhen: stepCountIs(3), messages });
  const request = result.content.find((p) => p.type === "tool-approval-request");
  assert.ok(request, JSON.stringify(result.content));
  assert.deepEqual(ran, [500], "nothing runs while a person decides");
  const evaluationId = /\((ev_[0-9a-z]+):/.exec(String((request as { reason?: string }).reason))![1]!;
  setTimeout(() => void server.approve(evaluationId), 300);
  messages.push(...result.responseMessages, { role: "tool", content: await g.responses(result.content) });
  result = await generateText({ model, tools: g.tools({ refund }), toolApproval: g.toolApproval, stopWhen: stepCountIs(3), messages });
  assert.deepEqual(ran, [500, 5000]);
  assert.match(result.text, /refunded 5000 on ch_2/);
  const r = await receipt(evaluationId);
  assert.equal(r.outcome, "executed");
  assert.equal(r.conforms, true);
});
