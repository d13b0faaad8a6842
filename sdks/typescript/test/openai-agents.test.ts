/** The `@openai/agents` governor in the SDK's own run loop (`run`), driven by a custom `Model`
 * asking to call a tool, against a real server: allowed runs once with a conforming receipt;
 * denied never runs and the model sees why; approval stops the run with the SDK's own
 * interruptions, and after the owner approves (or rejects), resolving and running again runs
 * the tool once (or never). */

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { Agent, run, setTracingDisabled, tool, type Model } from "@openai/agents";

import { AgentNexus, AgentsGovernor } from "../src/index.js";
import { Scripted } from "./models.js";
import { startServer, type Server } from "./server.js";

setTracingDisabled(true);

let server: Server;
before(async () => (server = await startServer()));
after(async () => server.stop());


test("the governor in the Agents SDK's loop", async () => {
  const client = new AgentNexus(server.url, server.agentKey);
  const governor = new AgentsGovernor({ client, agentId: "oajs-bot", waitSecs: 30 });
  const ran: number[] = [];
  const refund = (action: string) =>
    tool({
      name: "refund",
      description: "Refund a charge",
      parameters: {
        type: "object",
        properties: { charge: { type: "string" }, amount_cents: { type: "number" } },
        required: ["charge", "amount_cents"],
        additionalProperties: false,
      },
      strict: true,
      ...governor.govern(
        action,
        (input: { charge: string; amount_cents: number }) => {
          ran.push(input.amount_cents);
          return `refunded ${input.amount_cents} on ${input.charge}`;
        },
        { amountCents: (i) => i.amount_cents },
      ),
    });
  const agent = (model: Model, action = "stripe.refund") => new Agent({ name: "payments", model, tools: [refund(action)] });

  let result = await run(agent(new Scripted({ charge: "ch_1", amount_cents: 500 }, "j1")), "refund ch_1");
  assert.deepEqual(ran, [500]);
  assert.match(String(result.finalOutput), /refunded 500 on ch_1/);

  result = await run(agent(new Scripted({ charge: "ch_x", amount_cents: 1 }, "j2"), "db.delete"), "delete");
  assert.deepEqual(ran, [500], "a denied call never runs");
  assert.match(String(result.finalOutput), /Deletes are not for agents/);

  for (const [decision, after] of [["approve", [500, 5000]], ["reject", [500, 5000]]] as const) {
    const a = agent(new Scripted({ charge: "ch_2", amount_cents: 5000 }, `j3-${decision}`));
    result = await run(a, "refund ch_2");
    assert.equal(result.interruptions.length, 1);
    const evaluationId = governor.waiting.get(`j3-${decision}`)!;
    setTimeout(() => void server.approve(evaluationId, decision), 300);
    result = await run(a, await governor.resolve(result));
    assert.deepEqual(ran, after, decision);
    if (decision === "approve") assert.match(String(result.finalOutput), /refunded 5000 on ch_2/);
    else assert.match(String(result.finalOutput), /rejected/);
  }
});
