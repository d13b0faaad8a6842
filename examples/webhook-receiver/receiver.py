"""A webhook receiver for AgentNexus: verifies each delivery, de-duplicates by webhook-id and
prints one line per event (standard library only).

    AGENTNEXUS_WEBHOOK_SECRET=whsec_… python3 examples/webhook-receiver/receiver.py

Listens on 127.0.0.1:$PORT (default 8000). Send it a test event with
`POST /api/v1/webhooks/test {"url": "http://127.0.0.1:8000/hook"}` (a server that delivers to
loopback needs AGENTNEXUS_WEBHOOK_ALLOW_PRIVATE=1).
"""
import json
import os
from http.server import BaseHTTPRequestHandler, HTTPServer

from verify_webhook import InvalidWebhook, verify_webhook

SECRET = os.environ["AGENTNEXUS_WEBHOOK_SECRET"]  # whsec_… from GET /api/v1/webhooks/secret
PORT = int(os.environ.get("PORT", "8000"))
seen = set()  # in production: a table with a unique webhook-id column


class Hook(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            verify_webhook(SECRET, headers, body)
        except InvalidWebhook as e:
            self.send_error(401, str(e))
            return
        if headers["webhook-id"] not in seen:  # a retry of an event already handled
            seen.add(headers["webhook-id"])
            event = json.loads(body)
            # `test` events are about no evaluation; answer 2xx to event types you do not know.
            print(event["event"], event.get("evaluation_id", "-"), event.get("status", "-"), flush=True)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass  # one line per event is enough


print(f"listening on 127.0.0.1:{PORT}", flush=True)
HTTPServer(("127.0.0.1", PORT), Hook).serve_forever()
