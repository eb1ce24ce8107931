"""Compare runs: a table (and, with --plot, an accuracy-vs-cost plot) from result.json files.

    seats-exp-report outputs/multirun/2026-11-24/12-00-00          # every result.json below
    seats-exp-report outputs/runs --plot report.png --markdown report.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COLUMNS = ("method", "schedule", "benchmark", "accuracy", "n", "errors", "llm_in", "kept_avg", "TFLOPs", "flops_x", "prefill_ms")


def _row(r: dict) -> dict:
    cost = r.get("cost") or {}
    per_layer = cost.get("tokens_per_layer") or []
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    return {
        "method": r.get("method"), "schedule": r.get("schedule"), "benchmark": r.get("benchmark"),
        "accuracy": fmt(r.get("accuracy"), ".1f"), "n": str(r.get("n_samples", 0)), "errors": str(r.get("n_errors", 0)),
        "llm_in": fmt(cost.get("llm_input_tokens"), ".0f"),
        "kept_avg": fmt(sum(per_layer) / len(per_layer) if per_layer else None, ".0f"),
        "TFLOPs": fmt(cost.get("prefill_tflops"), ".4g"), "flops_x": fmt(cost.get("flops_ratio"), ".2f"),
        "prefill_ms": fmt(None if cost.get("time_llm_prefill_s") is None else 1000 * cost["time_llm_prefill_s"], ".1f"),
    }


def format_table(results: list[dict]) -> str:
    rows = [_row(r) for r in results]
    widths = {c: max(len(c), *(len(str(row[c])) for row in rows)) for c in COLUMNS}
    head = "  ".join(c.ljust(widths[c]) for c in COLUMNS)
    lines = [head, "  ".join("-" * widths[c] for c in COLUMNS)]
    lines += ["  ".join(str(row[c]).ljust(widths[c]) for c in COLUMNS) for row in rows]
    return "\n".join(lines)


def format_markdown(results: list[dict]) -> str:
    rows = [_row(r) for r in results]
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(row[c]) for c in COLUMNS) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def collect(paths: list[str]) -> list[dict]:
    results = []
    for p in paths:
        p = Path(p)
        files = [p] if p.is_file() else sorted(p.rglob("result.json"))
        results += [json.loads(f.read_text()) for f in files]
    return results


def plot(results: list[dict], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    by_method: dict[str, list] = {}
    for r in results:
        cost = r.get("cost") or {}
        if r.get("accuracy") is None or cost.get("prefill_tflops") is None:
            continue
        by_method.setdefault(r["method"], []).append((cost["prefill_tflops"], r["accuracy"]))
    for method, pts in sorted(by_method.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method)
    ax.set_xlabel("LLM prefill TFLOPs per sample")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="+", help="run folders, sweep folders or result.json files")
    ap.add_argument("--plot", help="write an accuracy-vs-TFLOPs plot (PNG)")
    ap.add_argument("--markdown", help="write the table as Markdown")
    args = ap.parse_args(argv)
    results = collect(args.paths)
    if not results:
        raise SystemExit(f"no result.json found under {', '.join(args.paths)}")
    print(format_table(results))
    if args.markdown:
        Path(args.markdown).write_text(format_markdown(results))
    if args.plot:
        plot(results, args.plot)
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
