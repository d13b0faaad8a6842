// Drives AgentNexus's MCP gateway with the official TypeScript SDK (npm @modelcontextprotocol/sdk),
// which speaks the handshake generation (2025-11-25).
// usage: node client.mjs URL KEY   (run from a directory whose node_modules has the SDK)
// Prints one JSON object with what each call returned; the Rust test asserts on it.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, key] = process.argv.slice(2);
const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${key}` } },
});
const client = new Client({ name: "agentnexus-test", version: "1.0.0" });
await client.connect(transport);

const shown = (r) => ({ is_error: r.isError ?? false, structured: r.structuredContent, text: r.content.map((c) => c.text) });
const out = { protocol_version: transport.protocolVersion, server: client.getServerVersion() };
out.tools = (await client.listTools()).tools.map((t) => t.name);
out.allow = shown(await client.callTool({
  name: "evaluate",
  arguments: { agent_id: "npm-bot", action: "stripe.refund", amount_cents: 100 },
  _meta: { traceparent: "00-1af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", session_id: "npm-1" },
}));
out.deny = shown(await client.callTool({
  name: "evaluate",
  arguments: { agent_id: "npm-bot", action: "db.delete", context: { environment: "production" } },
}));
out.pending = shown(await client.callTool({
  name: "evaluate",
  arguments: { agent_id: "npm-bot", action: "stripe.refund", amount_cents: 90000 },
}));
out.get = shown(await client.callTool({
  name: "get_evaluation",
  arguments: { evaluation_id: out.pending.structured.evaluation_id },
}));
await client.close();
console.log(JSON.stringify(out));
