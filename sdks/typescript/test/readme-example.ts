import { AgentNexus, Denied, governed } from "@agentnexus/sdk";

const client = new AgentNexus(process.env.AGENTNEXUS_URL ?? "http://127.0.0.1:8080", process.env.AGENTNEXUS_KEY ?? "anx_…");

const decision = await client.evaluate({ agent_id: "billing-bot", action: "stripe.refund", amount_cents: 500 });
console.log(decision.decision, decision.status);

const refund = governed(
  async ({ charge }: { charge: string; amount_cents: number }) => `refunded ${charge}`,
  { client, agentId: "billing-bot", action: "stripe.refund", amountCents: (a) => a.amount_cents },
);
console.log(await refund({ charge: "ch_1", amount_cents: 500 }));

const drop = governed(async (table: string) => table, { client, agentId: "ops-bot", action: "db.delete" });
try {
  await drop("orders");
} catch (e) {
  if (e instanceof Denied) console.log("denied:", e.reason);
}
