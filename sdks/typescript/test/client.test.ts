/** The client against a real server: decisions, refusals, idempotency, waiting for a person,
 * receipts, `governed`, and webhook verification (the Standard Webhooks vector and a real
 * delivery). */

import assert from "node:assert/strict";
import { createServer } from "node:http";
import { after, before, test } from "node:test";

import {
  AgentNexus,
  Denied,
  InvalidSignature,
  ProblemError,
  StillPending,
  TransportError,
  governed,
  mayExecute,
  verifyWebhook,
} from "../src/index.js";
import { startServer, type Server } from "./server.js";

let server: Server;
let client: AgentNexus;
before(async () => {
  server = await startServer();
  client = new AgentNexus(server.url, server.agentKey);
});
after(async () => server.stop());

test("decisions and refusals", async () => {
  const ok = await client.evaluate({ agent_id: "billing-bot", action: "stripe.refund", amount_cents: 500 });
  assert.equal(ok.status, "allowed");
  assert.ok(mayExecute(ok));
  assert.deepEqual(ok.matched_rules.map((m) => m.rule), ["refunds"]);
  assert.equal(ok.proposal_hash.length, 64);
  const no = await client.evaluate({ agent_id: "ops-bot", action: "db.delete" });
  assert.equal(no.status, "denied");
  assert.equal(no.reason, "Deletes are not for agents");
  await assert.rejects(client.evaluate({ agent_id: "a", action: "" }), (e: unknown) => e instanceof ProblemError && e.status === 422);
  await assert.rejects(client.getEvaluation("ev_01aaaaaaaaaaaaaaaaaaaaaaaa"), (e: unknown) => e instanceof ProblemError && e.status === 404);
  const wrong = new AgentNexus(server.url, "anx_notakey0000000000000000000000000000");
  await assert.rejects(wrong.evaluate({ agent_id: "a", action: "b" }), (e: unknown) => e instanceof ProblemError && e.status === 401);
  const nowhere = new AgentNexus("http://127.0.0.1:9", "anx_x", { retries: 1 });
  await assert.rejects(nowhere.evaluate({ agent_id: "a", action: "b" }), TransportError);
});

test("one idempotency key is one evaluation", async () => {
  const key = `refund-${Date.now()}`;
  const first = await client.evaluate({ agent_id: "b", action: "stripe.refund", amount_cents: 5, idempotency_key: key });
  const again = await client.evaluate({ agent_id: "b", action: "stripe.refund", amount_cents: 5, idempotency_key: key });
  assert.equal(again.evaluation_id, first.evaluation_id);
  await assert.rejects(
    client.evaluate({ agent_id: "b", action: "stripe.refund", amount_cents: 6, idempotency_key: key }),
    (e: unknown) => e instanceof ProblemError && e.status === 409,
  );
});

test("waiting for a person, then a receipt", async () => {
  const ev = await client.evaluate({ agent_id: "billing-bot", action: "stripe.refund", amount_cents: 5000 });
  assert.equal(ev.status, "pending");
  assert.ok(client.approvalPageUrl(ev.evaluation_id).endsWith(`/approvals/evaluations/${ev.evaluation_id}`));
  await assert.rejects(client.waitForDecision(ev.evaluation_id, 1), StillPending);
  setTimeout(() => void server.approve(ev.evaluation_id), 300);
  const done = await client.waitForDecision(ev.evaluation_id, 30);
  assert.equal(done.status, "approved");
  const receipted = await client.reportReceipt(ev.evaluation_id, "executed", done.proposal_hash);
  assert.equal(receipted.receipt?.conforms, true);
});

test("governed functions", async () => {
  const ran: string[] = [];
  const refund = governed(
    async (args: { charge: string; amount_cents: number }) => {
      ran.push(args.charge);
      return `refunded ${args.charge}`;
    },
    { client, agentId: "gov-bot", action: "stripe.refund", amountCents: (a) => a.amount_cents },
  );
  assert.equal(await refund({ charge: "ch_1", amount_cents: 500 }), "refunded ch_1");
  const drop = governed((_table: string) => ran.push("dropped"), { client, agentId: "gov-bot", action: "db.delete" });
  await assert.rejects(drop("orders"), (e: unknown) => e instanceof Denied && e.reason === "Deletes are not for agents");
  // Approval required, then rejected: it never runs.
  const pending = refund({ charge: "ch_2", amount_cents: 5000 });
  setTimeout(async () => {
    const r = await fetch(`${server.url}/api/v1/evaluations?agent_id=gov-bot&limit=1`, {
      headers: { Authorization: `Bearer ${server.adminKey}` },
    });
    const id = ((await r.json()) as { evaluations: { evaluation_id: string }[] }).evaluations[0]!.evaluation_id;
    await server.approve(id, "reject");
  }, 500);
  await assert.rejects(pending, (e: unknown) => e instanceof Denied && e.evaluation.status === "rejected");
  assert.deepEqual(ran, ["ch_1"]);
});

test("webhooks", async () => {
  // The Standard Webhooks specification's test vector.
  const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
  const headers = {
    "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
    "webhook-timestamp": "1614265330",
    "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
  };
  assert.deepEqual(verifyWebhook(secret, headers, '{"test": 2432232314}', 1614265330), { test: 2432232314 });
  assert.throws(() => verifyWebhook(secret, headers, '{"test": 2432232315}', 1614265330), InvalidSignature);
  assert.throws(() => verifyWebhook(secret, headers, '{"test": 2432232314}'), InvalidSignature);

  // A real delivery from the server.
  const received = new Promise<{ headers: Record<string, string | string[] | undefined>; body: string }>((resolve) => {
    const hook = createServer((req, res) => {
      let body = "";
      req.on("data", (d: Buffer) => (body += d.toString()));
      req.on("end", () => {
        res.writeHead(204).end();
        hook.close();
        resolve({ headers: req.headers, body });
      });
    });
    hook.listen(0, "127.0.0.1", async () => {
      const address = hook.address();
      const port = typeof address === "object" && address ? address.port : 0;
      await client.evaluate({
        agent_id: "hook-bot",
        action: "stripe.refund",
        amount_cents: 5000,
        webhook_url: `http://127.0.0.1:${port}/hook`,
      });
    });
  });
  const r = await fetch(`${server.url}/api/v1/webhooks/secret`, { headers: { Authorization: `Bearer ${server.adminKey}` } });
  const signing = ((await r.json()) as { signing_secret: string }).signing_secret;
  const delivery = await received;
  const event = verifyWebhook(signing, delivery.headers, delivery.body) as { event: string };
  assert.equal(event.event, "approval_required");
  assert.throws(() => verifyWebhook(signing, delivery.headers, delivery.body.replace("approval_required", "terminal_outcome")), InvalidSignature);
});
