/**
 * The client: propose an action, wait for a person's decision, report what ran; `governed`.
 *
 * A request that got no answer, a 5xx or a 429 is tried again with backoff (honouring
 * `Retry-After`); `evaluate` gives each proposal an `idempotency_key` when it has none, so a
 * retry after a lost answer is the same evaluation, never a second one.
 */

import { randomUUID } from "node:crypto";

import type { components } from "./openapi.js";

/** The wire shapes: the types generated from the server's OpenAPI document (src/openapi.ts). */
type Schemas = components["schemas"];

/**
 * A proposal, as `POST /api/v1/evaluate` takes it (SPEC §4): the document's `EvaluateRequest`,
 * with `context` open to any field (the document names only `on_behalf_of`).
 */
export interface Proposal extends Omit<Schemas["EvaluateRequest"], "context"> {
  /** What surrounds the action (environment, ticket, …); `on_behalf_of`, when present, is the
   * e-mail of the person the agent acts for: that person cannot approve it. */
  context?: (Schemas["ContextSchema"] & Record<string, unknown>) | null;
}

export type Decision = "allow" | "deny" | "require_approval";

export type Status = "allowed" | "denied" | "pending" | "approved" | "rejected" | "expired";

/** A rule that matched (the document types `matched_rules` as objects only). */
export type MatchedRule = {
  policy: string;
  rule: string;
  effect: Decision;
};

/**
 * An evaluation as the server answers it: the document's `EvaluationResponse` (what
 * `evaluate` answers), with `decision`, `status`, `matched_rules` and `policy_versions` narrowed
 * to what the server sends (the document has plain strings and objects there), and the fields
 * of `EvaluationDetail` (proposal, stages, decisions, receipt), present on what
 * `getEvaluation`, `waitForDecision` and `reportReceipt` answer. test/openapi-types.ts checks
 * at compile time that it stays within the document's types.
 */
export interface Evaluation
  extends Omit<Schemas["EvaluationResponse"], "decision" | "status" | "matched_rules" | "policy_versions">,
    Partial<Omit<Schemas["EvaluationDetail"], keyof Schemas["EvaluationResponse"]>> {
  decision: Decision;
  status: Status;
  matched_rules: MatchedRule[];
  /** Policy name to the version that decided. */
  policy_versions: Record<string, number>;
  [field: string]: unknown;
}

/** Whether the agent may go ahead: `allowed` or `approved`. */
export function mayExecute(ev: Evaluation): boolean {
  return ev.status === "allowed" || ev.status === "approved";
}

/** Whether nothing is waiting for a person any more. */
export function isFinal(ev: Evaluation): boolean {
  return ev.status !== "pending";
}

/** The server refused: its RFC 9457 problem document. */
export class ProblemError extends Error {
  readonly status: number;
  readonly title: string;
  readonly detail: string;
  readonly type: string;
  readonly errors: unknown;
  constructor(status: number, body: unknown) {
    const p = (typeof body === "object" && body !== null ? body : {}) as Record<string, unknown>;
    const title = String(p.title ?? "Unexpected answer");
    const detail = String(p.detail ?? (typeof body === "string" ? body.slice(0, 200) : ""));
    super(`${status} ${title}: ${detail}`);
    this.name = "ProblemError";
    this.status = Number(p.status ?? status);
    this.title = title;
    this.detail = detail;
    this.type = String(p.type ?? "");
    this.errors = p.errors;
  }
}

/** The server could not be reached (after the retries). */
export class TransportError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "TransportError";
  }
}

/** A governed call was not allowed: denied, rejected or expired. */
export class Denied extends Error {
  readonly evaluation: Evaluation;
  readonly reason: string;
  constructor(evaluation: Evaluation) {
    const reason = evaluation.reason ?? evaluation.status;
    super(`${evaluation.status}: ${reason}`);
    this.name = "Denied";
    this.evaluation = evaluation;
    this.reason = reason;
  }
}

/** The evaluation was still waiting for a person when the wait ended. */
export class StillPending extends Error {
  readonly evaluation: Evaluation;
  constructor(evaluation: Evaluation) {
    super(`evaluation ${evaluation.evaluation_id} is still pending`);
    this.name = "StillPending";
    this.evaluation = evaluation;
  }
}

export interface ClientOptions {
  /** Times a request is tried again (default 3). */
  retries?: number;
  /** The fetch to use (default: the global one). */
  fetch?: typeof fetch;
}

const MAX_WAIT_SECS = 60;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function backoff(attempt: number, retryAfter: string | null): number {
  const secs = retryAfter === null ? Number.NaN : Number(retryAfter);
  return Number.isFinite(secs) ? Math.min(secs, 30) * 1000 : Math.min(250 * 2 ** attempt, 30_000);
}

/** A client for one server and one API key. */
export class AgentNexus {
  readonly baseUrl: string;
  readonly #key: string;
  readonly #retries: number;
  readonly #fetch: typeof fetch;

  constructor(baseUrl: string, apiKey: string, options: ClientOptions = {}) {
    if (!/^https?:\/\//.test(baseUrl)) {
      throw new TypeError(`baseUrl must start with http:// or https://, not ${baseUrl}`);
    }
    if (!apiKey) throw new TypeError("apiKey is empty");
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.#key = apiKey;
    this.#retries = options.retries ?? 3;
    this.#fetch = options.fetch ?? fetch;
  }

