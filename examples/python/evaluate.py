"""Proposes actions to AgentNexus and acts on the decision (standard library only).

    AGENTNEXUS_KEY=anx_… python3 examples/python/evaluate.py

AGENTNEXUS_URL defaults to the local server. A require_approval decision is waited for with
the long poll (`?wait=`), up to a minute here.
"""
import json
import os
import urllib.error
import urllib.request

URL = os.environ.get("AGENTNEXUS_URL", "http://127.0.0.1:8080")
KEY = os.environ["AGENTNEXUS_KEY"]


def call(method, path, body=None):
    request = urllib.request.Request(
        URL + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=90) as response:
            return json.load(response)
    except urllib.error.HTTPError as e:
        problem = json.load(e)  # application/problem+json
        raise SystemExit(f"{problem['status']} {problem['title']}: {problem['detail']}")


def propose(action, wait_secs=0, **fields):
    ev = call("POST", "/api/v1/evaluate", {"agent_id": "billing-bot", "action": action, **fields})
    if ev["status"] == "pending" and wait_secs > 0:
        # Held until the evaluation changes or the wait ends; it may still be pending then.
        ev = call("GET", f"/api/v1/evaluations/{ev['evaluation_id']}?wait={wait_secs}")
    return ev


for action, fields in [
    ("stripe.refund", {"amount_cents": 1200}),
    ("db.delete", {"context": {"environment": "production"}}),
    ("stripe.refund", {"amount_cents": 75000}),
]:
    ev = propose(action, **fields)
    if ev["status"] in ("allowed", "approved"):
        print(f"{action}: go ahead ({ev['reason']})")
    elif ev["status"] == "pending":
        print(f"{action}: waiting for a human, evaluation {ev['evaluation_id']}")
    else:
        print(f"{action}: do not act, {ev['status']} ({ev['reason']})")
