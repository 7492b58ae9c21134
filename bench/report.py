#!/usr/bin/env python3
"""Table, CSV and plot for one bench/run.sh run: report.py RESULTS_DIR [--no-plot].

Reads results.jsonl (one line per server × run × scene size × client count) and
samples.csv (latency samples). Every figure is the median over runs; every ratio is the
median of the per-run ratios Tandem/peer (both measured in the same run). Writes
summary.csv and latency.png (matplotlib: empirical CDFs of propagation latency) and prints
the table in Markdown.
"""
import csv
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

PEERS = ["tandem", "amrepo", "samod", "hocuspocus"]
LABEL = {
    "tandem": "Tandem",
    "amrepo": "automerge-repo 2.5.6 (Node)",
    "samod": "samod 0.16",
    "hocuspocus": "Hocuspocus 4.7 (Yjs)",
}

COLOR = {"tandem": "tab:blue", "amrepo": "tab:orange", "samod": "tab:green", "hocuspocus": "tab:red"}

# (key, label, unit, per-clients?, how to get the value from a result line)
FIGURES = [
    ("prop_p50", "propagation A→server→B p50", "ms", True, lambda r: r["prop_p50_ms"]),
    ("prop_p99", "propagation A→server→B p99", "ms", True, lambda r: r["prop_p99_ms"]),
    ("prop_late", "probe edits not at B 5 s after the last edit (late)", "", True, lambda r: r.get("prop_late", r["prop_lost"])),
    ("prop_lost", "probe edits never at B (30 s after the last edit)", "", True, lambda r: r["prop_lost"]),
    ("prop_lost_on_server", "… of which a fresh client found on the server (not dropped)", "", True,
     lambda r: r.get("prop_lost_on_server")),
    ("ack_p50", "durable ack p50", "ms", True, lambda r: r.get("ack_p50_ms")),
    ("ack_p99", "durable ack p99", "ms", True, lambda r: r.get("ack_p99_ms")),
    ("cpu_per_edit", "server CPU per edit", "ms", True,
     lambda r: 1e3 * r["server_cpu_s"] / r["edits"] if r["edits"] else None),
    ("driver_cpu", "bench clients' CPU per edit (same 2 cores)", "ms", True,
     lambda r: 1e3 * r["driver_cpu_s"] / r["edits"] if r.get("driver_cpu_s") is not None and r["edits"] else None),
    ("server_msgs", "server sync messages to clients per edit", "", True, lambda r: r.get("server_msgs_per_edit")),
    ("answers", "client answers to the server per edit", "", True, lambda r: r.get("answers_per_edit")),
    ("up_bytes", "bytes per edit, client→server", "B", True, lambda r: r["up_bytes_per_edit"]),
    ("down_bytes", "bytes per edit, server→B", "B", True, lambda r: r["down_bytes_per_edit_b"]),
    ("join", "late join (connect → whole scene)", "ms", False, lambda r: r["join_p50_ms"]),
    ("join_bytes", "late join bytes received", "KB", False, lambda r: r["join_bytes"] / 1e3),
    ("rss_loaded", "server RSS, scene loaded", "MB", False, lambda r: r["rss_loaded_mb"]),
    ("rss_peak", "server peak RSS (VmHWM) after the size's runs", "MB", False, lambda r: r["rss_peak_mb"]),
]


def num(v):
    return v is not None and not (isinstance(v, float) and math.isnan(v))


# Propagation percentiles at or above this are censored (a lost probe, infinitely late).
LOST_AFTER_MS = 30000
COUNT_2DP = {"server_msgs", "answers"}


def fmt(v, unit="", key=""):
    if not num(v):
        return "—"
    if key.startswith("prop_p") and v >= LOST_AFTER_MS:
        return f"> {LOST_AFTER_MS // 1000} s"
    if key in COUNT_2DP:
        return f"{v:.2f}"
    if unit == "":
        return f"{v:.0f}"
    a = abs(v)
    s = f"{v:.3f}" if a < 1 else f"{v:.2f}" if a < 10 else f"{v:.1f}" if a < 100 else f"{v:.0f}"
    return f"{s} {unit}"


