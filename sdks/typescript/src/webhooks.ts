/** Verifying AgentNexus's webhooks (Standard Webhooks: HMAC-SHA256 over `id.timestamp.body`). */

import { createHmac, timingSafeEqual } from "node:crypto";

/** The delivery is not signed with the secret, or is too old or too new. */
export class InvalidSignature extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InvalidSignature";
  }
}

const TOLERANCE_SECS = 300;

/**
 * Checks a delivery (`headers` in any case, `body` as received) and answers its JSON payload;
 * throws `InvalidSignature` otherwise. The timestamp must be within five minutes of `nowSecs`.
 */
export function verifyWebhook(
  secret: string,
  headers: Record<string, string | string[] | undefined>,
  body: string | Uint8Array,
  nowSecs: number = Date.now() / 1000,
): unknown {
  const lower: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers)) {
    if (v !== undefined) lower[k.toLowerCase()] = Array.isArray(v) ? v.join(" ") : v;
  }
  const id = lower["webhook-id"];
  const timestamp = lower["webhook-timestamp"];
  const signatures = lower["webhook-signature"];
  if (!id || !timestamp || !signatures) throw new InvalidSignature("missing webhook headers");
  const sentAt = Number(timestamp);
  if (!Number.isInteger(sentAt)) throw new InvalidSignature("webhook-timestamp is not a number");
  if (Math.abs(nowSecs - sentAt) > TOLERANCE_SECS) {
    throw new InvalidSignature("webhook-timestamp is outside the tolerance");
  }
  const raw = typeof body === "string" ? Buffer.from(body) : Buffer.from(body);
  const key = Buffer.from(secret.replace(/^whsec_/, ""), "base64");
  const expected = createHmac("sha256", key)
    .update(`${id}.${timestamp}.`)
    .update(raw)
    .digest();
  for (const candidate of signatures.split(" ")) {
    const [version, value] = candidate.split(",", 2);
    if (version !== "v1" || value === undefined) continue;
    const sent = Buffer.from(value, "base64");
    if (sent.length === expected.length && timingSafeEqual(sent, expected)) {
      return JSON.parse(raw.toString("utf8"));
    }
  }
  throw new InvalidSignature("no signature matches");
}
