"""One run, linearly: validate -> data -> model -> selector -> engine -> lmms-eval -> record.

Each step logs one line.  ``run`` returns the result dict (its ``accuracy`` is what a Hydra sweeper
optimises).  Nothing here knows a method's logic or a benchmark's parsing.
"""

from __future__ import annotations

import logging
import platform
import shutil
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from seats_exp.config import RunConfig, build_selector_for
from seats_exp.store import RunStore

log = logging.getLogger("seats_exp")

_VERSIONED = ("torch", "transformers", "lmms_eval", "hydra-core", "wandb", "seats-exp")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_commit() -> str:
    """The source checkout's commit, or a sentence saying there is none (seats_exp/package.py)."""
    from seats_exp.package import git_commit as _commit

    return _commit()


def prepare_data(rc: RunConfig) -> None:
    """Generate the synthetic set on first use (under its configured root)."""
    for task in rc.benchmark.tasks:
        if task.synthetic:
            from evaluation.benchmarks import BenchmarkDataError
            from evaluation.synthetic import ensure

            try:
                ensure(task.video_root, **task.synthetic)
            except FileExistsError as exc:
                raise BenchmarkDataError(f"benchmark.tasks.{task.key}.video_root: {exc}") from None
            except OSError as exc:  # e.g. a read-only data root
                raise BenchmarkDataError(
                    f"benchmark.tasks.{task.key}.video_root={task.video_root}: cannot write the synthetic set there "
                    f"({exc.strerror or exc}); set paths.data_root (or paths.root) to a writable folder") from None


def load(rc: RunConfig):
    from seats_exp.models.loading import load_model

    m = rc.model
    return load_model(m.checkpoint, family=m.family, dtype=m.dtype, attn_implementation=m.attn_implementation,
                      device=m.device, tiny=m.tiny, seed=0)


def attach_engine(loaded, selector, kv_scope: str):
    from seats_exp.engine import Engine
    from seats_exp.stats import EncoderStatsCollector

    stats = EncoderStatsCollector(loaded.adapter, selector.needs, selector.stats_request) if selector.needs else None
    return Engine(loaded.thinker, loaded.adapter, selector, kv_scope=kv_scope, stats=stats).attach()


def build_runtime_from_args(*, pretrained: str, family: str, method: str, video_ratio: float, audio_ratio: float,
                            attn_implementation: str, dtype: str, device: str, kv_scope: str, seed: int, fps: float,
                            max_frames: int, method_params: dict):
    """The lmms-eval CLI path (``--model seats_omni --model_args ...``): same loader, same engine."""
    from evaluation.lmms_model import Runtime
    from methods import ModelInfo, build_selector
    from seats_exp.models.loading import load_model

    loaded = load_model(pretrained, family=family, dtype=dtype, attn_implementation=attn_implementation, device=device)
    info = ModelInfo(variant=Path(pretrained).name.lower().replace("-", "_").replace(".", "_"), family=family,
                     num_layers=loaded.adapter.num_layers, audio_tokens_per_second=loaded.adapter.audio_tokens_per_second)
    selector = build_selector(method, method_params, video_ratio, audio_ratio, info)
    engine = attach_engine(loaded, selector, kv_scope)
    return Runtime(model=loaded, engine=engine, dims=loaded.adapter.dims(), seed=seed, family=family,
                   cli_media={"fps": fps, "max_frames": max_frames})


def _task_results(samples: list[dict]) -> list[dict]:
    """Per-sample dicts returned by the task's process_results, from lmms-eval's logged samples."""
    out = []
    for s in samples:
        for value in s.values():
            if isinstance(value, dict) and "score" in value and "sample_id" in value:
                out.append(value)
                break
    return out


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def cost_summary(records: list[dict]) -> dict[str, Any]:
    ok = [r for r in records if not r.get("error") and r.get("prefill_flops") is not None]
    if not ok:
        return {}
    n_layers = len(ok[0]["layer_lengths"])
    out = {
        "prefill_tflops": _mean(r["prefill_flops"] / 1e12 for r in ok),
        "prefill_tflops_full": _mean(r["prefill_flops_full"] / 1e12 for r in ok),
        "input_tokens": _mean(r["input_tokens"] for r in ok),
        "llm_input_tokens": _mean(r["llm_input_tokens"] for r in ok),
        "tokens_per_layer": [_mean(r["layer_lengths"][i] for r in ok) for i in range(n_layers)],
        "video_tokens_per_layer": [_mean(r["kept_video"][i] for r in ok) for i in range(n_layers)],
        "audio_tokens_per_layer": [_mean(r["kept_audio"][i] for r in ok) for i in range(n_layers)],
        "time_encoders_s": _mean(r.get("time_encoders") for r in ok),
        "time_encoder_stats_s": _mean(r.get("time_encoder_stats") for r in ok),
        "time_selection_s": _mean(r.get("time_selection") for r in ok),
        "time_llm_prefill_s": _mean(r.get("time_llm_prefill") for r in ok),
        "peak_memory_gb": _mean((r["peak_memory_bytes"] or 0) / 2**30 for r in ok) if ok[0].get("peak_memory_bytes") else None,
    }
    out["flops_ratio"] = out["prefill_tflops_full"] / out["prefill_tflops"] if out["prefill_tflops"] else None
    fid = [r["fidelity"] for r in ok if r.get("fidelity")]
    if fid:
        out["fidelity_top1_agreement"] = _mean(float(f["top1_agree"]) for f in fid)
        out["fidelity_kl"] = _mean(f["kl"] for f in fid)
    return out


