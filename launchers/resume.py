"""Skip finished sweep points, resume interrupted ones.

A sweep point's folder is stable: experiment files set ``hydra.sweep.dir`` without a timestamp and
``hydra.sweep.subdir: ${run_name}``, so launching the same sweep again (or submitit requeueing a
preempted job) lands in the same folder.  What happens there depends on what the folder holds,
compared with the resolved configuration about to run (:func:`folder_state`):

``new``       nothing recorded yet: run.
``partial``   samples recorded under the same configuration, no ``result.json``: run, reusing every
              recorded answer (``Runtime.done``; the model wrapper never generates them again).
``done``      ``result.json`` under the same configuration: skip -- no data, model or lmms-eval work;
              the stored result is returned.
``conflict``  the folder holds results or samples of a *different* configuration: refuse, naming the
              differing keys (point the sweep elsewhere or delete the folder); mixing answers of two
              configurations would corrupt both.

"Same configuration" is the point's identity: the resolved ``config.yaml`` the run writes, less the
settings that change no sample and no score (:data:`IGNORED`).  What stays is what makes the result:
model (its checkpoint included), method, schedule, benchmark and its data (annotation and video
paths), eval and engine settings, seed.  Where it was launched from is not part of it: ``paths.*``
(roots are only used through the resolved model/benchmark paths, which stay), ``plan.*`` (read by
``mode=plan`` only), the run and experiment names, the progress bar and the logger.  A finished point
whose only change is the logger is therefore not run again (a missing W&B run is caught up from its
files, see ``seats_exp.runner``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

# Dotted keys that change neither a sample nor a score (not part of a point's identity).
IGNORED = ("eval.progress", "logger", "paths", "plan", "run_name", "experiment_name")


class RunFolderConflict(RuntimeError):
    """The run folder holds samples or a result of another configuration."""


def _drop(cfg: dict, dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    node: Any = cfg
    for p in parents:
        node = node.get(p) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(leaf, None)


def comparable(config_yaml: str) -> dict:
    cfg = yaml.safe_load(config_yaml) or {}
    for key in IGNORED:
        _drop(cfg, key)
    return cfg


def differing_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            out += differing_keys(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [prefix.rstrip(".") or "<root>"]


@dataclass
class FolderState:
    state: str  # new | partial | done | conflict
    n_samples: int = 0
    differing: list[str] = field(default_factory=list)


def answered_samples(run_dir: str | Path) -> int:
    from seats_exp.distributed import iter_run_samples

    return len({(r.get("task"), r.get("doc_id")) for r in iter_run_samples(run_dir) if r.get("answer") is not None})


def folder_state(run_dir: str | Path, config_yaml: str) -> FolderState:
    from seats_exp.distributed import sample_files

    run_dir = Path(run_dir)
    has_result = (run_dir / "result.json").exists()
    has_samples = any(p.exists() for p in sample_files(run_dir))
    if not has_result and not has_samples:
        return FolderState("new")
    stored = run_dir / "config.yaml"
    n = answered_samples(run_dir)
    if not stored.exists():
        return FolderState("conflict", n, ["<config.yaml missing>"])
    diff = differing_keys(comparable(stored.read_text()), comparable(config_yaml))
    if diff:
        return FolderState("conflict", n, diff)
    return FolderState("done" if has_result else "partial", n)


def finished_result(run_dir: str | Path, config_yaml: str) -> dict | None:
    """The stored result when this point is finished; None when it must run; raises on a conflict."""
    import json

    state = folder_state(run_dir, config_yaml)
    if state.state == "conflict":
        shown = ", ".join(state.differing[:8]) + (" ..." if len(state.differing) > 8 else "")
        raise RunFolderConflict(
            f"run folder {run_dir} holds samples or a result of a different configuration (differs at: {shown}); "
            "choose another hydra.sweep.dir / hydra.run.dir or delete the folder")
    if state.state == "done":
        return json.loads((Path(run_dir) / "result.json").read_text())
    return None


#: Key added to a point's configuration: sha256 of every annotation file (evaluation.benchmarks.annotation_hashes).
DATA_IDENTITY_KEY = "annotations_sha256"


def with_data_identity(config_yaml: str, rc) -> str:
    """``config_yaml`` plus the content hash of each task's annotation file, so that a changed file is
    a conflict (a clear refusal naming ``annotations_sha256.<task>``), never a resume onto other rows."""
    from evaluation.benchmarks import annotation_hashes

    hashes = annotation_hashes(rc.benchmark.tasks)
    if not hashes:
        return config_yaml
    return config_yaml.rstrip("\n") + "\n" + yaml.safe_dump({DATA_IDENTITY_KEY: hashes}, sort_keys=True)
