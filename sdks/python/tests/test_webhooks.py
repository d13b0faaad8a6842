"""Webhook verification: the Standard Webhooks test vector, tampering, and a real delivery."""

from __future__ import annotations

import http.server
import json
import queue
import threading
import time
from typing import Any

import httpx
import pytest

from agentnexus import AgentNexus, InvalidSignature, verify
from conftest import Server

# From the Standard Webhooks specification's test vectors.
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
HEADERS = {
    "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
    "webhook-timestamp": "1614265330",
    "webhook-signature": "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=",
}
BODY = b'{"test": 2432232314}'


def test_the_standard_vector() -> None:
    assert verify(SECRET, HEADERS, BODY, now=1614265330) == {"test": 2432232314}
    with pytest.raises(InvalidSignature):
        verify(SECRET, HEADERS, BODY.replace(b"2", b"3"), now=1614265330)
    with pytest.raises(InvalidSignature):
        verify(SECRET, HEADERS, BODY, now=1614265330 + 3600)
    with pytest.raises(InvalidSignature):
        verify(SECRET, {"webhook-id": "x"}, BODY)


def test_a_real_delivery(server: Server) -> None:
    received: queue.Queue[tuple[dict[str, str], bytes]] = queue.Queue()

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            received.put(({k: v for k, v in self.headers.items()}, body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    hook = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    secret = httpx.get(
        f"{server.url}/api/v1/webhooks/secret", headers={"Authorization": f"Bearer {server.admin_key}"}
    ).json()["signing_secret"]
    with AgentNexus(server.url, server.agent_key) as client:
        ev = client.evaluate(
            agent_id="hook-bot",
            action="stripe.refund",
            amount_cents=5000,
            webhook_url=f"http://127.0.0.1:{hook.server_address[1]}/hook",
        )
    headers, body = received.get(timeout=15)
    event = verify(secret, headers, body, now=time.time())
    assert event["event"] == "approval_required"
    assert event["evaluation_id"] == ev.evaluation_id
    with pytest.raises(InvalidSignature):
        verify(secret, headers, body.replace(b"approval_required", b"terminal_outcome"))
    hook.shutdown()
    json.dumps(event)
