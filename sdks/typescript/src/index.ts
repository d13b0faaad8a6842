/**
 * AgentNexus for TypeScript (SPEC §12): propose an action before an agent takes it, wait for a
 * person when approval is required, report what ran, and verify webhooks; guards for the Vercel
 * AI SDK and `@openai/agents`. ESM, fetch-based, no dependencies.
 */

export * from "./client.js";
/** The types of the server's whole REST contract, generated from its OpenAPI document. */
export type { components, operations, paths } from "./openapi.js";
export { verifyWebhook, InvalidSignature } from "./webhooks.js";
export { AgentsGovernor, type AgentsGovernorOptions } from "./openai-agents.js";
export { AiGuard, type AiGuardOptions, type AiApprovalStatus, type AiToolApprovalResponse, type AiToolCall } from "./ai.js";
