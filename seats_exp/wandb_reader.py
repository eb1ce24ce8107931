"""Read a W&B offline run back from its ``.wandb`` record file.

In offline mode wandb writes ``<WANDB_DIR>/wandb/offline-run-<time>-<id>/run-<id>.wandb`` (a
leveldb-style log of protobuf ``Record`` messages) and no plain config or summary file.  This
module decodes that file with wandb's own classes -- ``DataStore`` for the log framing and
``wandb_internal_pb2.Record`` for the messages -- and folds the records into plain Python data:

    {"config": {...}, "summary": {...}, "history": [{...}, ...], "tags": [...], "group": ...,
     "job_type": ..., "name": ..., "project": ..., "run_id": ..., "notes": ...,
     "exit_code": int | None, "complete": bool, "path": "<.wandb file>"}

Values are JSON-decoded from W&B's ``value_json``; keys given as ``nested_key`` paths are
rebuilt into nested dicts.  W&B-internal entries (``_wandb``) are left out of config and summary;
the history keeps ``_step``, ``_runtime`` and ``_timestamp``.  Logged tables appear as W&B's
``{"_type": "table-file", "path": ...}`` reference; :func:`read_table` loads one.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)

_INTERNAL_KEYS = {"_wandb"}


def find_offline_runs(wandb_dir: str | Path) -> list[Path]:
    """Offline run folders (``offline-run-*`` holding a ``run-*.wandb`` file), oldest first.

    ``wandb_dir`` may be the ``wandb`` folder itself or the ``WANDB_DIR`` that contains it.
    """
    wandb_dir = Path(wandb_dir)
    bases = [wandb_dir]
    if (wandb_dir / "wandb").is_dir():
        bases.append(wandb_dir / "wandb")
    runs: set[Path] = set()
    for base in bases:
        for d in base.glob("offline-run-*"):
            if d.is_dir() and not d.is_symlink() and any(d.glob("run-*.wandb")):
                runs.add(d)
    # Folder names start with the start time (offline-run-YYYYmmdd_HHMMSS-id): name order = time order.
    return sorted(runs, key=lambda p: (p.name, str(p)))


def _record_file(run_dir: Path) -> Path:
    if run_dir.is_file():
        return run_dir
    if not run_dir.is_dir():
        raise FileNotFoundError(f"W&B run folder not found: {run_dir}")
    files = sorted(run_dir.glob("run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"no run-*.wandb record file in {run_dir}")
    if len(files) > 1:
        raise ValueError(f"several .wandb record files in {run_dir}: {[f.name for f in files]}")
    return files[0]


def iter_records(path: str | Path) -> Iterator[Any]:
    """Yield the protobuf ``Record`` messages of one ``.wandb`` file, in write order.

    A run that was killed mid-write can end in a partial record; reading stops there (logged).
    """
    from wandb.proto import wandb_internal_pb2 as pb
    from wandb.sdk.internal.datastore import DataStore

    store = DataStore()
    store.open_for_scan(str(path))
    try:
        while True:
            try:
                data = store.scan_data()
            except AssertionError as exc:  # DataStore reports framing problems with asserts
                log.warning("W&B record file %s ends in an unreadable record (%s); stopping there", path, exc)
                return
            if data is None:
                return
            record = pb.Record()
            record.ParseFromString(data)
            yield record
    finally:
        store.close()


def _decode(value_json: str) -> Any:
    try:
        return json.loads(value_json)
    except ValueError:
        # W&B writes NaN/Infinity as bare tokens, which json.loads accepts; anything else is kept raw.
        return value_json


def _item_path(item: Any) -> list[str]:
    return list(item.nested_key) if len(item.nested_key) else [item.key]


def _set_path(target: dict, path: list[str], value: Any) -> None:
    node = target
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[path[-1]] = value


def _remove_path(target: dict, path: list[str]) -> None:
    node = target
    for key in path[:-1]:
        node = node.get(key)
        if not isinstance(node, dict):
            return
    node.pop(path[-1], None)


def _apply_updates(target: dict, updates: Any, removes: Any = ()) -> None:
    for item in updates:
        _set_path(target, _item_path(item), _decode(item.value_json))
    for item in removes:
        _remove_path(target, _item_path(item))


def _unwrap_config(config: dict) -> dict:
    """Turn W&B's ``{"key": {"value": v, "desc": ...}}`` form (config.yaml style) into ``{"key": v}``."""
    out = {}
    for key, value in config.items():
        if key in _INTERNAL_KEYS:
            continue
        if isinstance(value, dict) and "value" in value and set(value) <= {"value", "desc"}:
            value = value["value"]
        out[key] = value
    return out


def read_offline_run(run_dir: str | Path) -> dict:
    """Decode one offline run (its folder or its ``.wandb`` file) into config/summary/history/metadata."""
    path = _record_file(Path(run_dir))
    config: dict = {}
    summary: dict = {}
    history: list[dict] = []
    meta: dict[str, Any] = {
        "run_id": None, "project": None, "name": None, "group": None, "job_type": None,
        "tags": [], "notes": None,
    }
    exit_code: int | None = None
    complete = False

    for record in iter_records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            # Later run records (e.g. tags changed after init) override earlier fields they set.
            for key, value in (
                ("run_id", run.run_id), ("project", run.project), ("name", run.display_name),
                ("group", run.run_group), ("job_type", run.job_type), ("notes", run.notes),
            ):
                if value:
                    meta[key] = value
            if len(run.tags) or meta["tags"] == []:
                meta["tags"] = list(run.tags)
            _apply_updates(config, run.config.update, run.config.remove)
            _apply_updates(summary, run.summary.update, run.summary.remove)
        elif kind == "config":
            _apply_updates(config, record.config.update, record.config.remove)
        elif kind == "summary":
            _apply_updates(summary, record.summary.update, record.summary.remove)
        elif kind == "history":
            row: dict = {}
            _apply_updates(row, record.history.item)
            if "_step" not in row and record.history.HasField("step"):
                row["_step"] = record.history.step.num
            history.append(row)
        elif kind == "exit":
            exit_code = record.exit.exit_code
            complete = True

    for key in _INTERNAL_KEYS:
        summary.pop(key, None)
    return {
        "config": _unwrap_config(config),
        "summary": summary,
        "history": history,
        "tags": meta["tags"],
        "group": meta["group"] or None,
        "job_type": meta["job_type"] or None,
        "name": meta["name"] or None,
        "project": meta["project"] or None,
        "run_id": meta["run_id"] or None,
        "notes": meta["notes"] or None,
        "exit_code": exit_code,
        "complete": complete,
        "path": str(path),
    }


def read_table(run_dir: str | Path, ref: dict) -> dict:
    """Load a logged ``wandb.Table`` given its history/summary reference (``{"_type": "table-file", "path": ...}``).

    Returns the table JSON as W&B saved it (``{"columns": [...], "data": [[...], ...], ...}``).
    """
    run_dir = Path(run_dir)
    if run_dir.is_file():
        run_dir = run_dir.parent
    if not isinstance(ref, dict) or "path" not in ref:
        raise ValueError(f"not a W&B table reference: {ref!r}")
    table_path = run_dir / "files" / ref["path"]
    if not table_path.is_file():
        raise FileNotFoundError(f"table file not found: {table_path}")
    return json.loads(table_path.read_text())
