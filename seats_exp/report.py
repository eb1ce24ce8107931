"""Compare runs: the paper's table and its curves from run, sweep or experiment folders.

    seats-exp-report outputs/experiments/paper_qwen2_5_omni_7b              # -> <folder>/report/
    seats-exp-report outputs/experiments/smoke outputs/runs --out cmp/       # several folders, one report
    seats-exp-report --wandb my-team/seats-exp --group paper_qwen2_5_omni_7b # a W&B Report

Writes into the output folder (default ``<first folder>/report``): ``runs.csv`` (one row per run:
identity and every figure), ``report.md`` and a self-contained ``report.html`` (the paper's layout:
methods x R rows, benchmarks as columns, Mean and % of full tokens, the published numbers of
``seats_exp.published`` beside ours where model and benchmark match), and PNG plots under
``plots/``: accuracy vs R, accuracy vs prefill TFLOPs, prefill time split and tokens per layer.
Runs are compared only within a group of the same model, scoring, limit and sample set; other
runs go to their own group and the report says why.  The per-run table is printed.
"""

from __future__ import annotations

import argparse
import base64
import csv
import hashlib
import html
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from seats_exp import published

FULL = "full_tokens"  # the reference method; it ignores the schedule
COLUMNS = ("method", "schedule", "benchmark", "accuracy", "n", "errors", "llm_in", "kept_avg", "TFLOPs", "flops_x", "prefill_ms")
PLOTS = ("accuracy_vs_R", "accuracy_vs_tflops", "prefill_time", "tokens_per_layer")
PANEL_W, PANEL_H, DPI = 4.2, 3.4, 100  # inches per plot panel; PNG pixels = inches x DPI


class ReportError(Exception):
    """Bad input: one line for the user (exit code 2)."""


# ------------------------------------------------------------------------------------------------
# Runs
# ------------------------------------------------------------------------------------------------

@dataclass
class Run:
    result: dict
    path: Path                     # result.json
    config: dict = field(default_factory=dict)      # the run's config.yaml ({} when absent)
    sample_sets: dict = field(default_factory=dict)  # task key -> (n samples, digest of sample ids or None)

    def get(self, key, default=None):
        return self.result.get(key, default)

    @property
    def cost(self) -> dict:
        return self.result.get("cost") or {}

    @property
    def tasks(self) -> dict:
        return self.result.get("tasks") or {}

    @property
    def bench_config(self) -> dict:
        return self.config.get("benchmark") or {}

    @property
    def limit(self):
        return self.bench_config.get("limit", "?") if self.config else "?"

    @property
    def sample_ids(self):
        return self.bench_config.get("sample_ids") if self.config else None

    @property
    def ratios(self) -> tuple[float, float] | None:
        r = self.result.get("ratios") or {}
        return (r["video"], r["audio"]) if "video" in r and "audio" in r else None

    @property
    def R(self) -> int | None:
        return retention(self.get("method"), self.get("schedule"))


def retention(method: str | None, schedule: str | None) -> int | None:
    """Overall retention R in % (the paper's row key): 100 for full tokens, NN for schedule rNN, else None."""
    if method == FULL or schedule == "full":
        return 100
    m = re.fullmatch(r"r(\d+)", schedule or "")
    return int(m.group(1)) if m else None


def _sample_sets(run_dir: Path, result: dict) -> dict:
    """Per task: (number of samples, digest of the sorted sample ids from samples.jsonl when present)."""
    from seats_exp.store import iter_jsonl

    ids: dict[str, set] = {}
    for rec in iter_jsonl(run_dir / "samples.jsonl"):
        if "task" in rec and "sample_id" in rec:
            ids.setdefault(rec["task"], set()).add(str(rec["sample_id"]))
    by_lmms_task = {}
    for key, summary in (result.get("tasks") or {}).items():
        lmms = f"seats_{key}"  # evaluation.benchmarks names lmms-eval tasks seats_<key>
        digest = None
        if lmms in ids:
            digest = hashlib.sha1("\n".join(sorted(ids[lmms])).encode()).hexdigest()[:12]
        by_lmms_task[key] = (summary.get("n_samples"), digest)
    return by_lmms_task


