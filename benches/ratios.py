#!/usr/bin/env python3
"""Prints the ratio table of the bus benchmarks from criterion's saved estimates.

Run after `cargo bench --bench emit_sync --bench emit_async --bench fanout`:

    python3 benches/ratios.py [TARGET_DIR/criterion]

Rates use the median time per iteration and the throughput (elements) criterion saved
with each benchmark; the ratio is ours / baseline, compared with the target of
BENCHMARKS.md (P1-P3). Standard library only.
"""

import json
import os
import sys

# group: (our function id, baseline function id, target ratio, extra baselines)
PAIRS = {
    "emit_sync": ("bus", "boxed_fn_vec", 0.7, []),
    "emit_async": ("bus_worker_pool", "tokio_mpsc_shared_rx", 0.8, ["tokio_mpsc_spawn"]),
    "fanout_sync": ("bus", "broadcast", 0.6, []),
    "fanout_async": ("bus_worker_pool", "broadcast", 0.6, []),
}


def rate(root, group, function, param):
    """Elements per second of one benchmark, or None if it has not run."""
    base = os.path.join(root, group, function, param, "new")
    try:
        with open(os.path.join(base, "estimates.json")) as f:
            median_ns = json.load(f)["median"]["point_estimate"]
        with open(os.path.join(base, "benchmark.json")) as f:
            elements = json.load(f)["throughput"]["Elements"]
    except (OSError, KeyError, TypeError):
        return None
    return elements / (median_ns * 1e-9)


def human(r):
    if r is None:
        return "-"
    for unit, scale in (("M", 1e6), ("k", 1e3)):
        if r >= scale:
            return f"{r / scale:.2f} {unit}/s"
    return f"{r:.0f} /s"


def params(root, group, function):
    path = os.path.join(root, group, function)
    if not os.path.isdir(path):
        return []
    found = [p for p in os.listdir(path) if os.path.isdir(os.path.join(path, p, "new"))]
    return sorted(found, key=lambda p: (len(p), p))


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join("target", "criterion")
    print("| benchmark | param | ours | baseline | ours / baseline | target | extra baselines |")
    print("|---|---|---|---|---|---|---|")
    for group, (ours, baseline, target, extras) in PAIRS.items():
        for param in params(root, group, ours):
            o = rate(root, group, ours, param)
            b = rate(root, group, baseline, param)
            ratio = f"{o / b:.2f}x" if o and b else "-"
            more = ", ".join(
                f"{e} {human(rate(root, group, e, param))} ({o / rate(root, group, e, param):.2f}x)"
                for e in extras
                if o and rate(root, group, e, param)
            )
            print(f"| {group} | {param} | {human(o)} | {baseline} {human(b)} | {ratio} | >={target}x | {more} |")


if __name__ == "__main__":
    main()
