"""The clients against a real server: decisions, the server's refusals as exceptions, waiting
for a person, receipts, and retries that never make a second evaluation."""

from __future__ import annotations

import asyncio
import http.server
import threading
import uuid
from collections.abc import Iterator

import httpx
import pytest

from agentnexus import AgentNexus, AsyncAgentNexus, ProblemError, StillPending, TransportError
from conftest import Server


def test_decisions_and_refusals(server: Server) -> None:
    with AgentNexus(server.url, server.agent_key) as client:
        ok = client.evaluate(agent_id="billing-bot", action="stripe.refund", amount_cents=500)
        assert (ok.decision, ok.status, ok.may_execute) == ("allow", "allowed", True)
        assert [(m.policy, m.rule) for m in ok.matched_rules] == [("payments", "refunds")]
        assert len(ok.proposal_hash) == 64
        no = client.evaluate(agent_id="ops-bot", action="db.delete", resource="orders")
        assert (no.status, no.reason, no.may_execute) == ("denied", "Deletes are not for agents", False)
        assert client.get_evaluation(ok.evaluation_id).status == "allowed"

        with pytest.raises(ProblemError) as refused:
            client.evaluate(agent_id="billing-bot")
        assert refused.value.status == 422 and "action" in refused.value.detail
        with pytest.raises(ProblemError) as missing:
            client.get_evaluation("ev_01aaaaaaaaaaaaaaaaaaaaaaaa")
        assert missing.value.status == 404
    with AgentNexus(server.url, "anx_notakey0000000000000000000000000000") as wrong:
        with pytest.raises(ProblemError) as unknown:
            wrong.evaluate(agent_id="a", action="b")
        assert unknown.value.status == 401


def test_one_idempotency_key_is_one_evaluation(server: Server) -> None:
    with AgentNexus(server.url, server.agent_key) as client:
        key = f"refund-{uuid.uuid4()}"
        first = client.evaluate(agent_id="billing-bot", action="stripe.refund", amount_cents=5, idempotency_key=key)
        again = client.evaluate(agent_id="billing-bot", action="stripe.refund", amount_cents=5, idempotency_key=key)
        assert again.evaluation_id == first.evaluation_id
        with pytest.raises(ProblemError) as conflict:
            client.evaluate(agent_id="billing-bot", action="stripe.refund", amount_cents=6, idempotency_key=key)
        assert conflict.value.status == 409


class LosesFirstAnswer(http.server.BaseHTTPRequestHandler):
    """Forwards to the server, but answers the first request 503 as if its answer were lost."""

    upstream = ""
    seen = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        forwarded = httpx.post(
            f"{self.upstream}{self.path}",
            content=body,
            headers={"Authorization": self.headers["authorization"], "Content-Type": "application/json"},
        )
        type(self).seen += 1
        status, answer = (503, b'{"status": 503}') if type(self).seen == 1 else (forwarded.status_code, forwarded.content)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def flaky(server: Server) -> Iterator[str]:
    LosesFirstAnswer.upstream, LosesFirstAnswer.seen = server.url, 0
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), LosesFirstAnswer)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{proxy.server_address[1]}"
    proxy.shutdown()


def test_a_retry_after_a_lost_answer_is_the_same_evaluation(server: Server, flaky: str) -> None:
    agent = f"retry-{uuid.uuid4().hex[:8]}"
    with AgentNexus(flaky, server.agent_key) as client:
        ev = client.evaluate(agent_id=agent, action="stripe.refund", amount_cents=5)
    assert LosesFirstAnswer.seen == 2
    listed = httpx.get(
        f"{server.url}/api/v1/evaluations",
        params={"agent_id": agent},
        headers={"Authorization": f"Bearer {server.admin_key}"},
    ).json()
    assert [e["evaluation_id"] for e in listed["evaluations"]] == [ev.evaluation_id]


def test_no_server_is_a_transport_error() -> None:
    with AgentNexus("http://127.0.0.1:9", "anx_x", retries=1) as client:
        with pytest.raises(TransportError):
            client.evaluate(agent_id="a", action="b")


def test_waiting_for_a_person(server: Server) -> None:
    with AgentNexus(server.url, server.agent_key) as client:
        ev = client.evaluate(agent_id="billing-bot", action="stripe.refund", amount_cents=5000)
        assert (ev.decision, ev.status) == ("require_approval", "pending")
        assert client.approval_page_url(ev.evaluation_id).endswith(f"/approvals/evaluations/{ev.evaluation_id}")
        with pytest.raises(StillPending):
            client.wait_for_decision(ev.evaluation_id, timeout=1)
        threading.Timer(0.5, server.approve, args=(ev.evaluation_id,)).start()
        done = client.wait_for_decision(ev.evaluation_id, timeout=30)
        assert (done.status, done.may_execute) == ("approved", True)
        receipted = client.report_receipt(ev.evaluation_id, "executed", done.proposal_hash)
        assert receipted.raw["receipt"]["conforms"] is True, receipted.raw


def test_the_async_client(server: Server) -> None:
    async def run() -> None:
        async with AsyncAgentNexus(server.url, server.agent_key) as client:
            ev = await client.evaluate(agent_id="billing-bot", action="stripe.refund", amount_cents=5000)
            assert ev.status == "pending"
            loop = asyncio.get_running_loop()
            loop.call_later(0.3, lambda: threading.Thread(target=server.approve, args=(ev.evaluation_id, "reject")).start())
            done = await client.wait_for_decision(ev.evaluation_id, timeout=30)
            assert (done.status, done.may_execute) == ("rejected", False)
            with pytest.raises(ProblemError):
                await client.evaluate(agent_id="", action="x")

    asyncio.run(run())
