/** The frameworks' own kinds of fake model, scripted to ask for one `refund` call and then say
 * what the tool answered: the Vercel AI SDK's `MockLanguageModelV3` and an `@openai/agents`
 * `Model`. */

import type { Model, ModelRequest, ModelResponse } from "@openai/agents";
import { Usage } from "@openai/agents-core";
import { MockLanguageModelV3 } from "ai/test";

const usage = {
  inputTokens: { total: 1, noCache: 1, cacheRead: undefined, cacheWrite: undefined },
  outputTokens: { total: 1, text: 1, reasoning: undefined },
};

/** A model that asks to call `refund` once, then says what the tool answered. */
export function scripted(input: Record<string, unknown>, callId: string): MockLanguageModelV3 {
  return new MockLanguageModelV3({
    doGenerate: async ({ prompt }) => {
      const results = prompt.flatMap((m) => (m.role === "tool" ? m.content : []));
      if (results.length === 0) {
        return {
          content: [{ type: "tool-call", toolCallId: callId, toolName: "refund", input: JSON.stringify(input) }],
          finishReason: { unified: "tool-calls", raw: undefined },
          usage,
          warnings: [],
        };
      }
      return {
        content: [{ type: "text", text: `tool said: ${JSON.stringify(results.at(-1))}` }],
        finishReason: { unified: "stop", raw: undefined },
        usage,
        warnings: [],
      };
    },
  });
}

/** Asks to call `refund` once, then says what the tool answered. */
export class Scripted implements Model {
  constructor(
    readonly args: Record<string, unknown>,
    readonly callId: string,
  ) {}

  async getResponse(request: ModelRequest): Promise<ModelResponse> {
    const items = Array.isArray(request.input) ? request.input : [];
    const outputs = items.filter((i) => (i as { type?: string }).type === "function_call_result");
    if (outputs.length === 0) {
      return {
        usage: new Usage(),
        output: [{ type: "function_call", callId: this.callId, name: "refund", arguments: JSON.stringify(this.args), status: "completed" }],
      };
    }
    const said = JSON.stringify((outputs.at(-1) as { output?: unknown }).output);
    return {
      usage: new Usage(),
      output: [{ type: "message", role: "assistant", status: "completed", content: [{ type: "output_text", text: `tool said: ${said}` }] }],
    };
  }

  // eslint-disable-next-line require-yield
  async *getStreamedResponse(): AsyncIterable<never> {
    throw new Error("not streamed");
  }
}
