"""Benchmark data and lmms-eval task plumbing.

A benchmark task is data (an annotation file as published plus a video folder) and the pure
functions of ``evaluation/tasks/<template>/utils.py``.  :func:`materialize` turns the Hydra
``benchmark.tasks`` entries into ready lmms-eval task folders::

    names = materialize(OmegaConf.to_container(cfg.benchmark.tasks, resolve=True), out_dir,
                        limit=cfg.benchmark.limit, sample_ids=cfg.benchmark.sample_ids,
                        scoring=cfg.benchmark.scoring, seed=cfg.benchmark.seed)
    # lmms-eval: --tasks ",".join(names) --include_path out_dir
    #        or: TaskManager(include_path=str(out_dir)); get_task_dict(names, task_manager)

Each folder ``out_dir/seats_<key>/`` holds ``docs.jsonl`` (the normalised annotation rows plus
``_video_path``, ``_sample_id``, ``_task_key``, ``_row``), ``<key>.yaml`` (the template with
absolute ``data_files``, generation kwargs and ``metadata.seats``) and a generated ``utils.py``
that binds the template's functions to the scoring mode and seed.  ``out_dir/seats_manifest.json``
lists every materialised task with its media settings (what the model wrapper needs).

:func:`summarize` and :func:`breakdowns` turn the per-sample records that the tasks'
``process_results`` return into accuracy tables.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from evaluation import common as C
from evaluation.common import ERROR_MARKER, METRIC_NAME, error_reason, is_error  # noqa: F401 (re-export)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TASKS_DIR = Path(__file__).resolve().parent / "tasks"
TASK_PREFIX = "seats_"
MANIFEST_NAME = "seats_manifest.json"
DOCS_NAME = "docs.jsonl"

#: Resize factor per model family: pixel settings are given in merged tokens and multiplied by
#: factor² (spec §14.2: 28² for Qwen2.5-Omni, 32² for Qwen3-Omni).
FAMILY_RESIZE_FACTOR = {"qwen2_5_omni": 28, "qwen3_omni": 32}


class BenchmarkDataError(FileNotFoundError, ValueError):
    """A configured annotation file or video folder is missing, unreadable, empty or holds no row
    that can be scored, or a task names an unknown template; the message names the config key
    (``benchmark.tasks.<key>.<field>``).  The CLI prints it as one line (exit 2)."""


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchmarkSpec:
    """One benchmark template: a folder ``<tasks_dir>/<name>/`` holding ``<name>.yaml`` (the
    lmms-eval task template) and ``utils.py`` (its functions and ``DEFINITION``, a
    :class:`~evaluation.common.TaskDefinition`).  Every fact about the benchmark -- id field,
    category field, breakdown keys, aggregation, video layout, required fields -- is read from
    that ``DEFINITION``; nothing here repeats it."""

    name: str
    tasks_dir: Path = TASKS_DIR

    @property
    def template_dir(self) -> Path:
        return self.tasks_dir / self.name

    @property
    def template_yaml(self) -> Path:
        return self.template_dir / f"{self.name}.yaml"

    @property
    def utils_module(self) -> str:
        if self.tasks_dir == TASKS_DIR:
            return f"evaluation.tasks.{self.name}.utils"
        return f"_seats_tasks_{abs(hash(str(self.tasks_dir)))}.{self.name}.utils"

    def utils(self):
        if self.tasks_dir == TASKS_DIR:
            return importlib.import_module(self.utils_module)
        import sys
        from importlib import util as import_util

        if self.utils_module not in sys.modules:
            spec = import_util.spec_from_file_location(self.utils_module, self.template_dir / "utils.py")
            module = import_util.module_from_spec(spec)
            sys.modules[self.utils_module] = module
            spec.loader.exec_module(module)
        return sys.modules[self.utils_module]

    @property
    def definition(self) -> C.TaskDefinition:
        return self.utils().DEFINITION

    # views of the task folder's DEFINITION
    title = property(lambda self: self.definition.title or self.name)
    id_field = property(lambda self: self.definition.id_field)  # question id field; None -> row number
    category_field = property(lambda self: self.definition.group_field)  # aggregation group
    breakdown_keys = property(lambda self: tuple(self.definition.breakdowns))
    aggregation = property(lambda self: self.definition.aggregation)  # "group_unique" | "mean"
    video_field = property(lambda self: self.definition.video_field)

    def resolve_video(self, doc: Mapping, root: str) -> str:
        """(doc, video_root) -> absolute video path, by the benchmark's own rule."""
        return self.definition.video_path(doc, root)


