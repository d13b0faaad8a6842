"""What ``@governed`` adds to one tool call: 1,000 allowed calls of a function that does
nothing, each timed (evaluate, then the receipt: two round trips), against a running server.

    AGENTNEXUS_URL=http://127.0.0.1:8080 AGENTNEXUS_KEY=anx_… python benchmarks/guard_overhead.py

The workspace needs a policy that allows ``bench.noop``. Prints p50, p90, p99 and max in ms.
"""

from __future__ import annotations

import os
import statistics
import time

from agentnexus import AgentNexus, governed

client = AgentNexus(os.environ["AGENTNEXUS_URL"], os.environ["AGENTNEXUS_KEY"])


@governed(client=client, agent_id="bench-bot", action="bench.noop")
def noop(n: int) -> int:
    return n


def main() -> None:
    for i in range(100):
        noop(n=i)
    took = []
    for i in range(1000):
        start = time.perf_counter()
        noop(n=i)
        took.append((time.perf_counter() - start) * 1000)
    took.sort()
    q = statistics.quantiles(took, n=100)
    print(f"calls=1000 p50={q[49]:.2f}ms p90={q[89]:.2f}ms p99={q[98]:.2f}ms max={took[-1]:.2f}ms")


if __name__ == "__main__":
    main()