def load_run(result_path: Path) -> Run:
    import yaml

    try:
        result = json.loads(result_path.read_text())
    except (OSError, ValueError) as exc:
        raise ReportError(f"unreadable result file {result_path}: {exc}") from None
    if not isinstance(result, dict) or "method" not in result or "model" not in result:
        raise ReportError(f"{result_path} is not a seats-exp result.json (no model/method)")
    config = {}
    cfg = result_path.parent / "config.yaml"
    if cfg.is_file():
        config = yaml.safe_load(cfg.read_text()) or {}
    return Run(result, result_path, config, _sample_sets(result_path.parent, result))


def collect(paths: list[str]) -> list[Run]:
    runs, seen = [], set()
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise ReportError(f"no such file or folder: {p}")
        files = [p] if p.is_file() else sorted(p.rglob("result.json"))
        for f in files:
            if f.resolve() not in seen:
                seen.add(f.resolve())
                runs.append(load_run(f))
    return runs


# ------------------------------------------------------------------------------------------------
# Groups of comparable runs, and the paper-layout table of each
# ------------------------------------------------------------------------------------------------

IDENTITY = ("model", "scoring", "scoring_seed", "limit", "sample_ids")


def _identity(run: Run) -> dict:
    return {"model": run.get("model"), "scoring": run.get("scoring"), "scoring_seed": run.get("scoring_seed"),
            "limit": run.limit, "sample_ids": json.dumps(run.sample_ids, sort_keys=True)}


@dataclass
class Row:
    method: str
    R: int | None
    label: str                     # method title plus what tells variants apart
    r_label: str                   # "35 (30-65)"
    ratios: tuple | None
    cells: dict = field(default_factory=dict)   # task -> (accuracy, run)
    runs: list = field(default_factory=list)
    published: published.PublishedRow | None = None

    @property
    def is_full(self) -> bool:
        return self.method == FULL


@dataclass
class Group:
    index: int
    identity: dict
    sample_sets: dict              # task -> (n, digest)
    runs: list = field(default_factory=list)
    rows: list = field(default_factory=list)
    columns: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    apart: list = field(default_factory=list)   # why this group is not joined with earlier ones

    @property
    def model(self) -> str:
        return self.identity["model"]

    @property
    def title(self) -> str:
        i = self.identity
        limit = "all samples" if i["limit"] is None else ("limit unknown" if i["limit"] == "?" else f"limit {i['limit']}")
        ids = "" if i["sample_ids"] == "null" else ", chosen sample ids"
        sizes = ", ".join(f"{bench_title(t)} n={n}" for t, (n, _) in sorted(self.sample_sets.items(), key=lambda kv: _task_order(kv[0])))
        return f"{self.model} · {sizes} · {limit}{ids} · scoring {i['scoring']}"

    @property
    def slug(self) -> str:
        return f"g{self.index}_" + re.sub(r"[^A-Za-z0-9]+", "_", self.model).strip("_")

    @property
    def full_row(self) -> Row | None:
        return next((r for r in self.rows if r.is_full), None)


def bench_title(key: str) -> str:
    return published.BENCHMARK_TITLES.get(key, key)


def method_title(name: str) -> str:
    return published.METHOD_TITLES.get(published.ALIASES.get(name, name), name)


def _consistent(sets: dict, run_sets: dict) -> str | None:
    """None if the run's per-task sample sets agree with the group's; else why not."""
    for task, (n, digest) in run_sets.items():
        if task in sets:
            n0, d0 = sets[task]
            if n != n0:
                return f"{bench_title(task)} has {n0} vs {n} samples"
            if digest and d0 and digest != d0:
                return f"{bench_title(task)} has a different sample set (same size {n})"
    return None


def group_runs(runs: list[Run]) -> list[Group]:
    groups: list[Group] = []
    for run in runs:
        ident = _identity(run)
        reasons = []
        for g in groups:
            diff = [k for k in IDENTITY if g.identity[k] != ident[k]]
            why = _consistent(g.sample_sets, run.sample_sets) if not diff else None
            if not diff and why is None:
                g.runs.append(run)
                for t, s in run.sample_sets.items():
                    g.sample_sets.setdefault(t, s)
                break
            reasons.append((g.index, [f"{k} {g.identity[k]} vs {ident[k]}" for k in diff] or [why]))
        else:
            g = Group(len(groups) + 1, ident, dict(run.sample_sets), [run])
            g.apart = [f"not joined with group {i}: {'; '.join(r)}" for i, r in reasons]
            groups.append(g)
    for g in groups:
        _build_rows(g)
    return groups


_VARIANT_SKIP = {"name", "video_ratio", "audio_ratio", "schedule"}


