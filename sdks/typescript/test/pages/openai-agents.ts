import { Agent, run, tool, type Model } from "@openai/agents";
import { AgentNexus, AgentsGovernor } from "@agentnexus/sdk";

const client = new AgentNexus(process.env.AGENTNEXUS_URL ?? "http://127.0.0.1:8080", process.env.AGENTNEXUS_KEY ?? "anx_…");
const governor = new AgentsGovernor({ client, agentId: "support-bot" });

const refund = tool({
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
    "stripe.refund",
    ({ charge, amount_cents }: { charge: string; amount_cents: number }) => `refunded ${amount_cents} on ${charge}`,
    { amountCents: (input) => input.amount_cents },
  ),
});

/** Runs one support request with `model` (a model name or a `Model`), pausing for a person when
 * AgentNexus says so. */
export async function support(model: string | Model, request: string): Promise<unknown> {
  const agent = new Agent({ name: "support", model, tools: [refund] });
  let result = await run(agent, request);
  while (result.interruptions.length > 0) {
    console.log("waiting for a person");
    // Approves or rejects each interruption as AgentNexus decided (waiting for the decision).
    result = await run(agent, await governor.resolve(result));
  }
  return result.finalOutput;
}
