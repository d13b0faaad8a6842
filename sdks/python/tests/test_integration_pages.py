"""docs/integrations/*.md (the Python frameworks) run as written against the test server: the
page's snippet executed with the server's URL and an agent key put in for the placeholders,
and the framework's own kind of fake model as `model`, asking for a $50 refund that an owner
approves from the dashboard while the snippet waits."""

from __future__ import annotations

import contextlib
import io
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from langchain_core.messages import AIMessage

from conftest import Server
from test_langgraph import ToolCallingFake
from test_openai_agents import Scripted

PAGES = Path(__file__).resolve().parents[3] / "docs" / "integrations"


def snippet(page: str, server: Server) -> str:
    (block,) = re.findall(r"```python\n(.*?)```", (PAGES / page).read_text(), re.S)
    assert isinstance(block, str)
    return block.replace("http://127.0.0.1:8080", server.url).replace("anx_…", server.agent_key)


def approve_when_pending(server: Server, agent_id: str) -> threading.Thread:
    """Approves the agent's first pending evaluation as the owner, as soon as there is one."""

    def run() -> None:
        for _ in range(300):
            r = httpx.get(
                f"{server.url}/api/v1/evaluations",
                params={"agent_id": agent_id, "status": "pending"},
                headers={"Authorization": f"Bearer {server.admin_key}"},
            )
            pending = r.json()["evaluations"]
            if pending:
                server.approve(pending[0]["evaluation_id"])
                return
            time.sleep(0.05)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def run_page(page: str, server: Server, model: Any, agent_id: str) -> str:
    code = snippet(page, server).replace('"support-bot"', f'"{agent_id}"')
    approver = approve_when_pending(server, agent_id)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, page, "exec"), {"model": model, "__name__": "__main__"})
    approver.join(timeout=30)
    return out.getvalue()


def test_the_langgraph_page(server: Server) -> None:
    agent_id = f"lg-{uuid.uuid4().hex[:6]}"
    call = {"name": "refund", "args": {"charge": "ch_2", "amount_cents": 5000}, "id": "page_1", "type": "tool_call"}
    model = ToolCallingFake(messages=iter([AIMessage(content="", tool_calls=[call]), AIMessage(content="Refunded $50.")]))
    printed = run_page("langgraph.md", server, model, agent_id).splitlines()
    assert printed == ["waiting for a person: Large refunds need an owner", "Refunded $50."], printed


def test_the_openai_agents_page(server: Server) -> None:
    agent_id = f"oa-{uuid.uuid4().hex[:6]}"
    model = Scripted("refund", '{"charge": "ch_2", "amount_cents": 5000}', f"page_{agent_id}")
    printed = run_page("openai-agents-python.md", server, model, agent_id).splitlines()
    assert printed == ["waiting for a person", "tool said: refunded 5000 on ch_2"], printed
