"""Weights & Biases logging: the resolved config, summary metrics and a per-sample table.

``logger.mode=auto`` runs online when an API key is configured and offline otherwise (the run is
written under ``<run folder>/wandb`` and can be uploaded later with ``wandb sync``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path.home() / ".netrc"
    return netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def resolve_mode(mode: str) -> str:
    if mode == "auto":
        return "online" if _has_api_key() else "offline"
    return mode


def flat_summary(result: dict) -> dict:
    from seats_exp.report import retention

    out = {k: result[k] for k in ("accuracy", "n_samples", "n_errors", "wall_time_s") if result.get(k) is not None}
    R = retention(result.get("method"), result.get("schedule"))
    if R is not None:
        out["R"] = R  # overall retention in % (full tokens: 100), the x axis of accuracy-vs-R plots
    for key, value in (result.get("cost") or {}).items():
        if isinstance(value, (int, float)) and value is not None:
            out[f"cost/{key}"] = value
    for task, summary in result.get("tasks", {}).items():
        if summary.get("accuracy") is not None:
            out[f"{task}/accuracy"] = summary["accuracy"]
        out[f"{task}/n_errors"] = summary.get("n_errors", 0)
        for table, values in (summary.get("breakdowns") or {}).items():
            for category, acc in values.items():
                if acc is not None:
                    out[f"{task}/{table}/{category}"] = acc
    return out


def history_rows(result: dict) -> list[dict]:
    """History for the W&B Report's line plots: one row per decoder layer (tokens entering it), then
    one row with R and the accuracies (x = R across runs, grouped by method)."""
    cost = result.get("cost") or {}
    layers = zip(cost.get("tokens_per_layer") or [], cost.get("video_tokens_per_layer") or [],
                 cost.get("audio_tokens_per_layer") or [])
    rows = [{"layer": i + 1, "tokens/all": t, "tokens/video": v, "tokens/audio": a} for i, (t, v, a) in enumerate(layers)]
    summary = flat_summary(result)
    if "R" in summary:
        rows.append({k: v for k, v in summary.items() if k == "R" or k.endswith("accuracy")})
    return rows


def log_run(rc, result: dict, records: list[dict], run_dir: Path) -> None:
    import wandb

    mode = resolve_mode(rc.logger.mode)
    if mode == "disabled":
        return
    run = wandb.init(
        project=rc.logger.project, entity=rc.logger.entity, group=rc.logger.group, job_type=rc.logger.job_type,
        tags=list(rc.logger.tags), name=rc.logger.run_name or rc.run_name, dir=str(run_dir), mode=mode,
        config={"model": vars(rc.model), "method": {"name": rc.method.name, **rc.method.params},
                "schedule": vars(rc.schedule), "benchmark": rc.benchmark.name, "seed": rc.seed,
                "kv_scope": rc.kv_scope, "scoring": rc.benchmark.scoring},
        reinit="finish_previous",
    )
    summary = flat_summary(result)
    for row in history_rows(result):
        run.log(row)
    for key, value in summary.items():
        run.summary[key] = value
    if rc.logger.log_samples_table and records:
        cols = ["task", "sample_id", "answer", "error", "llm_input_tokens", "prefill_flops", "time_llm_prefill"]
        table = wandb.Table(columns=cols, data=[[r.get(c) for c in cols] for r in records])
        run.log({"samples": table})
    run.finish()
    log.info("W&B run %s logged (%s)", run.name, mode)