def _variant(run: Run) -> dict:
    v = {"seed": run.get("seed"), "kv_scope": run.get("kv_scope")}
    if run.get("method") != FULL:
        v["ratios"] = run.ratios
    for k, val in (run.get("method_settings") or {}).items():
        if k not in _VARIANT_SKIP:
            v[k] = json.dumps(val, sort_keys=True)
    return v


def _r_label(method: str, R: int | None, ratios) -> str:
    if method == FULL:
        return "100"
    pair = f"{round(100 * ratios[0])}-{round(100 * ratios[1])}" if ratios else "?"
    return f"{R} ({pair})" if R is not None else f"custom ({pair})"


_PAPER_ORDER = list(published.BENCHMARKS)


def _task_order(t: str):
    return (_PAPER_ORDER.index(t), "") if t in _PAPER_ORDER else (len(_PAPER_ORDER), t)


def _build_rows(g: Group) -> None:
    by_key: dict[tuple, list[Run]] = {}
    for run in g.runs:
        key = (run.get("method"), run.R if run.R is not None else json.dumps(run.ratios))
        by_key.setdefault(key, []).append(run)
    # Settings that tell a method's runs apart (seed, kv_scope, a method knob), over all its R values,
    # so one variant keeps one label (one line in the plots) across R.
    per_method: dict[str, list[dict]] = {}
    for run in g.runs:
        v = {k: val for k, val in _variant(run).items() if k != "ratios"}
        per_method.setdefault(run.get("method"), []).append(json.loads(json.dumps(v, default=str)))
    rows = []
    for (method, _), runs in by_key.items():
        variants: dict[str, list[Run]] = {}
        for run in runs:
            variants.setdefault(json.dumps(_variant(run), sort_keys=True, default=str), []).append(run)
        here = [json.loads(k) for k in variants]
        differing = sorted(k for k in set().union(*per_method[method])
                           if len({json.dumps(v.get(k)) for v in per_method[method]}) > 1)
        if len({json.dumps(v.get("ratios")) for v in here}) > 1:
            differing.append("ratios")
        for vkey, vruns in variants.items():
            v = json.loads(vkey)
            run0 = vruns[0]
            suffix = ", ".join(f"{k}={v.get(k)}" for k in differing)
            label = method_title(method) + (f" ({suffix})" if suffix else "")
            row = Row(method, run0.R, label, _r_label(method, run0.R, run0.ratios), run0.ratios)
            dups: dict[tuple, list[str]] = {}
            for run in sorted(vruns, key=lambda r: str(r.path)):
                row.runs.append(run)
                for task, summary in run.tasks.items():
                    if task in row.cells:
                        dups.setdefault((row.cells[task][1].path.parent.name, run.path.parent.name), []).append(task)
                        continue
                    row.cells[task] = (summary.get("accuracy"), run)
            for (first, again), tasks in dups.items():
                g.notes.append(f"{row.label} R={row.r_label}: {', '.join(map(bench_title, tasks))} in two runs "
                               f"({first}, {again}); the table shows the first, runs.csv has both")
            row.published = published.lookup(g.model, method, row.R, row.ratios)
            rows.append(row)
    rows.sort(key=lambda r: (not r.is_full, -(r.R if r.R is not None else -1), r.method == "seats", r.method, r.label))
    g.rows = rows
    g.columns = sorted({t for r in rows for t in r.cells}, key=_task_order)


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def row_mean(g: Group, row: Row) -> float | None:
    """Mean accuracy over the group's benchmarks; None unless the row has every one of them."""
    if any(row.cells.get(t, (None,))[0] is None for t in g.columns):
        return None
    return _mean(row.cells[t][0] for t in g.columns)


def row_tflops(row: Row, task: str | None = None) -> float | None:
    tasks = [task] if task else list(row.cells)
    return _mean(((row.cells[t][1].tasks.get(t) or {}).get("cost") or {}).get("prefill_tflops")
                 for t in tasks if t in row.cells)


def pct_of_full(g: Group, row: Row) -> float | None:
    full = g.full_row
    m, f = row_mean(g, row), row_mean(g, full) if full else None
    return 100.0 * m / f if m is not None and f else None


def published_applies(g: Group, row: Row) -> list[str]:
    """The group's benchmark columns that the row's published numbers cover (same model and benchmark)."""
    if row.published is None:
        return []
    return [t for t in g.columns if t in row.published.accuracy]