def discover(tasks_dir: str | os.PathLike = TASKS_DIR) -> dict[str, BenchmarkSpec]:
    """Every task folder under ``tasks_dir`` (``<name>/<name>.yaml`` + ``<name>/utils.py``)."""
    root = Path(tasks_dir)
    out = {}
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if (folder / f"{folder.name}.yaml").is_file() and (folder / "utils.py").is_file():
            out[folder.name] = BenchmarkSpec(folder.name, root)
    return out


#: template name -> spec, one per folder of ``evaluation/tasks``.  Adding a benchmark = adding a
#: folder there (and its ``conf/benchmark`` files); nothing in this module changes.
BENCHMARKS: dict[str, BenchmarkSpec] = discover()


def known_templates() -> list[str]:
    return sorted(BENCHMARKS)


def get_spec(task_template: str) -> BenchmarkSpec:
    """Spec by template name (``seats_<template>`` is accepted too)."""
    name = str(task_template)
    if name not in BENCHMARKS and name.startswith(TASK_PREFIX) and name[len(TASK_PREFIX):] in BENCHMARKS:
        name = name[len(TASK_PREFIX):]
    if name not in BENCHMARKS:
        raise KeyError(f"unknown benchmark task {task_template!r}; known: {sorted(BENCHMARKS)}")
    return BENCHMARKS[name]


# --------------------------------------------------------------------------------------------
# Annotations
# --------------------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """numpy/pandas values -> plain Python (lists, scalars); NaN -> None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return _plain(value.tolist())
    if hasattr(value, "item") and type(value).__module__.startswith("numpy"):
        return _plain(value.item())
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if type(value).__name__ in ("NaTType", "NAType"):
        return None
    return str(value)


def _rows_from_json(data: Any, path: Path) -> list[dict]:
    if isinstance(data, list):
        rows = data
    elif isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)]
        if len(lists) >= 1:
            rows = lists[0]
        elif data and all(isinstance(v, dict) for v in data.values()):
            rows = list(data.values())
        else:
            raise ValueError(f"annotation file {path}: a JSON object must wrap a list of rows")
    else:
        raise ValueError(f"annotation file {path}: expected a list of rows, got {type(data).__name__}")
    bad = [i for i, r in enumerate(rows) if not isinstance(r, dict)]
    if bad:
        raise ValueError(f"annotation file {path}: row {bad[0]} is not an object")
    return [_plain(r) for r in rows]


