#!/usr/bin/env bash
# Proposes a refund and prints the decision. Needs AGENTNEXUS_KEY (an agent or admin key);
# AGENTNEXUS_URL defaults to the local server.
set -euo pipefail
url=${AGENTNEXUS_URL:-http://127.0.0.1:8080}
amount=${1:-1200}
curl -sS --fail-with-body -X POST "$url/api/v1/evaluate" \
  -H "Authorization: Bearer $AGENTNEXUS_KEY" \
  -H 'Content-Type: application/json' \
  --data-binary @- <<JSON
{"agent_id": "billing-bot", "action": "stripe.refund", "resource": "cus_1",
 "amount_cents": $amount, "idempotency_key": "refund-cus_1-$amount"}
JSON
echo