def published_mean_applies(g: Group) -> bool:
    return set(published.BENCHMARKS) <= set(g.columns)


# ------------------------------------------------------------------------------------------------
# runs.csv
# ------------------------------------------------------------------------------------------------

def _fmt_num(v):
    return "" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)


def run_record(run: Run, group: int) -> dict:
    r, c = run.result, run.cost
    rec = {
        "group": group, "run_name": r.get("run_name"), "model": r.get("model"), "method": r.get("method"),
        "schedule": r.get("schedule"), "R": run.R,
        "video_ratio": (run.ratios or (None, None))[0], "audio_ratio": (run.ratios or (None, None))[1],
        "benchmark": r.get("benchmark"), "tasks": ";".join(run.tasks), "limit": run.limit,
        "sample_ids": "" if run.sample_ids is None else json.dumps(run.sample_ids),
        "seed": r.get("seed"), "scoring": r.get("scoring"), "scoring_seed": r.get("scoring_seed"),
        "kv_scope": r.get("kv_scope"), "git_commit": r.get("git_commit"),
        "method_settings": json.dumps(r.get("method_settings"), sort_keys=True),
        "accuracy": r.get("accuracy"), "n_samples": r.get("n_samples"), "n_errors": r.get("n_errors"),
    }
    for key in ("prefill_tflops", "prefill_tflops_full", "flops_ratio", "input_tokens", "llm_input_tokens",
                "time_encoders_s", "time_selection_s", "time_llm_prefill_s", "peak_memory_gb",
                "fidelity_top1_agreement", "fidelity_kl"):
        rec[key] = c.get(key)
    for key in ("tokens_per_layer", "video_tokens_per_layer", "audio_tokens_per_layer"):
        values = c.get(key) or []
        rec[f"{key}_mean"] = _mean(values)
        rec[f"{key}_first"] = values[0] if values else None
        rec[f"{key}_last"] = values[-1] if values else None
        rec[key] = ";".join(f"{v:.6g}" for v in values)
    rec["wall_time_s"] = r.get("wall_time_s")
    for task, s in run.tasks.items():
        rec[f"{task}/accuracy"] = s.get("accuracy")
        rec[f"{task}/n_samples"] = s.get("n_samples")
        rec[f"{task}/n_errors"] = s.get("n_errors")
        rec[f"{task}/prefill_tflops"] = (s.get("cost") or {}).get("prefill_tflops")
        for table, values in (s.get("breakdowns") or {}).items():
            for category, acc in values.items():
                rec[f"{task}/{table}/{category}"] = acc
    rec["run_dir"] = str(run.path.parent)
    return rec


def write_csv(groups: list[Group], path: Path) -> None:
    records = [run_record(run, g.index) for g in groups for run in g.runs]
    columns: list[str] = []
    for rec in records:
        columns += [k for k in rec if k not in columns]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        for rec in records:
            w.writerow({k: _fmt_num(rec.get(k)) for k in columns})


# ------------------------------------------------------------------------------------------------
# The per-run console table (printed by every call, e.g. by the main job)
# ------------------------------------------------------------------------------------------------

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
    lines += ["  ".join(str(row[c]).ljust(widths[c]) for c in COLUMNS).rstrip() for row in rows]
    return "\n".join(lines)


def format_console(groups: list[Group]) -> str:
    out = []
    for g in groups:
        if len(groups) > 1:
            out.append(f"group {g.index}: {g.title}")
            out += [f"  ({a})" for a in g.apart]
        ordered = [run.result for row in g.rows for run in row.runs]
        out.append(format_table(ordered))
        out.append("")
    return "\n".join(out).rstrip()


# ------------------------------------------------------------------------------------------------
# The paper-layout table (Markdown and HTML)
# ------------------------------------------------------------------------------------------------

def _f(v, spec=".1f"):
    return "–" if v is None else format(v, spec)


def _tflops_fmt(v):
    return "–" if v is None else (f"{v:.1f}" if v >= 10 else f"{v:#.3g}")