def load_annotations(path: str | os.PathLike) -> list[dict]:
    """Rows of an annotation file as published: ``.json`` (a list, or an object wrapping a
    list), ``.jsonl`` or ``.parquet``.  Raises ``FileNotFoundError`` / ``ValueError`` naming the
    file when it is missing or cannot be read."""
    p = Path(os.path.expanduser(str(path)))
    if not p.is_file():
        raise FileNotFoundError(f"annotation file not found: {p}")
    suffix = p.suffix.lower()
    try:
        if suffix == ".parquet":
            import pandas as pd

            frame = pd.read_parquet(p)
            return [_plain(r) for r in frame.to_dict(orient="records")]
        text = p.read_text(encoding="utf-8-sig")
        if suffix == ".jsonl":
            return [_plain(json.loads(line)) for line in text.splitlines() if line.strip()]
        try:
            return _rows_from_json(json.loads(text), p)
        except json.JSONDecodeError:
            if suffix == ".json":
                # some "json" files are really JSON lines
                return [_plain(json.loads(line)) for line in text.splitlines() if line.strip()]
            raise
    except (FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        raise FileNotFoundError(f"cannot read annotation file {p}: {exc}") from exc
    except ValueError as exc:
        if str(p) in str(exc):
            raise
        raise ValueError(f"cannot read annotation file {p}: {exc}") from exc
    except Exception as exc:  # pyarrow / pandas errors
        raise ValueError(f"cannot read annotation file {p}: {type(exc).__name__}: {exc}") from exc


def _kind(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, list):
        return "list"
    return "dict"


def _as_text(value: Any) -> Any:
    return value if value is None or isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def normalize_rows(rows: list[dict]) -> list[dict]:
    """Make every column one arrow type so ``datasets``' json loader can read the file:
    mixed-type columns become strings (JSON text for lists/dicts), int+float columns floats,
    lists with mixed element types lists of strings, objects JSON text."""
    rows = [dict(r) for r in rows]
    keys: list[str] = []
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    for key in keys:
        values = [r.get(key) for r in rows]
        kinds = {_kind(v) for v in values} - {None}
        if kinds == {"int", "float"}:
            conv = lambda v: None if v is None else float(v)  # noqa: E731
        elif kinds == {"list"}:
            inner = {_kind(x) for v in values if v for x in v} - {None}
            if inner <= {"str"} or inner <= {"int"} or inner <= {"float"} or inner <= {"bool"}:
                conv = None
            elif inner == {"int", "float"}:
                conv = lambda v: None if v is None else [None if x is None else float(x) for x in v]  # noqa: E731
            else:
                conv = lambda v: None if v is None else [_as_text(x) for x in v]  # noqa: E731
        elif kinds == {"dict"} or len(kinds) > 1:
            conv = _as_text
        else:
            conv = None
        if conv is not None:
            for r in rows:
                if key in r:
                    r[key] = conv(r[key])
    return rows


# --------------------------------------------------------------------------------------------
# Materialize
# --------------------------------------------------------------------------------------------


class _FunctionTag(str):
    """A ``!function module.name`` scalar kept verbatim through load/dump."""


class _TemplateLoader(yaml.SafeLoader):
    pass


class _TemplateDumper(yaml.SafeDumper):
    pass


_TemplateLoader.add_constructor("!function", lambda loader, node: _FunctionTag(loader.construct_scalar(node)))
_TemplateDumper.add_representer(_FunctionTag, lambda dumper, v: dumper.represent_scalar("!function", str(v)))
_TemplateDumper.add_representer(
    str, lambda dumper, v: dumper.represent_scalar("tag:yaml.org,2002:str", v, style='"' if "\n" in v else None))


def _to_plain_settings(settings: Any) -> dict:
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(settings, DictConfig):
            return OmegaConf.to_container(settings, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return dict(settings)


def _ids_for(sample_ids: Any, key: str, template: str) -> set[str] | None:
    if sample_ids is None:
        return None
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(sample_ids, (DictConfig, ListConfig)):
            sample_ids = OmegaConf.to_container(sample_ids, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(sample_ids, Mapping):
        chosen = sample_ids.get(key, sample_ids.get(template))
        return None if chosen is None else {str(x) for x in chosen}
    if isinstance(sample_ids, (str, int)):
        return {str(sample_ids)}
    return {str(x) for x in sample_ids}


_SHIM = '''"""Generated by seats-exp evaluation/benchmarks.py (materialize) for task {task_name!r}.

Binds the template functions of evaluation/tasks/{template}/utils.py to scoring={scoring!r} and
seed={seed!r}.  lmms-eval executes this file once per ``!function`` tag, so process_results gets
its own random generator, seeded once when the task is loaded.
"""

import sys as _sys

_PROJECT_ROOT = {root!r}
if _PROJECT_ROOT not in _sys.path:
    _sys.path.insert(0, _PROJECT_ROOT)

from evaluation.tasks.{template} import utils as _template  # noqa: E402

TASK_NAME = {task_name!r}
TASK_KEY = {key!r}
SCORING = {scoring!r}
SEED = {seed!r}

_bound = _template.bind(scoring=SCORING, seed=SEED)
doc_to_visual = _template.doc_to_visual
doc_to_text = _template.doc_to_text
doc_to_target = _template.doc_to_target
process_results = _bound.process_results
aggregate = _bound.aggregate
'''


def _require_path(settings: Mapping, key: str, fieldname: str, *, is_dir: bool) -> Path:
    cfg_key = f"benchmark.tasks.{key}.{fieldname}"
    value = settings.get(fieldname)
    if value in (None, ""):
        raise BenchmarkDataError(f"{cfg_key} is not set")
    path = Path(os.path.expanduser(str(value))).resolve()
    ok = path.is_dir() if is_dir else path.is_file()
    if not ok:
        what = "video folder" if is_dir else "annotation file"
        raise BenchmarkDataError(f"{cfg_key}: {what} not found: {path}")
    return path


def materialize(tasks: Mapping[str, Mapping], out_dir: str | os.PathLike, *, limit: int | None = None,
                sample_ids: Any = None, scoring: str = "faithful", seed: int = 0) -> list[str]:
    """Write one lmms-eval task folder per ``tasks`` entry under ``out_dir``; return the task
    names (``seats_<key>``) in entry order.  Pass ``out_dir`` as lmms-eval's ``include_path``
    (use a folder of its own: lmms-eval loads every ``.yaml`` below it).

    ``tasks``: key -> task settings (``conf/benchmark/task/*.yaml``, resolved).  ``sample_ids``:
    ids to keep (a list for every task, or a mapping key/template -> list); ``limit``: first N
    samples per task after the id filter.  Missing video files are not an error here (the wrapper
    records them per sample); a missing annotation file or video root raises
    :class:`BenchmarkDataError` naming ``benchmark.tasks.<key>.<field>``.
    """
    if scoring not in C.SCORING_MODES:
        raise ValueError(f"benchmark.scoring must be one of {C.SCORING_MODES}, got {scoring!r}")
    if limit is not None and int(limit) < 0:
        raise ValueError(f"benchmark.limit must be >= 0 or null, got {limit!r}")
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    tasks = _to_plain_settings(tasks)
    names: list[str] = []
    manifest_entries: dict[str, dict] = {}
    for key, raw_settings in tasks.items():
        key = str(key)
        if not re.fullmatch(r"[A-Za-z0-9_]+", key):
            raise ValueError(f"benchmark.tasks.{key}: task keys may only use letters, digits and '_'")
        settings = _to_plain_settings(raw_settings or {})
        template = str(settings.get("task") or key)
        if template not in BENCHMARKS:
            raise BenchmarkDataError(f"benchmark.tasks.{key}.task: unknown task template {template!r}; "
                                     f"known: {sorted(BENCHMARKS)}")
        spec = BENCHMARKS[template]
        definition = spec.definition
        ann = _require_path(settings, key, "annotations", is_dir=False)
        video_root = _require_path(settings, key, "video_root", is_dir=True)
        try:
            rows = load_annotations(ann)
        except (FileNotFoundError, ValueError) as exc:
            raise BenchmarkDataError(f"benchmark.tasks.{key}.annotations: {exc}") from exc

        wanted = _ids_for(sample_ids, key, template)
        docs: list[dict] = []
        seen_ids: dict[str, int] = {}
        for row_index, row in enumerate(rows):
            if limit is not None and len(docs) >= int(limit):
                break
            sid_value = row.get(spec.id_field) if spec.id_field else None
            sid = str(row_index) if sid_value is None else str(sid_value)
            if wanted is not None and sid not in wanted:
                continue
            problem = definition.problem(row)
            try:
                video_path = spec.resolve_video(row, str(video_root))
            except (KeyError, TypeError) as exc:
                video_path = None
                problem = problem or f"row has no {exc} field (needed for the video path)"
            doc = dict(row)
            # _problem: why this row cannot be scored (None if it can); the model wrapper does not run it
            # _occurrence: how many earlier rows carry the same id (resume matches on (task, id, occurrence))
            occurrence = seen_ids.get(sid, 0)
            seen_ids[sid] = occurrence + 1
            doc.update(_video_path=video_path, _sample_id=sid, _task_key=key, _row=row_index, _problem=problem,
                       _occurrence=occurrence, _manifest=str(out / MANIFEST_NAME))
            docs.append(doc)
        if not docs:
            if not rows:
                raise BenchmarkDataError(f"benchmark.tasks.{key}.annotations: {ann} holds no rows")
            why = "after the sample_ids/limit filter" if (wanted is not None or limit is not None) else "in the file"
            raise BenchmarkDataError(f"benchmark.tasks.{key}: no samples left {why} ({ann})")
        problems = [d["_problem"] for d in docs if d["_problem"]]
        if len(problems) == len(docs):
            shown = "; ".join(sorted(set(problems))[:3])
            raise BenchmarkDataError(f"benchmark.tasks.{key}.annotations: none of the {len(docs)} rows of {ann} can "
                                     f"be scored ({shown}); is this the {spec.title} annotation file?")
        missing_ids = sorted(wanted - {d["_sample_id"] for d in docs}) if wanted is not None and limit is None else []

        task_name = f"{TASK_PREFIX}{key}"
        folder = out / task_name
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        data_file = folder / DOCS_NAME
        with open(data_file, "w", encoding="utf-8") as fh:
            for doc in normalize_rows(docs):
                fh.write(C.dump_json_line(doc) + "\n")

        seats_meta = {
            "task_key": key,
            "template": template,
            "title": spec.title,
            "scoring": scoring,
            "seed": seed,
            "n_docs": len(docs),
            "limit": limit,
            "sample_ids_missing": missing_ids,
            "annotations": str(ann),
            "video_root": str(video_root),
            "fps": settings.get("fps"),
            "max_frames": settings.get("max_frames"),
            "min_pixels": settings.get("min_pixels"),
            "max_pixels": settings.get("max_pixels"),
            "total_pixels": settings.get("total_pixels"),
            "system_prompt": settings.get("system_prompt", "empty"),
            "system_text": C.system_text(settings.get("system_prompt", "empty")),
            "generation": settings.get("generation"),
            "data_file": str(data_file),
            "project_root": str(PROJECT_ROOT),
        }

        with open(spec.template_yaml, encoding="utf-8") as fh:
            config = yaml.load(fh, Loader=_TemplateLoader)  # noqa: S506 (custom safe loader)
        config["task"] = task_name
        config["dataset_kwargs"] = {"data_files": {config.get("test_split", "test"): str(data_file)}}
        gen = dict(config.get("generation_kwargs") or {})
        gen.update(settings.get("generation") or {})
        config["generation_kwargs"] = gen
        meta = dict(config.get("metadata") or {})
        meta["seats"] = seats_meta
        config["metadata"] = meta
        header = (f"# Generated by seats-exp evaluation/benchmarks.py from "
                  f"evaluation/tasks/{template}/{template}.yaml; do not edit.\n")
        (folder / f"{key}.yaml").write_text(
            header + yaml.dump(config, Dumper=_TemplateDumper, sort_keys=False, allow_unicode=True),
            encoding="utf-8")
        (folder / "utils.py").write_text(
            _SHIM.format(task_name=task_name, template=template, key=key, scoring=scoring, seed=seed,
                         root=str(PROJECT_ROOT)), encoding="utf-8")
        names.append(task_name)
        manifest_entries[task_name] = seats_meta

    manifest_path = out / MANIFEST_NAME
    manifest: dict = {"tasks": {}}
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except ValueError:
            manifest = {"tasks": {}}
    kept = {n: m for n, m in manifest.get("tasks", {}).items() if (out / n).is_dir() and n not in manifest_entries}
    manifest = {"include_path": str(out), "tasks": {**kept, **manifest_entries}}
    manifest_path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False), encoding="utf-8")
    return names


def annotation_hashes(tasks: Iterable[Any]) -> dict[str, str]:
    """task key -> sha256 of its annotation file (tasks with a readable file that is not generated by
    the synthetic set, whose identity is its ``synthetic`` settings).  Part of a run's identity: an
    edited or reordered annotation file makes a different point, never a silent mix of answers."""
    import hashlib

    out = {}
    for t in tasks:
        if getattr(t, "synthetic", None):
            continue
        path = Path(os.path.expanduser(str(t.annotations)))
        if not path.is_file():
            continue
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        out[str(t.key)] = digest.hexdigest()
    return out


def load_manifest(out_dir: str | os.PathLike) -> dict[str, dict]:
    """task name -> ``metadata.seats`` of every task materialised under ``out_dir``."""
    path = Path(out_dir) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no {MANIFEST_NAME} in {out_dir}: run materialize first")
    return json.loads(path.read_text(encoding="utf-8"))["tasks"]


def media_settings(task_settings: Mapping, family: str) -> dict:
    """Per-video loader settings for one task and model family: fps, max_frames (picked by
    family), min/max/total pixels multiplied by factor² (28² Qwen2.5-Omni, 32² Qwen3-Omni) and the
    system text."""
    if family not in FAMILY_RESIZE_FACTOR:
        raise ValueError(f"unknown model family {family!r}; known: {sorted(FAMILY_RESIZE_FACTOR)}")
    factor = FAMILY_RESIZE_FACTOR[family]
    max_frames = task_settings.get("max_frames")
    if isinstance(max_frames, Mapping):
        if family not in max_frames:
            raise ValueError(f"max_frames has no entry for model family {family!r}: {dict(max_frames)}")
        max_frames = max_frames[family]

    def px(name):
        v = task_settings.get(name)
        return None if v is None else int(v) * factor * factor

    return {
        "fps": task_settings.get("fps"),
        "max_frames": max_frames,
        "min_pixels": px("min_pixels"),
        "max_pixels": px("max_pixels"),
        "total_pixels": px("total_pixels"),
        "resize_factor": factor,
        "system_text": task_settings.get("system_text", C.system_text(task_settings.get("system_prompt", "empty"))),
    }


# --------------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------------


def _records(per_sample_records: Iterable[Any]) -> list[dict]:
    """Accept records or ``{METRIC_NAME: record}`` dicts (process_results output)."""
    out = []
    for r in per_sample_records:
        if isinstance(r, Mapping) and METRIC_NAME in r and isinstance(r[METRIC_NAME], Mapping):
            r = r[METRIC_NAME]
        out.append(dict(r))
    return out


def breakdowns(task_template: str, per_sample_records: Iterable[Any]) -> dict[str, dict[str, float]]:
    """Per-category accuracy (percent) for each breakdown key of the benchmark, error samples
    excluded.  Group-unique benchmarks count each sample id once per category."""
    return _breakdowns(get_spec(task_template), _records(per_sample_records))[0]


def _breakdowns(spec: BenchmarkSpec, records: list[dict]) -> tuple[dict, dict]:
    unique = spec.aggregation == "group_unique"
    tables, counts = {}, {}
    for key in spec.breakdown_keys:
        tables[key], counts[key] = C.category_table(records, key, unique_ids=unique)
    return tables, counts


def summarize(task_template: str, per_sample_records: Iterable[Any]) -> dict:
    """Accuracy by the benchmark's own rule (group-unique-id for Daily-Omni/WorldSense/
    LVOmniBench, mean for OmniVideoBench/Video-MME) over scored samples, with counts, error
    reasons, fallback counts, breakdown tables and notes.  ``accuracy`` is None when no sample
    was scored."""
    spec = get_spec(task_template)
    records = _records(per_sample_records)
    scored = C.scored(records)
    errors = [r for r in records if r.get("score") is None]
    reasons: dict[str, int] = {}
    for r in errors:
        reason = str(r.get("error") or "unscored")
        reasons[reason] = reasons.get(reason, 0) + 1
    fallbacks: dict[str, int] = {}
    for r in scored:
        if r.get("fallback"):
            fallbacks[str(r["fallback"])] = fallbacks.get(str(r["fallback"]), 0) + 1
    if spec.aggregation == "group_unique":
        accuracy = C.group_unique_accuracy(scored) if scored else None
    else:
        accuracy = C.mean_accuracy(scored) if scored else None
    tables, counts = _breakdowns(spec, records)
    notes = []
    unparsed = counts.get("duration_bucket", {}).get(C.UNPARSED_BUCKET, 0)
    if unparsed:
        notes.append(f"{unparsed} scored sample(s) have a duration the faithful parser cannot bucket "
                     f"(upstream raises on HH:MM:SS); they are in the '{C.UNPARSED_BUCKET}' bucket")
    if fallbacks.get("random"):
        notes.append(f"{fallbacks['random']} prediction(s) are random fallback letters")
    if fallbacks.get("empty_option_text"):
        notes.append(f"{fallbacks['empty_option_text']} prediction(s) came from upstream's empty-option-text "
                     f"content match (parsed as the first letter)")
    return {
        "task": spec.name,
        "aggregation": spec.aggregation,
        "accuracy": accuracy,
        "n_samples": len(records),
        "n_scored": len(scored),
        "n_errors": len(errors),
        "errors": reasons,
        "fallbacks": fallbacks,
        "breakdowns": tables,
        "breakdown_counts": counts,
        "notes": notes,
    }


__all__ = [
    "BENCHMARKS", "BenchmarkSpec", "BenchmarkDataError", "ERROR_MARKER", "FAMILY_RESIZE_FACTOR",
    "MANIFEST_NAME", "TASK_PREFIX", "breakdowns", "get_spec", "is_error", "error_reason",
    "load_annotations", "load_manifest", "materialize", "media_settings", "normalize_rows", "summarize",
]
