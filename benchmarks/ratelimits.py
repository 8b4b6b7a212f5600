"""Rate limits: the engine (with its SQLite store) against a lean loopback endpoint that
throttles the way providers do, in its own process (``benchmarks/lean_server.py``).

- a token bucket of 150 requests/s with OpenAI's rate-limit headers: the share of the limit
  served over a steady window, and the share of requests answered 429 (targets: at least 90%
  of the limit, at most 10% throttled);
- 10% of requests refused at random with ``Retry-After: 0.2``, no rate-limit headers, at
  concurrency 64 and latency 0.5 s: the share of ideal (target: at least 65%).

Each is run ``--repeats`` times; the spread between runs is the noise. Run: ``make bench``
or ``.venv/bin/python benchmarks/ratelimits.py``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fanout import engine_path, load, measure, server_stats, start_server

BUCKET_RPS = 150.0
BUCKET_TARGET, THROTTLED_TARGET = 0.90, 0.10
RANDOM_SHARE, RANDOM_RETRY_AFTER, RANDOM_TARGET = 0.10, 0.2, 0.65


def run(
    flags: list[str], concurrency: int, latency: float, warm_s: float, window_s: float, n: int
) -> tuple[list[float], list[float], float]:
    """Calls/s of each repeat, the share throttled of each, and the engine's CPU per call."""
    proc, root = start_server(*flags)
    rates, throttled, cpus = [], [], []
    try:
        for _ in range(n):
            before = server_stats(root)
            rate, cpu, _ = measure(
                engine_path,
                False,
                f"{root}/L{latency:g}/v1",
                concurrency,
                latency,
                proc.pid,
                warm_s=warm_s,
                window_s=window_s,
            )
            after = server_stats(root)
            requests = max(1.0, after["requests"] - before["requests"])
            rates.append(rate)
            throttled.append((after["throttled"] - before["throttled"]) / requests)
            cpus.append(cpu)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return rates, throttled, statistics.mean(cpus)


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def spread(values: list[float]) -> str:
    mean = statistics.mean(values)
    return f"{100 * (max(values) - min(values)) / mean:.1f}%" if mean else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(f"{load()}; {args.repeats} runs each")

    rates, throttled, cpu = run(["--rpm", str(BUCKET_RPS * 60)], 64, 0.2, 2.0, 6.0, args.repeats)
    share, refused = statistics.mean(rates) / BUCKET_RPS, statistics.mean(throttled)
    print(
        f"bucket of {BUCKET_RPS:g} requests/s, concurrency 64, L=0.2 s: "
        f"{statistics.mean(rates):.0f} calls/s = {100 * share:.1f}% of the limit "
        f"(A/A {spread(rates)}), {100 * refused:.1f}% of requests throttled, "
        f"CPU {1e3 * cpu:.3f} ms/call"
    )
    print(f"  >= {100 * BUCKET_TARGET:.0f}% of the limit: {verdict(share >= BUCKET_TARGET)}")
    print(f"  <= {100 * THROTTLED_TARGET:.0f}% throttled: {verdict(refused <= THROTTLED_TARGET)}")

    flags = ["--random-429", str(RANDOM_SHARE), "--retry-after", str(RANDOM_RETRY_AFTER)]
    rates, throttled, cpu = run(flags, 64, 0.5, 1.5, 4.0, args.repeats)
    share = statistics.mean(rates) / (64 / 0.5)
    print(
        f"{100 * RANDOM_SHARE:.0f}% random 429s (Retry-After {RANDOM_RETRY_AFTER:g} s), "
        f"concurrency 64, L=0.5 s: {statistics.mean(rates):.0f} calls/s = "
        f"{100 * share:.1f}% of ideal (A/A {spread(rates)}), CPU {1e3 * cpu:.3f} ms/call"
    )
    print(f"  >= {100 * RANDOM_TARGET:.0f}% of ideal: {verdict(share >= RANDOM_TARGET)}")
    print(load())


if __name__ == "__main__":
    main()
