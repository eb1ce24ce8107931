"""Typed config schemas and validation, run before any weight is loaded.

Hydra composes ``conf/``; ``validate`` turns the result into dataclasses, checks every value and
raises ``ConfigError`` with one sentence naming the bad key and the allowed values.  Unknown group
options are rejected by Hydra itself, which lists the available ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

FAMILIES = ("qwen2_5_omni", "qwen3_omni")
DTYPES = ("float32", "bfloat16", "float16")
ATTN = ("sdpa", "eager", "flash_attention_2")
MODES = ("run", "plan", "bench")
LOGGERS = ("none", "wandb")
WANDB_MODES = ("auto", "online", "offline", "disabled")


class ConfigError(ValueError):
    """An invalid configuration; the message names the key."""


@dataclass
class ModelCfg:
    name: str
    family: str
    checkpoint: str
    num_layers: int
    tiny: bool = False
    dtype: str = "bfloat16"
    attn_implementation: str = "sdpa"
    device: str = "auto"
    dims: dict = field(default_factory=dict)


@dataclass
class MethodCfg:
    name: str
    params: dict = field(default_factory=dict)


@dataclass
class ScheduleCfg:
    name: str
    video: float
    audio: float


@dataclass
class TaskCfg:
    key: str
    task: str
    annotations: str
    video_root: str
    fps: float = 2.0
    max_frames: dict = field(default_factory=dict)
    min_pixels: int = 128
    max_pixels: int = 144
    total_pixels: int = 24576
    system_prompt: str = "persona"
    generation: dict = field(default_factory=dict)
    synthetic: dict | None = None


@dataclass
class BenchmarkCfg:
    name: str
    tasks: list[TaskCfg]
    limit: int | None = None
    sample_ids: list | None = None
    scoring: str = "faithful"
    seed: int = 0


@dataclass
class LoggerCfg:
    name: str = "none"
    mode: str = "auto"
    project: str = "seats-exp"
    entity: str | None = None
    group: str = "adhoc"
    job_type: str = ""
    tags: list = field(default_factory=list)
    run_name: str = ""
    log_samples_table: bool = True


@dataclass
class RunConfig:
    mode: str
    seed: int
    model: ModelCfg
    method: MethodCfg
    schedule: ScheduleCfg
    benchmark: BenchmarkCfg
    logger: LoggerCfg
    kv_scope: str
    fidelity: bool
    progress: bool
    max_new_tokens_override: int | None
    plan: dict
    paths: dict
    run_name: str


def _choice(key: str, value: Any, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; choose one of: {', '.join(map(str, allowed))}")


def _build(cls, where: str, data: dict, **extra):
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where} has unknown keys {unknown}; allowed: {sorted(names - set(extra))}")
    try:
        return cls(**data, **extra)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


def _ratio(key: str, value) -> float:
    if value in (None, "???"):
        raise ConfigError(f"{key} must be set (a retention ratio in (0, 1])")
    try:
        value = float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key}={value!r} is not a number in (0, 1]") from exc
    if not 0.0 < value <= 1.0:
        raise ConfigError(f"{key}={value} is outside (0, 1]")
    return value


def _int(key: str, value, *, minimum: int | None = None, allow_none: bool = False) -> int | None:
    """An integer setting (``None`` only when ``allow_none``); one sentence naming the key otherwise."""
    what = "a whole number" + (f" >= {minimum}" if minimum is not None else "") + (" or null" if allow_none else "")
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or value is None:
        raise ConfigError(f"{key}={value!r} is not {what}")
    try:
        number = float(value) if not isinstance(value, int) else value
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={value!r} is not {what}") from None
    if isinstance(number, float) and (math.isnan(number) or not number.is_integer()):
        raise ConfigError(f"{key}={value!r} is not {what}")
    number = int(number)
    if minimum is not None and number < minimum:
        raise ConfigError(f"{key}={value!r} is not {what}")
    return number


def _positive_float(key: str, value) -> float:
    try:
        number = float(value) if not isinstance(value, bool) else float("nan")
    except (TypeError, ValueError):
        raise ConfigError(f"{key}={value!r} is not a positive number") from None
    if not number > 0 or number == float("inf"):
        raise ConfigError(f"{key}={value!r} is not a positive number")
    return number


def _check_task(t: "TaskCfg", family: str) -> None:
    """Every typed task setting, before any data or weight is touched."""
    from evaluation.benchmarks import known_templates

    where = f"benchmark.tasks.{t.key}"
    templates = known_templates()
    _choice(f"{where}.task", t.task, templates)
    for name in ("annotations", "video_root"):
        if not isinstance(getattr(t, name), str) or not getattr(t, name):
            raise ConfigError(f"{where}.{name}={getattr(t, name)!r} must be a path")
    t.fps = _positive_float(f"{where}.fps", t.fps)
    if not isinstance(t.max_frames, dict):
        raise ConfigError(f"{where}.max_frames={t.max_frames!r} must map model families to frame caps, "
                          f"e.g. {{{family}: 128}}")
    if family not in t.max_frames:
        raise ConfigError(f"{where}.max_frames has no entry for model family {family}")
    t.max_frames = {k: _int(f"{where}.max_frames.{k}", v, minimum=2) for k, v in t.max_frames.items()}
    for name in ("min_pixels", "max_pixels", "total_pixels"):
        setattr(t, name, _int(f"{where}.{name}", getattr(t, name), minimum=1))
    _choice(f"{where}.system_prompt", t.system_prompt, ("persona", "empty"))
    if not isinstance(t.generation, dict):
        raise ConfigError(f"{where}.generation={t.generation!r} must be a mapping of generation settings")
    gen = t.generation
    if "max_new_tokens" in gen:
        gen["max_new_tokens"] = _int(f"{where}.generation.max_new_tokens", gen["max_new_tokens"], minimum=1)
    if "num_beams" in gen:
        gen["num_beams"] = _int(f"{where}.generation.num_beams", gen["num_beams"], minimum=1)
        if gen["num_beams"] != 1:
            raise ConfigError(f"{where}.generation.num_beams={gen['num_beams']}: token selection runs one "
                              "sequence per sample; only num_beams=1 is supported")
    for name in ("temperature", "top_p"):
        if gen.get(name) is not None:
            try:
                gen[name] = float(gen[name])
            except (TypeError, ValueError):
                raise ConfigError(f"{where}.generation.{name}={gen[name]!r} is not a number") from None
    if "do_sample" in gen and not isinstance(gen["do_sample"], bool):
        raise ConfigError(f"{where}.generation.do_sample={gen['do_sample']!r} must be true or false")
    if t.synthetic is not None:
        if not isinstance(t.synthetic, dict):
            raise ConfigError(f"{where}.synthetic={t.synthetic!r} must be a mapping or null")
        import inspect

        from evaluation.synthetic import ensure

        allowed = [n for n in inspect.signature(ensure).parameters if n != "root"]
        unknown = sorted(set(t.synthetic) - set(allowed))
        if unknown:
            raise ConfigError(f"{where}.synthetic has unknown keys {unknown}; allowed: {allowed}")
        for name in ("num_clips", "fps", "width", "height", "sample_rate", "questions_per_clip"):
            if name in t.synthetic:
                t.synthetic[name] = _int(f"{where}.synthetic.{name}", t.synthetic[name], minimum=1)
        if "seed" in t.synthetic:
            t.synthetic["seed"] = _int(f"{where}.synthetic.seed", t.synthetic["seed"])
        if "audio" in t.synthetic and not isinstance(t.synthetic["audio"], bool):
            raise ConfigError(f"{where}.synthetic.audio={t.synthetic['audio']!r} must be true or false")
        if "seconds" in t.synthetic:
            t.synthetic["seconds"] = _positive_float(f"{where}.synthetic.seconds", t.synthetic["seconds"])


def _schedule(raw: dict, family: str) -> ScheduleCfg:
    name = raw.get("name", "custom")
    pair = raw.get(family, raw)
    if not isinstance(pair, dict) or "video" not in pair:
        raise ConfigError(f"schedule={name} has no ratios for model family {family}")
    prefix = f"schedule.{family}" if family in raw else "schedule"
    return ScheduleCfg(name=name, video=_ratio(f"{prefix}.video", pair["video"]), audio=_ratio(f"{prefix}.audio", pair["audio"]))


def _to_dict(cfg: DictConfig, key: str) -> dict:
    node = OmegaConf.select(cfg, key)
    if node is None:
        return {}
    try:
        return OmegaConf.to_container(node, resolve=True, throw_on_missing=False)
    except Exception as exc:  # interpolation errors name the key already
        raise ConfigError(f"{key}: {exc}") from exc


def validate(cfg: DictConfig, *, check_data: bool = True) -> RunConfig:
    mode = cfg.get("mode", "run")
    _choice("mode", mode, MODES)
    model_raw = _to_dict(cfg, "model")
    model = _build(ModelCfg, "model", model_raw)
    _choice("model.family", model.family, FAMILIES)
    _choice("model.dtype", model.dtype, DTYPES)
    _choice("model.attn_implementation", model.attn_implementation, ATTN)
    if mode == "run" and not model.tiny:
        from seats_exp.models.loading import looks_like_local_path

        if looks_like_local_path(model.checkpoint) and not Path(model.checkpoint).expanduser().is_dir():
            raise ConfigError(f"model.checkpoint={model.checkpoint!r} does not exist "
                              "(give a checkpoint folder or a hub id)")
    if model.attn_implementation == "flash_attention_2" and mode == "run":
        try:
            import flash_attn  # noqa: F401
        except ImportError as exc:
            raise ConfigError("model.attn_implementation=flash_attention_2 needs the flash-attn package "
                              "(pip install 'seats-exp[gpu]' on a CUDA machine); use sdpa or eager otherwise") from exc

    method_raw = _to_dict(cfg, "method")
    if "name" not in method_raw:
        raise ConfigError("method.name is missing; pick a method with method=<name>")
    method = MethodCfg(name=method_raw.pop("name"), params=method_raw)
    schedule = _schedule(_to_dict(cfg, "schedule"), model.family)

    bench_raw = _to_dict(cfg, "benchmark")
    tasks_raw = bench_raw.pop("tasks", None) or {}
    if not tasks_raw:
        raise ConfigError(f"benchmark={bench_raw.get('name')} defines no tasks")
    tasks = [_build(TaskCfg, f"benchmark.tasks.{k}", dict(v), key=k) for k, v in tasks_raw.items()]
    benchmark = _build(BenchmarkCfg, "benchmark", bench_raw, tasks=tasks)
    _choice("benchmark.scoring", benchmark.scoring, ("faithful", "robust"))
    benchmark.limit = _int("benchmark.limit", benchmark.limit, minimum=1, allow_none=True)
    benchmark.seed = _int("benchmark.seed", benchmark.seed)
    for t in tasks:
        _check_task(t, model.family)
        if check_data and mode == "run" and not t.synthetic:
            if not Path(t.annotations).exists():
                raise ConfigError(f"benchmark.tasks.{t.key}.annotations={t.annotations} does not exist "
                                  "(point it at the benchmark's annotation file, or set paths.data_root)")
            if not Path(t.video_root).is_dir():
                raise ConfigError(f"benchmark.tasks.{t.key}.video_root={t.video_root} is not a folder "
                                  "(point it at the benchmark's video folder, or set paths.data_root)")

    logger_raw = _to_dict(cfg, "logger")
    logger = _build(LoggerCfg, "logger", logger_raw)
    _choice("logger", logger.name, LOGGERS)
    _choice("logger.mode", logger.mode, WANDB_MODES)

    engine = _to_dict(cfg, "engine")
    _choice("engine.kv_scope", engine.get("kv_scope", "all_executed"), ("all_executed", "after_drop_only"))
    ev = _to_dict(cfg, "eval")
    if _int("eval.batch_size", ev.get("batch_size", 1)) != 1:
        raise ConfigError(f"eval.batch_size={ev.get('batch_size')}: token selection runs one sample at a time; "
                          "only batch size 1 is supported (use more GPUs/tasks for throughput)")
    mnt = _int("eval.max_new_tokens_override", ev.get("max_new_tokens_override"), minimum=1, allow_none=True)

    rc = RunConfig(
        mode=mode, seed=_int("seed", cfg.get("seed", 0)), model=model, method=method, schedule=schedule, benchmark=benchmark,
        logger=logger, kv_scope=engine.get("kv_scope", "all_executed"), fidelity=bool(ev.get("fidelity", False)),
        progress=bool(ev.get("progress", True)), max_new_tokens_override=None if mnt is None else int(mnt),
        plan=_to_dict(cfg, "plan"), paths=_to_dict(cfg, "paths"), run_name=str(cfg.get("run_name", "run")),
    )
    # Method settings are checked by the method's own builder, still before any weight loads.
    build_selector_for(rc)
    return rc


def model_info(rc: RunConfig):
    from methods import ModelInfo

    return ModelInfo(variant=rc.model.name, family=rc.model.family, num_layers=int(rc.model.num_layers),
                     audio_tokens_per_second=25.0 if rc.model.family == "qwen2_5_omni" else 13.0)


def build_selector_for(rc: RunConfig):
    from methods import MethodConfigError, build_selector

    try:
        return build_selector(rc.method.name, rc.method.params, rc.schedule.video, rc.schedule.audio, model_info(rc))
    except MethodConfigError as exc:
        raise ConfigError(str(exc)) from exc
