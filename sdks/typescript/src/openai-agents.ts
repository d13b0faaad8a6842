/**
 * The OpenAI Agents SDK for JavaScript (`@openai/agents`): function tools that AgentNexus
 * governs, with the SDK's own approvals.
 *
 * ```ts
 * const governor = new AgentsGovernor({ client, agentId: "support-bot" });
 * const refundTool = tool({ name: "refund", parameters, ...governor.govern("stripe.refund", refund) });
 * let result = await run(agent, "…");
 * if (result.interruptions.length) result = await run(agent, await governor.resolve(result));
 * ```
 *
 * `govern(action, fn)` answers `needsApproval` (asks AgentNexus: a call that requires approval
 * stops the run with the SDK's `result.interruptions`) and `execute` (runs `fn` only when
 * AgentNexus allows it, else returns the reason to the model; reports the receipt after).
 * `resolve(result)` approves or rejects each interruption in the run state as AgentNexus decided
 * (waiting for the decision); run again with that state. The model's call id is the idempotency
 * key. Written against the SDK's shapes structurally: the package does not depend on it.
 */

import { type AgentNexus, type Evaluation, isFinal, mayExecute } from "./client.js";

export interface AgentsGovernorOptions {
  client: AgentNexus;
  agentId: string;
  /** How long `resolve` waits for a person (default 600 s). */
  waitSecs?: number;
}

export interface AgentsToolOptions<I> {
  amountCents?: (input: I) => number | undefined;
  resource?: (input: I) => string | undefined;
}

interface Interruption {
  rawItem?: unknown;
}

interface ResumableState {
  approve(item: never): void;
  reject(item: never, options?: { message?: string }): void;
}

export class AgentsGovernor {
  readonly #o: AgentsGovernorOptions;
  /** The evaluation of each call that waits for a person, by call id. */
  readonly waiting = new Map<string, string>();

  constructor(options: AgentsGovernorOptions) {
    this.#o = options;
  }

  #evaluate<I>(action: string, input: I, callId: string | undefined, options: AgentsToolOptions<I>): Promise<Evaluation> {
    const params = typeof input === "object" && input !== null ? (input as Record<string, unknown>) : { input };
    return this.#o.client.evaluate({
      agent_id: this.#o.agentId,
      action,
      params,
      amount_cents: options.amountCents?.(input),
      resource: options.resource?.(input),
      idempotency_key: callId ? `openai-agents-${callId}` : undefined,
    });
  }

  /** `needsApproval` and `execute` for the SDK's `tool({...})`. */
  govern<I, R>(
    action: string,
    fn: (input: I) => R | Promise<R>,
    options: AgentsToolOptions<I> = {},
  ): {
    needsApproval: (context: unknown, input: unknown, callId?: string) => Promise<boolean>;
    execute: (input: unknown, context?: unknown, details?: { toolCall?: { callId: string } }) => Promise<R | string>;
  } {
    return {
      needsApproval: async (_context, input, callId) => {
        const ev = await this.#evaluate(action, input as I, callId, options);
        if (isFinal(ev)) return false;
        if (callId) this.waiting.set(callId, ev.evaluation_id);
        return true;
      },
      execute: async (input, _context, details) => {
        let ev = await this.#evaluate(action, input as I, details?.toolCall?.callId, options);
        if (!isFinal(ev)) ev = await this.#o.client.waitForDecision(ev.evaluation_id, this.#o.waitSecs ?? 600);
        if (!mayExecute(ev)) {
          return `Not allowed by AgentNexus (${ev.status}): ${ev.reason ?? ev.status}. Do not retry this call.`;
        }
        let out: R;
        try {
          out = await fn(input as I);
        } catch (e) {
          await this.#o.client.reportReceipt(ev.evaluation_id, "failed", ev.proposal_hash);
          throw e;
        }
        await this.#o.client.reportReceipt(ev.evaluation_id, "executed", ev.proposal_hash);
        return out;
      },
    };
  }

  /** The run's state with each interruption approved or rejected as AgentNexus decided. */
  async resolve<S extends ResumableState>(result: { interruptions: readonly Interruption[]; state: S }): Promise<S> {
    for (const item of result.interruptions) {
      const callId = (item.rawItem as { callId?: string } | undefined)?.callId;
      const evaluationId = callId ? this.waiting.get(callId) : undefined;
      if (!evaluationId) continue;
      const ev = await this.#o.client.waitForDecision(evaluationId, this.#o.waitSecs ?? 600);
      if (mayExecute(ev)) {
        result.state.approve(item as never);
      } else {
        result.state.reject(item as never, {
          message: `Not allowed by AgentNexus (${ev.status}): ${ev.reason ?? ev.status}.`,
        });
      }
    }
    return result.state;
  }
}
