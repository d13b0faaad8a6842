/**
 * The Vercel AI SDK (`ai` 7): AgentNexus decides each tool call through the SDK's own
 * `toolApproval`.
 *
 * ```ts
 * const guard = new AiGuard({ client, agentId: "support-bot" });
 * const result = await generateText({ model, tools: guard.tools({ refund }), toolApproval: guard.toolApproval, ... });
 * ```
 *
 * - `allow` → `approved`: the tool runs, and the receipt is reported with the evaluation's
 *   `proposal_hash` (`guard.tools` wraps each tool's `execute`).
 * - `deny` → `denied` with the reason: the tool does not run, and the model sees why.
 * - `require_approval` → `user-approval` (the SDK's own pause: `tool-approval-request` parts in
 *   `result.content`, with the reason and where a person decides). Once decided in AgentNexus,
 *   `await guard.responses(result.content)` answers the `tool-approval-response`s to add to the
 *   messages (waiting for the decision), and the next `generateText` runs or refuses the tool.
 *
 * The model's tool-call id is the idempotency key, so every look at one call is one evaluation.
 * Written against the SDK's shapes structurally: the package does not depend on `ai`.
 */

import { type AgentNexus, type Evaluation, isFinal, mayExecute } from "./client.js";

export interface AiToolCall {
  toolCallId: string;
  toolName: string;
  input: unknown;
}

export type AiApprovalStatus = { type: "approved" | "denied" | "user-approval"; reason?: string };

export interface AiToolApprovalResponse {
  type: "tool-approval-response";
  approvalId: string;
  approved: boolean;
  reason?: string;
}

export interface AiGuardOptions {
  client: AgentNexus;
  agentId: string;
  /** The action for each tool name (default: the tool's name). */
  actions?: Record<string, string>;
  /** The proposal's amount from a call's tool name and input. */
  amountCents?: (toolName: string, input: Record<string, unknown>) => number | undefined;
  /** The proposal's resource from a call's tool name and input. */
  resource?: (toolName: string, input: Record<string, unknown>) => string | undefined;
  /** How long `responses` waits for a person (default 600 s). */
  waitSecs?: number;
}

/** What the guard needs of a tool: its `execute`, called with the input and options holding
 * the call's id. */
type Execute = (input: unknown, options: { toolCallId: string }) => unknown;

export class AiGuard {
  readonly #options: AiGuardOptions;

  constructor(options: AiGuardOptions) {
    this.#options = options;
  }

  #evaluate(toolCallId: string, toolName: string, input: unknown): Promise<Evaluation> {
    const o = this.#options;
    const params = typeof input === "object" && input !== null ? (input as Record<string, unknown>) : { input };
    return o.client.evaluate({
      agent_id: o.agentId,
      action: o.actions?.[toolName] ?? toolName,
      params,
      amount_cents: o.amountCents?.(toolName, params),
      resource: o.resource?.(toolName, params),
      idempotency_key: `ai-${toolCallId}`,
    });
  }

  /** For `toolApproval` on `generateText`, `streamText` or `ToolLoopAgent`. */
  readonly toolApproval = async ({ toolCall }: { toolCall: AiToolCall }): Promise<AiApprovalStatus> => {
    const ev = await this.#evaluate(toolCall.toolCallId, toolCall.toolName, toolCall.input);
    const reason = ev.reason ?? undefined;
    if (!isFinal(ev)) {
      const where = this.#options.client.approvalPageUrl(ev.evaluation_id);
      return { type: "user-approval", reason: `${reason ?? "approval required"} (${ev.evaluation_id}: ${where})` };
    }
    return mayExecute(ev) ? { type: "approved", reason } : { type: "denied", reason: reason ?? ev.status };
  };

  /** The tools, each reporting its receipt after it ran (`executed`, or `failed` when it threw). */
  tools<T extends Record<string, object>>(tools: T): T {
    const wrapped: Record<string, object> = {};
    for (const [name, t] of Object.entries(tools)) {
      const execute = (t as { execute?: Execute }).execute;
      if (!execute) {
        wrapped[name] = t;
        continue;
      }
      wrapped[name] = {
        ...t,
        execute: async (input: unknown, options: { toolCallId: string }) => {
          const ev = await this.#evaluate(options.toolCallId, name, input);
          let out: unknown;
          try {
            out = await execute(input, options);
          } catch (e) {
            await this.#options.client.reportReceipt(ev.evaluation_id, "failed", ev.proposal_hash);
            throw e;
          }
          await this.#options.client.reportReceipt(ev.evaluation_id, "executed", ev.proposal_hash);
          return out;
        },
      };
    }
    return wrapped as T;
  }

  /** The approval responses for the `tool-approval-request`s a person decides in AgentNexus,
   * once decided (waiting up to `waitSecs`). */
  async responses(content: ReadonlyArray<{ type: string }>): Promise<AiToolApprovalResponse[]> {
    const out: AiToolApprovalResponse[] = [];
    for (const part of content) {
      if (part.type !== "tool-approval-request") continue;
      const request = part as unknown as { approvalId: string; isAutomatic?: boolean; toolCall: AiToolCall };
      if (request.isAutomatic) continue;
      const { toolCall } = request;
      let ev = await this.#evaluate(toolCall.toolCallId, toolCall.toolName, toolCall.input);
      if (!isFinal(ev)) ev = await this.#options.client.waitForDecision(ev.evaluation_id, this.#options.waitSecs ?? 600);
      out.push({
        type: "tool-approval-response",
        approvalId: request.approvalId,
        approved: mayExecute(ev),
        reason: ev.reason ?? ev.status,
      });
    }
    return out;
  }
}
