"""Weights & Biases logging: the resolved config, summary metrics and a per-sample table.

Mode (``logger.mode``): ``online``, ``offline`` and ``disabled`` are used as given.  ``auto`` respects
``WANDB_MODE`` when it is set; otherwise it runs online when an API key is configured *and* the W&B
host answers (a TCP connection within a few seconds), and offline otherwise -- with a log line saying
why -- so a compute node without network never fails a finished point at the end.  Offline runs are
written under ``<run folder>/wandb`` (upload later with ``wandb sync``).

The run's config is the whole resolved configuration of the point (secrets -- keys, tokens,
passwords -- removed), plus the retention ratios used, ``benchmark.limit``/``sample_ids``, the
generation settings, the experiment name and the git commit.  The per-sample table has the raw
answer, the gold answer, the parsed prediction, the score and the category of every sample.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

log = logging.getLogger("seats_exp")

DEFAULT_HOST = "https://api.wandb.ai"
PROBE_TIMEOUT_S = 3.0
_SECRET = re.compile(r"(?:^|[_.-])(?:api_?key|key|token|password|passwd|secret|credentials?)(?:$|[_.-])", re.I)


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path.home() / ".netrc"
    host = urlparse(os.environ.get("WANDB_BASE_URL") or DEFAULT_HOST).hostname or "api.wandb.ai"
    return netrc.exists() and host in netrc.read_text(errors="ignore")


def wandb_host() -> tuple[str, int]:
    url = urlparse(os.environ.get("WANDB_BASE_URL") or DEFAULT_HOST)
    return url.hostname or "api.wandb.ai", url.port or (80 if url.scheme == "http" else 443)


def host_reachable(host: str, port: int, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when a TCP connection to ``host:port`` opens within ``timeout``; otherwise why not."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return str(exc) or type(exc).__name__


def resolve_mode(mode: str) -> str:
    if mode != "auto":
        return mode
    env = (os.environ.get("WANDB_MODE") or "").strip().lower()
    if env:
        resolved = {"dryrun": "offline", "run": "online"}.get(env, env)
        if resolved in ("online", "offline", "disabled"):
            log.info("W&B: logger.mode=auto follows WANDB_MODE=%s", env)
            return resolved
        log.warning("W&B: WANDB_MODE=%s is not online/offline/disabled; ignored", env)
    if not _has_api_key():
        return "offline"
    host, port = wandb_host()
    why = host_reachable(host, port)
    if why is not None:
        log.warning("W&B: host %s:%d cannot be reached (%s); logging offline instead "
                    "(upload later with `wandb sync <run folder>/wandb/offline-run-*`)", host, port, why)
        return "offline"
    return "online"


def redact(cfg):
    """``cfg`` without secrets: every key that names a key, token, password or secret is dropped."""
    if isinstance(cfg, dict):
        return {k: redact(v) for k, v in cfg.items() if not _SECRET.search(str(k))}
    if isinstance(cfg, list):
        return [redact(v) for v in cfg]
    return cfg


def run_config(rc, result: dict, config: dict | None) -> dict:
    """The W&B run config: the resolved point configuration (redacted) and the settings to compare by."""
    out = redact(dict(config or {}))
    out.update({
        "ratios": {"video": rc.schedule.video, "audio": rc.schedule.audio},
        "kv_scope": rc.kv_scope, "scoring": rc.benchmark.scoring,
        "benchmark_limit": rc.benchmark.limit, "sample_ids": rc.benchmark.sample_ids,
        "generation": {**{t.key: dict(t.generation or {}) for t in rc.benchmark.tasks},
                       "max_new_tokens_override": rc.max_new_tokens_override},
        "experiment_name": (config or {}).get("experiment_name"),
        "git_commit": result.get("git_commit"),
        "run_dir": result.get("run_dir"),
    })
    return out


SAMPLE_COLUMNS = ["task", "sample_id", "answer", "error", "gold", "prediction", "score", "category",
                  "llm_input_tokens", "prefill_flops", "time_llm_prefill"]


def sample_rows(records: list[dict], scores: list[dict] | None) -> list[list]:
    """One table row per recorded sample, joined with its scored record (gold, prediction, score,
    category) by (task, sample_id)."""
    by_id = {(s.get("task"), str(s.get("sample_id"))): s for s in scores or []}
    rows = []
    for r in records:
        s = by_id.get((r.get("task"), str(r.get("sample_id"))), {})
        merged = {**r, "gold": s.get("gold"), "prediction": s.get("prediction"), "score": s.get("score"),
                  "category": s.get("category")}
        rows.append([merged.get(c) for c in SAMPLE_COLUMNS])
    return rows


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


def log_run(rc, result: dict, records: list[dict], run_dir: Path, *, config: dict | None = None,
            scores: list[dict] | None = None) -> dict | None:
    """Log one finished point; return what was logged (mode, run id, project, ...), None when disabled."""
    import wandb

    mode = resolve_mode(rc.logger.mode)
    if mode == "disabled":
        return None
    run = wandb.init(
        project=rc.logger.project, entity=rc.logger.entity, group=rc.logger.group, job_type=rc.logger.job_type,
        tags=list(rc.logger.tags), name=rc.logger.run_name or rc.run_name, dir=str(run_dir), mode=mode,
        config=run_config(rc, result, config), reinit="finish_previous",
    )
    summary = flat_summary(result)
    for row in history_rows(result):
        run.log(row)
    for key, value in summary.items():
        run.summary[key] = value
    if rc.logger.log_samples_table and records:
        table = wandb.Table(columns=SAMPLE_COLUMNS, data=sample_rows(records, scores))
        run.log({"samples": table})
    info = {"mode": mode, "run_id": run.id, "name": run.name, "project": rc.logger.project,
            "entity": rc.logger.entity, "group": rc.logger.group}
    run.finish()
    log.info("W&B run %s logged (%s)", info["name"], mode)
    return info
