import { generateText, jsonSchema, stepCountIs, tool, type LanguageModel, type ModelMessage } from "ai";
import { AgentNexus, AiGuard } from "@agentnexus/sdk";

const client = new AgentNexus(process.env.AGENTNEXUS_URL ?? "http://127.0.0.1:8080", process.env.AGENTNEXUS_KEY ?? "anx_…");

const refund = tool({
  description: "Refund a charge",
  inputSchema: jsonSchema<{ charge: string; amount_cents: number }>({
    type: "object",
    properties: { charge: { type: "string" }, amount_cents: { type: "number" } },
    required: ["charge", "amount_cents"],
  }),
  execute: async ({ charge, amount_cents }) => `refunded ${amount_cents} on ${charge}`,
});

/** Runs one support request with `model`, pausing for a person when AgentNexus says so. */
export async function support(model: LanguageModel, request: string): Promise<string> {
  const guard = new AiGuard({ client, agentId: "support-bot", actions: { refund: "stripe.refund" },
    amountCents: (_tool, input) => input.amount_cents as number });
  const settings = { model, tools: guard.tools({ refund }), toolApproval: guard.toolApproval, stopWhen: stepCountIs(5) };
  const messages: ModelMessage[] = [{ role: "user", content: request }];
  let result = await generateText({ ...settings, messages });
  while (result.content.some((part) => part.type === "tool-approval-request")) {
    console.log("waiting for a person");
    // Waits for the decision in AgentNexus (e-mail, Slack, Teams or the dashboard).
    messages.push(...result.responseMessages, { role: "tool", content: await guard.responses(result.content) });
    result = await generateText({ ...settings, messages });
  }
  return result.text;
}