def paper_table(g: Group) -> tuple[list[str], list[tuple[str, list[str]]]]:
    """Header and rows ((kind, cells), kind 'ours' or 'paper') of the group's paper-layout table."""
    header = ["Method", "R (Rv-Ra)", "TFLOPs", *[bench_title(t) for t in g.columns], "Mean (% of full)"]
    lines = []
    for row in g.rows:
        m, pct = row_mean(g, row), pct_of_full(g, row)
        mean = _f(m) + (f" ({pct:.1f})" if pct is not None else "")
        cells = [_f(row.cells[t][0]) if t in row.cells else "–" for t in g.columns]
        lines.append(("ours", [row.label, row.r_label, _tflops_fmt(row_tflops(row)), *cells, mean]))
        covered = published_applies(g, row)
        if covered:
            p = row.published
            pr = f"{p.R}" if p.method == FULL else f"{p.R} ({p.ratios[0]}-{p.ratios[1]})"
            pm = f"{p.mean:.1f} ({p.pct_full:.1f})" if published_mean_applies(g) else "–"
            lines.append(("paper", ["↳ paper", pr, f"{p.tflops:.1f}",
                                    *[f"{p.accuracy[t]:.1f}" if t in covered else "–" for t in g.columns], pm]))
    return header, lines


def group_notes(g: Group) -> list[str]:
    notes = list(g.apart) + list(g.notes)
    if any(row_mean(g, r) is None for r in g.rows) and len(g.columns) > 1:
        notes.append("Mean is shown only for rows that have every benchmark of the group.")
    if any(published_applies(g, r) for r in g.rows):
        notes.append(f"↳ paper rows: published numbers for {g.model} ({published.SOURCE}); their TFLOPs are the "
                     "five-benchmark mean; their Mean only where all five benchmarks are in the group.")
        if g.identity["limit"] is not None or g.identity["sample_ids"] != "null":
            notes.append("Our runs use a subset of each benchmark (limit or sample ids); the paper used all samples.")
    elif g.model in published.TABLES:
        notes.append(f"No published row matches these methods and R for {g.model}.")
    if any(r.is_full for r in g.rows):
        notes.append("Full tokens ignore the schedule: their R is 100 whatever schedule the run was given.")
    return notes


def _md_table(header, lines) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for kind, cells in lines:
        cells = [f"*{c}*" if kind == "paper" and c != "–" else c for c in cells]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def format_markdown(groups: list[Group], plots: dict[int, dict[str, Path]], out_dir: Path) -> str:
    n_runs = sum(len(g.runs) for g in groups)
    out = ["# seats-exp comparison report", "",
           f"{n_runs} runs in {len(groups)} group(s) of comparable runs (same model, scoring, limit and sample set). "
           "Accuracy in %; TFLOPs = mean LLM-prefill TFLOPs per sample (encoders not counted).", ""]
    for g in groups:
        out += [f"## Group {g.index}: {g.title}", ""]
        header, lines = paper_table(g)
        out += [_md_table(header, lines), ""]
        out += [f"- {n}" for n in group_notes(g)]
        out.append("")
        for name, path in plots.get(g.index, {}).items():
            out += [f"![{name}]({path.relative_to(out_dir).as_posix()})", ""]
    return "\n".join(out)


_CSS = """body{font-family:system-ui,-apple-system,'DejaVu Sans',sans-serif;margin:24px auto;max-width:1400px;color:#222}
table{border-collapse:collapse;margin:8px 0 12px}th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}tr.paper td{color:#666;font-style:italic;background:#fafafa}
.plots{display:flex;flex-wrap:wrap;gap:8px}img{max-width:100%;border:1px solid #eee}.notes{color:#444;font-size:90%}"""