  /** Where a person signs in to decide a pending evaluation (the dashboard's page). */
  approvalPageUrl(evaluationId: string): string {
    return `${this.baseUrl}/approvals/evaluations/${encodeURIComponent(evaluationId)}`;
  }

  async #request<T>(method: string, path: string, body?: unknown, holdSecs = 0): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      let response: Response;
      try {
        response = await this.#fetch(`${this.baseUrl}${path}`, {
          method,
          headers: {
            Authorization: `Bearer ${this.#key}`,
            ...(body === undefined ? {} : { "Content-Type": "application/json" }),
          },
          body: body === undefined ? undefined : JSON.stringify(body),
          signal: AbortSignal.timeout((30 + holdSecs) * 1000),
        });
      } catch (e) {
        if (attempt >= this.#retries) throw new TransportError(String(e));
        await sleep(backoff(attempt, null));
        continue;
      }
      const text = await response.text();
      const again = response.status === 429 || response.status >= 500;
      if (again && attempt < this.#retries) {
        await sleep(backoff(attempt, response.headers.get("retry-after")));
        continue;
      }
      let parsed: unknown = text;
      try {
        parsed = JSON.parse(text);
      } catch {
        // Not JSON: kept as text for the error.
      }
      if (!response.ok) throw new ProblemError(response.status, parsed);
      return parsed as T;
    }
  }

  /** Proposes an action and answers its decision. */
  evaluate(proposal: Proposal): Promise<Evaluation> {
    const body: Schemas["EvaluateRequest"] = {
      ...proposal,
      idempotency_key: proposal.idempotency_key ?? `ts-${randomUUID()}`,
    };
    return this.#request<Evaluation>("POST", "/api/v1/evaluate", body);
  }

  /** An evaluation now; with `waitSecs` (at most 60), once its status changes. */
  getEvaluation(evaluationId: string, waitSecs?: number): Promise<Evaluation> {
    const id = encodeURIComponent(evaluationId);
    if (waitSecs === undefined || waitSecs <= 0) {
      return this.#request<Evaluation>("GET", `/api/v1/evaluations/${id}`);
    }
    const wait = Math.min(Math.ceil(waitSecs), MAX_WAIT_SECS);
    return this.#request<Evaluation>("GET", `/api/v1/evaluations/${id}?wait=${wait}`, undefined, wait);
  }

  /** Waits until a person decides; rejects with `StillPending` after `timeoutSecs`. */
  async waitForDecision(evaluationId: string, timeoutSecs = 600): Promise<Evaluation> {
    const until = Date.now() + timeoutSecs * 1000;
    for (;;) {
      const left = Math.max((until - Date.now()) / 1000, 1);
      const ev = await this.getEvaluation(evaluationId, left);
      if (isFinal(ev)) return ev;
      if (Date.now() >= until) throw new StillPending(ev);
    }
  }

  /** Reports what ran (`executed`, `failed`, `skipped`) with the hash of what it was; answers
   * the evaluation carrying the receipt. */
  reportReceipt(
    evaluationId: string,
    outcome: "executed" | "failed" | "skipped",
    proposalHash?: string,
  ): Promise<Evaluation> {
    const body: Schemas["ReceiptRequest"] =
      proposalHash === undefined ? { outcome } : { outcome, proposal_hash: proposalHash };
    return this.#request<Evaluation>("POST", `/api/v1/evaluations/${encodeURIComponent(evaluationId)}/receipt`, body);
  }
}

export interface GovernOptions<A extends unknown[]> {
  client: AgentNexus;
  agentId: string;
  action: string;
  /** The proposal's params from the call's arguments (default: the first argument, if an object). */
  params?: (...args: A) => Record<string, unknown>;
  resource?: (...args: A) => string | undefined;
  amountCents?: (...args: A) => number | undefined;
  /** How long to wait for a person when approval is required (default 600 s). */
  waitSecs?: number;
}

/**
 * Wraps a function so it runs only when AgentNexus allows it: `allow` runs it, `require_approval`
 * waits for the person and runs it once approved, a deny, rejection or expiry throw `Denied`
 * without running it. After it ran, the receipt is reported (`executed`, or `failed` when it
 * threw) with the evaluation's `proposal_hash`.
 */
export function governed<A extends unknown[], R>(
  fn: (...args: A) => R | Promise<R>,
  options: GovernOptions<A>,
): (...args: A) => Promise<R> {
  const { client } = options;
  return async (...args: A): Promise<R> => {
    const first = args[0];
    const params =
      options.params?.(...args) ??
      (typeof first === "object" && first !== null ? (first as Record<string, unknown>) : {});
    let ev = await client.evaluate({
      agent_id: options.agentId,
      action: options.action,
      params,
      resource: options.resource?.(...args),
      amount_cents: options.amountCents?.(...args),
    });
    if (!isFinal(ev)) ev = await client.waitForDecision(ev.evaluation_id, options.waitSecs ?? 600);
    if (!mayExecute(ev)) throw new Denied(ev);
    let result: R;
    try {
      result = await fn(...args);
    } catch (e) {
      await client.reportReceipt(ev.evaluation_id, "failed", ev.proposal_hash);
      throw e;
    }
    await client.reportReceipt(ev.evaluation_id, "executed", ev.proposal_hash);
    return result;
  };
}