def main():
    out = Path(sys.argv[1])
    plot = "--no-plot" not in sys.argv
    rows = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines() if l.strip()]
    failed = [r for r in rows if "error" in r]
    rows = [r for r in rows if "error" not in r]
    if not rows:
        print("no results")
        return 1
    # values[(fig, nodes, clients)][server][run] = value
    values = defaultdict(lambda: defaultdict(dict))
    for r in rows:
        for key, _, _, per_clients, get in FIGURES:
            c = r["clients"] if per_clients else 0
            v = get(r)
            if num(v):
                values[(key, r["nodes"], c)][r["server"]][r["run"]] = v
    servers = [p for p in PEERS if any(r["server"] == p for r in rows)]
    peers = [p for p in servers if p != "tandem"]
    sizes = sorted({r["nodes"] for r in rows})
    clients = sorted({r["clients"] for r in rows})
    runs = sorted({r["run"] for r in rows})

    header = ["figure", "scene", "clients"] + [LABEL[s] for s in servers]
    header += [f"Tandem / {LABEL[p].split(' ')[0]}" for p in peers]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    csv_rows = []
    for key, label, unit, per_clients, _ in FIGURES:
        for n in sizes:
            for c in (clients if per_clients else [0]):
                cell = values.get((key, n, c))
                if not cell:
                    continue
                row = [label + (f" ({unit})" if unit and False else ""), f"{n // 1000}k" if n >= 1000 else str(n),
                       str(c) if per_clients else "—"]
                med = {}
                for s in servers:
                    vs = list(cell.get(s, {}).values())
                    med[s] = statistics.median(vs) if vs else None
                    if key.startswith("ack") and s != "tandem":
                        row.append("none")
                    else:
                        row.append(fmt(med[s], unit, key))
                    csv_rows.append({"figure": key, "nodes": n, "clients": c if per_clients else "",
                                     "server": s, "median": med[s] if num(med[s]) else "",
                                     "unit": unit, "runs": len(vs),
                                     "values": " ".join(f"{v:.4g}" for v in vs)})
                for p in peers:
                    ratios = [cell["tandem"][k] / cell[p][k] for k in runs
                              if k in cell.get("tandem", {}) and k in cell.get(p, {}) and cell[p][k]]
                    r = statistics.median(ratios) if ratios else None
                    censored = key.startswith("prop_p") and any(
                        v >= LOST_AFTER_MS for v in list(cell.get("tandem", {}).values()) + list(cell.get(p, {}).values()))
                    row.append(f"{r:.2f}×" if num(r) and key not in ("prop_lost", "prop_late", "prop_lost_on_server") and not censored else "—")
                    if num(r):
                        csv_rows.append({"figure": key, "nodes": n, "clients": c if per_clients else "",
                                         "server": f"ratio tandem/{p}", "median": r, "unit": "×",
                                         "runs": len(ratios), "values": " ".join(f"{v:.4g}" for v in ratios)})
                lines.append("| " + " | ".join(row) + " |")
    table = "\n".join(lines)
    meta = (out / "meta.txt").read_text() if (out / "meta.txt").exists() else ""
    (out / "table.md").write_text(table + "\n")
    with open(out / "summary.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["figure", "nodes", "clients", "server", "median", "unit", "runs", "values"])
        w.writeheader()
        w.writerows(csv_rows)
    print(meta.strip())
    print(f"medians over {len(runs)} run(s); ratios = median of per-run Tandem/peer (<1 means Tandem is lower)")
    print()
    print(table)
    for r in failed:
        print(f"\nfailed: {LABEL.get(r['server'], r['server'])}, {r['nodes']} nodes × {r['clients']} clients, "
              f"run {r.get('run', '?')}: {r['error']}")
    if plot:
        write_plot(out, servers, sizes, clients)
    return 0


def write_plot(out, servers, sizes, clients):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("\n(matplotlib not installed: no latency.png)")
        return
    samples = defaultdict(list)
    path = out / "samples.csv"
    if not path.exists():
        return
    with open(path) as f:
        for server, n, c, kind, v in csv.reader(f):
            samples[(server, int(n), int(c), kind)].append(float(v))
    fig, axes = plt.subplots(len(sizes), len(clients), figsize=(4.2 * len(clients), 3.4 * len(sizes)),
                             squeeze=False, sharex=True)
    for i, n in enumerate(sizes):
        for j, c in enumerate(clients):
            ax = axes[i][j]
            for s in servers:
                v = sorted(samples.get((s, n, c, "propagation"), []))
                if v:
                    ax.plot(v, [(k + 1) / len(v) for k in range(len(v))], color=COLOR[s],
                            label=f"{LABEL[s]} (n={len(v)})")
            v = sorted(samples.get(("tandem", n, c, "durable_ack"), []))
            if v:
                ax.plot(v, [(k + 1) / len(v) for k in range(len(v))], "k--", lw=1, label="Tandem durable ack")
            ax.set_xscale("log")
            ax.set_title(f"{n:,} nodes × 20 parms, {c} client(s) at 60 Hz", fontsize=9)
            ax.set_xlabel("A→server→B latency (ms, log)")
            ax.set_ylabel("fraction of edits")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)
    print(f"\nplot: {out / 'latency.png'}")


if __name__ == "__main__":
    sys.exit(main())