def format_html(groups: list[Group], plots: dict[int, dict[str, Path]]) -> str:
    e = html.escape
    n_runs = sum(len(g.runs) for g in groups)
    parts = ["<!DOCTYPE html>", "<html><head><meta charset='utf-8'><title>seats-exp comparison report</title>",
             f"<style>{_CSS}</style></head><body>", "<h1>seats-exp comparison report</h1>",
             f"<p>{n_runs} runs in {len(groups)} group(s) of comparable runs (same model, scoring, limit and sample "
             "set). Accuracy in %; TFLOPs = mean LLM-prefill TFLOPs per sample (encoders not counted).</p>"]
    for g in groups:
        parts.append(f"<h2>Group {g.index}: {e(g.title)}</h2>")
        header, lines = paper_table(g)
        parts.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>")
        for kind, cells in lines:
            parts.append(f"<tr class='{kind}'>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>")
        parts.append("</table>")
        notes = group_notes(g)
        if notes:
            parts.append("<ul class='notes'>" + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
        parts.append("<div class='plots'>")
        for name, path in plots.get(g.index, {}).items():
            data = base64.b64encode(path.read_bytes()).decode()
            parts.append(f"<img alt='{e(name)}' src='data:image/png;base64,{data}'>")
        parts.append("</div>")
    parts.append("</body></html>")
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------------
# Plots
# ------------------------------------------------------------------------------------------------

def accuracy_limits(values) -> tuple[float, float]:
    """y range for accuracies in %: the data's range with margins, inside 0..100, at least 10 points tall."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return 0.0, 100.0
    lo, hi = min(values), max(values)
    margin = max(2.0, 0.1 * (hi - lo))
    lo, hi = lo - margin, hi + margin
    if hi - lo < 10:
        mid = (hi + lo) / 2
        lo, hi = mid - 5, mid + 5
    if lo < 0:
        lo, hi = 0.0, hi - lo
    if hi > 100:
        lo, hi = max(0.0, lo - (hi - 100)), 100.0
    return lo, hi


def flops_unit(max_tflops: float) -> tuple[str, float]:
    """Axis unit for prefill FLOPs chosen for the data: (label, factor applied to TFLOPs)."""
    if max_tflops >= 1:
        return "TFLOPs", 1.0
    if max_tflops >= 1e-3:
        return "GFLOPs", 1e3
    return "MFLOPs", 1e6


def _colours(g: Group) -> dict[str, tuple]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    methods = sorted({r.method for r in g.rows if not r.is_full}, key=lambda m: (m == "seats", m))
    return {m: cmap(i % 10) for i, m in enumerate(methods)} | {FULL: (0.2, 0.2, 0.2, 1.0)}


def _series(g: Group) -> dict[str, list[Row]]:
    """Rows grouped into lines: one per method variant (label without R), R-numeric rows only."""
    out: dict[str, list[Row]] = {}
    for r in g.rows:
        if not r.is_full:
            out.setdefault(r.label, []).append(r)
    return out


def _panels(g: Group) -> list[str | None]:
    """One panel per benchmark, plus the mean (None) when there are several."""
    return list(g.columns) + ([None] if len(g.columns) > 1 else [])


def _grid(n: int):
    import matplotlib.pyplot as plt

    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(PANEL_W * ncols, PANEL_H * nrows), dpi=DPI, squeeze=False)
    flat = list(axes.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def _acc(g: Group, row: Row, task: str | None):
    return row_mean(g, row) if task is None else row.cells.get(task, (None,))[0]


def _pub_acc(g: Group, row: Row, task: str | None):
    if task is None:
        return row.published.mean if row.published and published_mean_applies(g) else None
    return row.published.accuracy.get(task) if row.published and task in published_applies(g, row) else None


def _finish(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def plot_accuracy_vs_r(g: Group, path: Path) -> Path:
    colours, series, panels = _colours(g), _series(g), _panels(g)
    fig, axes = _grid(len(panels))
    full = g.full_row
    rs = sorted({r.R for r in g.rows if r.R is not None and not r.is_full})
    for ax, task in zip(axes, panels):
        ys = []
        for label, rows in series.items():
            pts = sorted((r.R, _acc(g, r, task)) for r in rows if r.R is not None and _acc(g, r, task) is not None)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=colours[rows[0].method], label=label)
                ys += [p[1] for p in pts]
            pub = sorted((r.R, _pub_acc(g, r, task)) for r in rows if _pub_acc(g, r, task) is not None)
            if pub:
                ax.plot([p[0] for p in pub], [p[1] for p in pub], ls=":", marker="o", mfc="none",
                        color=colours[rows[0].method], label=f"{label} (paper)")
                ys += [p[1] for p in pub]
        if full is not None and _acc(g, full, task) is not None:
            ax.axhline(_acc(g, full, task), color=colours[FULL], ls="--", lw=1, label=full.label)
            ys.append(_acc(g, full, task))
        if full is not None and _pub_acc(g, full, task) is not None:
            ax.axhline(_pub_acc(g, full, task), color=colours[FULL], ls=":", lw=1, label=f"{full.label} (paper)")
            ys.append(_pub_acc(g, full, task))
        ax.set_ylim(*accuracy_limits(ys))
        if rs:
            ax.set_xticks(rs)
            ax.set_xlim(min(rs) - 3, max(rs) + 3)
        ax.set_xlabel("overall retention R (%)")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(bench_title(task) if task else f"mean of {len(g.columns)} benchmarks")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return _finish(fig, path)


def plot_accuracy_vs_tflops(g: Group, path: Path) -> Path:
    colours, panels = _colours(g), _panels(g)
    fig, axes = _grid(len(panels))
    xs_all = [row_tflops(r, t) for r in g.rows for t in g.columns] + [r.published.tflops for r in g.rows if published_applies(g, r)]
    unit, k = flops_unit(max([x for x in xs_all if x is not None], default=1.0))
    for ax, task in zip(axes, panels):
        ys, ours = [], []
        lines = ({g.full_row.label: [g.full_row]} if g.full_row else {}) | _series(g)
        for label, rows in lines.items():
            pts = sorted((row_tflops(r, task) * k, _acc(g, r, task)) for r in rows
                         if row_tflops(r, task) is not None and _acc(g, r, task) is not None)
            marker = "*" if rows[0].is_full else "o"
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, ms=9 if rows[0].is_full else 6,
                        color=colours[rows[0].method], label=label)
                ys += [p[1] for p in pts]
                ours += pts
            pub = sorted((r.published.tflops * k, _pub_acc(g, r, task)) for r in rows if _pub_acc(g, r, task) is not None)
            if pub:
                ax.plot([p[0] for p in pub], [p[1] for p in pub], ls="none", marker=marker, mfc="none", ms=8,
                        color=colours[rows[0].method], label=f"{label} (paper)")
                ys += [p[1] for p in pub]
        if len(ours) > 1:  # the Pareto front of our points: best accuracy at or below each cost
            front, best = [], -1.0
            for x, y in sorted(ours):
                if y > best:
                    front.append((x, y))
                    best = y
            ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="0.6", lw=0.8, zorder=0)
        ax.set_ylim(*accuracy_limits(ys))
        ax.set_xlim(left=0)
        ax.set_xlabel(f"LLM prefill {unit} per sample")
        ax.set_ylabel("accuracy (%)")
        ax.set_title(bench_title(task) if task else f"mean of {len(g.columns)} benchmarks")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    return _finish(fig, path)


def _row_cost(row: Row, key: str):
    return _mean(run.cost.get(key) for run in row.runs)


def plot_prefill_time(g: Group, path: Path) -> Path:
    import matplotlib.pyplot as plt

    rows = [r for r in g.rows if _row_cost(r, "time_llm_prefill_s") is not None]
    parts = [("time_encoders_s", "encoders", "#9ecae1"), ("time_selection_s", "selection", "#fd8d3c"),
             ("time_llm_prefill_s", "LLM prefill", "#3182bd")]
    total = max([sum(_row_cost(r, k) or 0 for k, _, _ in parts) for r in rows], default=0)
    unit, k = ("s", 1.0) if total >= 2 else ("ms", 1000.0)
    fig, ax = plt.subplots(figsize=(PANEL_W * 2, max(PANEL_H, 0.35 * len(rows) + 1.2)), dpi=DPI)
    labels = [f"{r.label} · R {r.r_label}" for r in rows]
    left = [0.0] * len(rows)
    for key, name, colour in parts:
        vals = [(_row_cost(r, key) or 0) * k for r in rows]
        ax.barh(labels, vals, left=left, color=colour, label=name)
        left = [a + b for a, b in zip(left, vals)]
    ax.invert_yaxis()
    ax.set_xlabel(f"mean time per sample ({unit})")
    ax.set_title("prefill time: encoders / selection / LLM prefill")
    ax.grid(alpha=0.3, axis="x")
    ax.legend(fontsize=8, loc="lower right")
    return _finish(fig, path)


def plot_tokens_per_layer(g: Group, path: Path) -> Path:
    import matplotlib.pyplot as plt

    colours = _colours(g)
    pruned = [r for r in g.rows if not r.is_full]
    rs = sorted({r.r_label for r in pruned}, key=lambda s: (-int(s.split()[0]) if s.split()[0].isdigit() else 1, s))
    ncols = max(1, len(rs))
    fig, axes = plt.subplots(2, ncols, figsize=(PANEL_W * ncols, PANEL_H * 2), dpi=DPI, squeeze=False)
    full = g.full_row

    def per_layer(row: Row, key: str):
        lists = [run.cost.get(key) for run in row.runs if run.cost.get(key)]
        if not lists or len({len(x) for x in lists}) != 1:
            return None
        return [sum(v) / len(v) for v in zip(*lists)]

    for i, (key, name) in enumerate((("video_tokens_per_layer", "video"), ("audio_tokens_per_layer", "audio"))):
        for j in range(ncols):
            ax = axes[i][j]
            top = 0.0
            rows = [r for r in pruned if rs and r.r_label == rs[j]]
            for row in ([full] if full else []) + rows:
                ys = per_layer(row, key)
                if ys is None:
                    continue
                ax.plot(range(1, len(ys) + 1), ys, color=colours[row.method], ls="--" if row.is_full else "-",
                        marker=None if row.is_full else ".", label=row.label)
                top = max(top, max(ys))
                ax.set_xticks(range(1, len(ys) + 1, max(1, len(ys) // 8)))
            ax.set_ylim(0, top * 1.08 if top > 0 else 1)
            ax.set_xlabel("decoder layer")
            ax.set_ylabel(f"{name} tokens entering the layer")
            ax.set_title(f"{name} · R {rs[j]}" if rs else f"{name} · full tokens")
            ax.grid(alpha=0.3)
            if i == 0:
                ax.legend(fontsize=7)
    return _finish(fig, path)


def make_plots(g: Group, plot_dir: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    plot_dir.mkdir(parents=True, exist_ok=True)
    makers = {"accuracy_vs_R": plot_accuracy_vs_r, "accuracy_vs_tflops": plot_accuracy_vs_tflops,
              "prefill_time": plot_prefill_time, "tokens_per_layer": plot_tokens_per_layer}
    out = {}
    for name in PLOTS:
        if name == "accuracy_vs_R" and not any(r.R is not None and not r.is_full for r in g.rows):
            g.notes.append("No accuracy-vs-R plot: no pruned run with a schedule rNN.")
            continue
        out[name] = makers[name](g, plot_dir / f"{g.slug}.{name}.png")
    return out


# ------------------------------------------------------------------------------------------------
# The whole report
# ------------------------------------------------------------------------------------------------

def write_report(runs: list[Run], out_dir: Path) -> tuple[list[Group], dict[str, Path]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    groups = group_runs(runs)
    plots = {g.index: make_plots(g, out_dir / "plots") for g in groups}
    files = {"runs.csv": out_dir / "runs.csv", "report.md": out_dir / "report.md", "report.html": out_dir / "report.html"}
    write_csv(groups, files["runs.csv"])
    files["report.md"].write_text(format_markdown(groups, plots, out_dir))
    files["report.html"].write_text(format_html(groups, plots))
    for g in groups:
        for p in plots[g.index].values():
            files[p.name] = p
    return groups, files


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="seats-exp-report", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="*", help="run folders, sweep or experiment folders, or result.json files")
    ap.add_argument("--out", help="output folder (default: <first folder>/report)")
    ap.add_argument("--markdown", help="also copy report.md to this file")
    ap.add_argument("--plot", help="also copy the accuracy-vs-TFLOPs plot of the first group to this PNG")
    ap.add_argument("--wandb", metavar="ENTITY/PROJECT", help="build a W&B Report from the runs logged there")
    ap.add_argument("--group", help="with --wandb: only this experiment (W&B group)")
    ap.add_argument("--title", help="with --wandb: the report title")
    args = ap.parse_args(argv)
    try:
        if not args.paths and not args.wandb:
            raise ReportError("give run/sweep folders, or --wandb ENTITY/PROJECT")
        if args.paths:
            runs = collect(args.paths)
            if not runs:
                raise ReportError(f"no result.json found under {', '.join(args.paths)}")
            first = Path(args.paths[0])
            out_dir = Path(args.out) if args.out else (first if first.is_dir() else first.parent) / "report"
            groups, files = write_report(runs, out_dir)
            print(format_console(groups))
            print(f"report: {files['report.html']} ({len(groups)} group(s), {len(runs)} runs; "
                  f"runs.csv, report.md, {sum(1 for k in files if k.endswith('.png'))} plots in {out_dir})")
            if args.markdown:
                Path(args.markdown).write_text(files["report.md"].read_text())
            if args.plot:
                png = next((p for k, p in files.items() if k.endswith(".accuracy_vs_tflops.png")), None)
                if png is not None:
                    Path(args.plot).write_bytes(png.read_bytes())
                    print(f"plot: {args.plot}")
        if args.wandb:
            from seats_exp import wandb_report

            return wandb_report.main(args.wandb, group=args.group, title=args.title)
    except ReportError as exc:
        print(f"seats-exp-report: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
