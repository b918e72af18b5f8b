"""The chart of bench/peers.py's figures (run by the bench env's Python, which has matplotlib).

    python peers_chart.py peers.json peers.png
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(source: str, target: str) -> None:
    data = json.loads(open(source).read())
    labels = list(dict.fromkeys(c["label"] for c in data["cells"]))
    cells = {(c["label"], c["workload"]): c for c in data["cells"]}
    fig, (left, right) = plt.subplots(1, 2, figsize=(15, 6.5))
    width = 0.8 / 3
    for i, workload in enumerate(("W0", "W80", "W100")):
        xs = [j + i * width for j in range(len(labels))]
        left.barh(xs, [cells.get((label, workload), {}).get("req_per_s", 0) for label in labels], width,
                  label=workload)
        right.barh(xs, [cells.get((label, workload), {}).get("p99_ms", 0) for label in labels], width,
                   label=workload)
    for axis, title, unit in ((left, "Throughput", "requests/s (log)"), (right, "p99 latency", "ms (log)")):
        axis.set_yticks([j + width for j in range(len(labels))], labels if axis is left else [""] * len(labels),
                        fontsize=8)
        axis.set_xscale("log")
        axis.set_xlabel(unit)
        axis.set_title(title)
        axis.invert_yaxis()
        axis.legend(fontsize=8)
    fig.suptitle(f"MLP 512-4096-4096-16 (ONNX, 1 thread), each server on one core, wrk -t1 -c{data['connections']} "
                 f"on the other; {data['seconds']} s a cell, {data['when']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(target, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
