"""One run = one output folder: config.yaml, samples.jsonl (appended as samples complete), result.json.

Files are written atomically (write to a temporary name, then rename) so an interrupted run never
leaves a half-written result; ``samples.jsonl`` is appended line by line and flushed, and a
truncated last line (a kill mid-write) is ignored when read back.  Before the first append of an
attempt the file is repaired (:func:`repair_jsonl`: the fragment is cut off), so the next record is
never glued onto it.

Besides the samples, a run folder keeps ``scores.jsonl`` (each sample's gold answer, prediction, score
and category, written with the result), ``attempts.json`` (the wall time of each attempt, so a resumed
point reports the sum) and ``logged.json`` (written once the point's W&B run is logged: "logged" is
recorded apart from "done").
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger("seats_exp")


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def replace_folder(built: Path, dest: Path) -> None:
    """Put a fully built folder ``built`` at ``dest`` by renames only (readers never see a half-written
    folder); an existing ``dest`` (an older version, or an empty folder) is swapped out and removed."""
    if dest.exists():
        old = dest.parent / f".{dest.name}.old-{os.getpid()}"
        dest.rename(old)
        built.rename(dest)
        shutil.rmtree(old)
    else:
        built.rename(dest)


def _default(obj):
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def iter_jsonl(path: str | Path) -> Iterator[dict]:
    """Records of a JSON-lines file; a missing file is empty and a line cut short by a kill is skipped."""
    path = Path(path)
    if not path.exists():
        return
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue


def repair_jsonl(path: str | Path) -> int:
    """Cut a JSON-lines file back to its last complete line (a kill mid-write leaves a fragment without
    its newline); return the number of bytes dropped.  Complete lines are never touched."""
    path = Path(path)
    if not path.exists():
        return 0
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        keep, pos, chunk = 0, size, 65536
        while pos > 0:  # find the last newline, reading backwards
            start = max(0, pos - chunk)
            f.seek(start)
            idx = f.read(pos - start).rfind(b"\n")
            if idx >= 0:
                keep = start + idx + 1
                break
            pos = start
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    log.warning("%s: dropped a partial last line (%d bytes, cut by a kill) before appending", path, size - keep)
    return size - keep


class RunStore:
    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.samples_path = self.dir / "samples.jsonl"
        self.result_path = self.dir / "result.json"
        self.config_path = self.dir / "config.yaml"
        self.attempts_path = self.dir / "attempts.json"
        self.logged_path = self.dir / "logged.json"
        self.scores_path = self.dir / "scores.jsonl"
        self._repaired: set[Path] = set()
        self._attempt_started: float | None = None

    def write_config(self, yaml_text: str) -> None:
        atomic_write_text(self.config_path, yaml_text)

    def append_sample(self, record: dict[str, Any]) -> None:
        if self.samples_path not in self._repaired:  # first append of this attempt: drop a fragment first
            repair_jsonl(self.samples_path)
            self._repaired.add(self.samples_path)
        with open(self.samples_path, "a") as f:
            f.write(json.dumps(record, default=_default) + "\n")
            f.flush()

    def iter_samples(self) -> Iterator[dict]:
        yield from iter_jsonl(self.samples_path)

    def write_scores(self, scores: list[dict]) -> None:
        """The scored record of every sample (gold, prediction, score, category): W&B tables, also later."""
        atomic_write_text(self.scores_path, "".join(json.dumps(r, default=_default) + "\n" for r in scores))

    def iter_scores(self) -> Iterator[dict]:
        yield from iter_jsonl(self.scores_path)

    def write_result(self, result: dict) -> None:
        atomic_write_text(self.result_path, json.dumps(result, indent=2, default=_default) + "\n")

    def read_result(self) -> dict | None:
        if not self.result_path.exists():
            return None
        return json.loads(self.result_path.read_text())

    # -- attempts: wall time summed over a point's attempts (resume, requeue) ----------------------------
    def read_attempts(self) -> list[dict]:
        try:
            data = json.loads(self.attempts_path.read_text())
        except (OSError, ValueError):
            return []
        return data if isinstance(data, list) else []

    def start_attempt(self) -> None:
        self._attempt_started = time.time()
        atomic_write_text(self.attempts_path, json.dumps(
            self.read_attempts() + [{"started": self._attempt_started, "wall_time_s": 0.0}]) + "\n")

    def update_attempt(self) -> list[dict]:
        """Record the running attempt's wall time so far (called as samples complete and at the end, so a
        killed attempt counts up to its last recorded sample); return every attempt."""
        attempts = self.read_attempts()
        if self._attempt_started is None or not attempts:
            return attempts
        attempts[-1]["wall_time_s"] = time.time() - self._attempt_started
        atomic_write_text(self.attempts_path, json.dumps(attempts) + "\n")
        return attempts

    # -- logged: apart from done --------------------------------------------------------------------------
    def read_logged(self) -> dict | None:
        try:
            return json.loads(self.logged_path.read_text())
        except (OSError, ValueError):
            return None

    def write_logged(self, info: dict) -> None:
        atomic_write_text(self.logged_path, json.dumps(info, indent=2, default=_default) + "\n")