def note_counts(records: list[dict]) -> dict[str, dict[str, int]]:
    """Samples per selector note: {key: {text: count}} (notes are set through ``ctx.notes``)."""
    out: dict[str, dict[str, int]] = {}
    for r in records:
        for key, text in (r.get("notes") or {}).items():
            out.setdefault(key, {})
            out[key][str(text)] = out[key].get(str(text), 0) + 1
    return out


def run(rc: RunConfig, run_dir: str | Path, config_yaml: str) -> dict:
    from launchers.resume import finished_result, with_data_identity
    from seats_exp import distributed

    config_yaml = with_data_identity(config_yaml, rc)  # an edited annotation file is another point
    store = RunStore(run_dir)
    # Data parallel across the job's tasks (one process = world size 1); design in seats_exp/distributed.py.
    dist_env = distributed.detect()
    finished = finished_result(store.dir, config_yaml)  # raises when the folder holds another configuration
    if finished is not None:
        log.info("skipping %s: finished (result.json with the same configuration), no model work", store.dir)
        if rc.logger.name == "wandb" and dist_env.is_main:
            if store.read_logged() is None:  # done but never logged (e.g. W&B failed at the end): catch up
                log.info("finished point %s is not logged to W&B yet: logging it from its result files (no model work)",
                         store.dir)
                _log_wandb(rc, finished, list(_last_records(store).values()), store, config_yaml)
            else:
                log.info("already logged to W&B (%s)", store.read_logged().get("mode"))
        return finished
    distributed.init(dist_env)

    from lmms_eval.evaluator import simple_evaluate
    from lmms_eval.tasks import TaskManager

    from evaluation import benchmarks
    from evaluation.lmms_model import Runtime, SeatsOmni, record_key

    started = time.time()
    if dist_env.is_main:
        store.write_config(config_yaml)
        store.start_attempt()
    log.info("run folder: %s", store.dir)

    if not dist_env.is_main:
        distributed.barrier(dist_env)  # rank 0 first: it writes what first use creates (data, tiny model, hub cache)
    prepare_data(rc)
    # lmms-eval reads the task folder while it runs: other ranks write their own copy.
    task_dir = store.dir / ("tasks" if dist_env.is_main else f".tasks.rank{dist_env.rank}")
    task_settings = {t.key: {k: v for k, v in vars(t).items() if k != "key"} for t in rc.benchmark.tasks}
    task_names = benchmarks.materialize(task_settings, task_dir, limit=rc.benchmark.limit,
                                        sample_ids=rc.benchmark.sample_ids, scoring=rc.benchmark.scoring,
                                        seed=rc.benchmark.seed)
    log.info("tasks: %s", ", ".join(task_names))

    selector = build_selector_for(rc)
    log.info("method: %s (video %.3f, audio %.3f)", rc.method.name, rc.schedule.video, rc.schedule.audio)
    for warning in selector.describe().get("warnings", []):  # e.g. FastV's negative setting ratio
        log.warning("method: %s", warning)
    loaded = load(rc)
    if dist_env.is_main:
        distributed.barrier(dist_env)
    engine = attach_engine(loaded, selector, rc.kv_scope)

    media = {name: benchmarks.media_settings(task_settings[t.key], rc.model.family)
             for name, t in zip(task_names, rc.benchmark.tasks)}
    done = {record_key(r): r["answer"] for r in distributed.iter_run_samples(store.dir) if r.get("answer") is not None}
    if done:
        log.info("resuming: %d samples already recorded, not generated again", len(done))
    sink = distributed.rank_sink(store.dir, dist_env.rank) if dist_env.enabled else store.append_sample
    if dist_env.is_main:
        sink = _clocked(sink, store)
    runtime = Runtime(model=loaded, engine=engine, dims=loaded.adapter.dims(), task_settings=media, seed=rc.seed,
                      sink=sink, done=done, fidelity=rc.fidelity, progress=rc.progress,
                      family=rc.model.family, shard=distributed.Shard(dist_env) if dist_env.enabled else None)
    lm = SeatsOmni(runtime=runtime)
    gen_kwargs = f"max_new_tokens={rc.max_new_tokens_override}" if rc.max_new_tokens_override else None
    try:
        with distributed.single_process_view():
            results = simple_evaluate(model=lm, tasks=task_names, task_manager=TaskManager(include_path=str(task_dir)),
                                      batch_size=1, log_samples=True, gen_kwargs=gen_kwargs, random_seed=rc.seed,
                                      numpy_random_seed=rc.seed, torch_random_seed=rc.seed, verbosity="WARNING")
    finally:
        engine.detach()
    if dist_env.enabled:
        distributed.barrier(dist_env)  # every rank's samples are on disk
        if not dist_env.is_main:
            shutil.rmtree(task_dir, ignore_errors=True)
            distributed.barrier(dist_env)  # rank 0 has written result.json
            distributed.shutdown(dist_env)
            return store.read_result()
    if len(distributed.sample_files(store.dir)) > 1:  # rank files of this run or of an earlier attempt
        distributed.merge_rank_samples(store.dir)

    records = _last_records(store)
    # Done only when every evaluated sample has a parseable record (cost and resume read them).
    evaluated = {(name, int(s["doc_id"])) for name in task_names for s in results["samples"].get(name, [])}
    missing = sorted(evaluated - {(r["task"], int(r["doc_id"])) for r in records.values()})
    if missing:
        shown = ", ".join(f"{t}/{d}" for t, d in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise RuntimeError(f"{len(missing)} evaluated sample(s) have no parseable record in {store.samples_path} "
                           f"({shown}); result.json not written -- relaunch to compute them")
    per_task = {}
    scores = []
    for name, t in zip(task_names, rc.benchmark.tasks):
        task_results = _task_results(results["samples"].get(name, []))
        scores += _score_rows(name, t.task, task_results)
        summary = benchmarks.summarize(t.task, task_results)
        task_records = [r for (task, _, _), r in records.items() if task == name]
        summary["cost"] = cost_summary(task_records)
        summary["sample_notes"] = note_counts(task_records)
        per_task[t.key] = summary
    accs = [s["accuracy"] for s in per_task.values() if s.get("accuracy") is not None]
    all_records = list(records.values())
    attempts = store.update_attempt()
    result = {
        "run_name": rc.run_name,
        "model": rc.model.name, "method": rc.method.name, "schedule": rc.schedule.name,
        "benchmark": rc.benchmark.name,
        "ratios": {"video": rc.schedule.video, "audio": rc.schedule.audio},
        "method_settings": selector.describe(),
        "accuracy": sum(accs) / len(accs) if accs else None,
        "n_samples": sum(s["n_samples"] for s in per_task.values()),
        "n_errors": sum(s["n_errors"] for s in per_task.values()),
        "tasks": per_task,
        "cost": cost_summary(all_records),
        "sample_notes": note_counts(all_records),
        "seed": rc.seed, "scoring": rc.benchmark.scoring, "scoring_seed": rc.benchmark.seed,
        "kv_scope": rc.kv_scope,
        # summed over attempts (a resumed or requeued point); each attempt counts to its last record
        "wall_time_s": sum(a["wall_time_s"] for a in attempts) if attempts else time.time() - started,
        "attempts": len(attempts) or 1,
        "versions": package_versions(), "git_commit": git_commit(),
        "run_dir": str(store.dir),
        "world_size": dist_env.world_size,
    }
    store.write_scores(scores)
    store.write_result(result)
    (store.dir / "interrupted.json").unlink(missing_ok=True)  # a resumed run is complete now
    if dist_env.enabled:
        distributed.barrier(dist_env)
        distributed.shutdown(dist_env)
    if rc.logger.name == "wandb":
        _log_wandb(rc, result, all_records, store, config_yaml)
    return result


def _last_records(store: RunStore) -> dict:
    """The last record of every sample, keyed by (task, sample id, occurrence) (the last wins: resume)."""
    from evaluation.lmms_model import record_key

    records = {}
    for r in store.iter_samples():
        records[record_key(r)] = r
    return records


def _clocked(sink, store: RunStore):
    """The sink, also recording the attempt's wall time so far (a killed attempt still counts)."""
    def record(rec: dict) -> None:
        sink(rec)
        store.update_attempt()

    return record


def _score_rows(task_name: str, template: str, task_results: list[dict]) -> list[dict]:
    from evaluation.benchmarks import get_spec

    keys = get_spec(template).breakdown_keys
    return [{"task": task_name, "sample_id": r.get("sample_id"), "gold": r.get("answer"), "prediction": r.get("pred"),
             "score": r.get("score"), "error": r.get("error"), "category": r.get(keys[0]) if keys else None,
             **{k: r.get(k) for k in keys}} for r in task_results]


def _log_wandb(rc: RunConfig, result: dict, records: list[dict], store: RunStore, config_yaml: str) -> None:
    """Log a finished point to W&B and record that it is logged; a failure leaves it unlogged (a relaunch
    with logger=wandb logs it from its files) and fails the point."""
    import yaml

    from seats_exp.tracking import log_run

    try:
        info = log_run(rc, result, records, store.dir, config=yaml.safe_load(config_yaml),
                       scores=list(store.iter_scores()))
    except Exception as exc:
        log.error("W&B logging of %s failed (%s: %s); result.json is saved -- relaunch with logger=wandb to log it "
                  "without model work", store.dir, type(exc).__name__, exc)
        raise
    if info is not None:
        store.write_logged(info)
