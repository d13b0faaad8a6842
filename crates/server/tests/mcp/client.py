"""Drives AgentNexus's MCP gateway with the official MCP Python SDK (PyPI `mcp`).

usage: client.py URL KEY MODE      (MODE: legacy | 2026-07-28)
Prints one JSON object with what each call returned; the Rust test asserts on it.
"""

import asyncio
import json
import sys
import warnings

import mcp_types as types
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

warnings.simplefilter("ignore")
URL, KEY, MODE = sys.argv[1], sys.argv[2], sys.argv[3]
META = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "session_id": "sess-42"}


def shown(r):
    return {
        "is_error": r.is_error,
        "structured": r.structured_content,
        "text": [getattr(b, "text", None) for b in r.content],
    }


async def run(**client_args):
    out = {}
    async with create_mcp_http_client(headers={"Authorization": f"Bearer {KEY}"}) as http:
        async with Client(streamable_http_client(URL, http_client=http), mode=MODE, **client_args) as c:
            out["protocol_version"] = c.protocol_version
            tools = (await c.list_tools()).tools
            out["tools"] = {t.name: {"input": t.input_schema, "output": t.output_schema} for t in tools}
            out["allow"] = shown(await c.call_tool(
                "evaluate", {"agent_id": "mcp-bot", "action": "stripe.refund", "amount_cents": 100}, meta=dict(META)))
            out["deny"] = shown(await c.call_tool(
                "evaluate", {"agent_id": "mcp-bot", "action": "db.delete", "context": {"environment": "production"}}))
            out["pending"] = shown(await c.call_tool(
                "evaluate", {"agent_id": "mcp-bot", "action": "stripe.refund", "amount_cents": 90000}))
            pending_id = out["pending"]["structured"]["evaluation_id"]
            out["get"] = shown(await c.call_tool("get_evaluation", {"evaluation_id": pending_id, "wait_seconds": 1}))
            out["bad_arguments"] = shown(await c.call_tool("evaluate", {"agent_id": "mcp-bot"}))
            out["unknown_evaluation"] = shown(await c.call_tool("get_evaluation", {"evaluation_id": "ev_nope"}))
            try:
                await c.call_tool("no_such_tool", {})
                out["unknown_tool"] = "no error"
            except Exception as e:  # the SDK raises MCPError for a JSON-RPC error
                out["unknown_tool"] = {"code": getattr(e, "code", None), "message": str(e)}
    return out


async def elicit():
    """A client that can show URLs to its user gets the approval link to show (2026-07-28)."""
    seen = []

    async def on_elicit(ctx, params):
        seen.append({"mode": params.mode, "url": getattr(params, "url", None), "message": params.message})
        return types.ElicitResult(action="accept")

    async with create_mcp_http_client(headers={"Authorization": f"Bearer {KEY}"}) as http:
        async with Client(streamable_http_client(URL, http_client=http), mode=MODE, elicitation_callback=on_elicit) as c:
            r = await c.call_tool("evaluate", {"agent_id": "mcp-bot", "action": "stripe.refund", "amount_cents": 75000})
            return {"result": shown(r), "elicitations": seen}


async def main():
    out = await run()
    out["elicit"] = await elicit()
    print(json.dumps(out))


asyncio.run(main())
