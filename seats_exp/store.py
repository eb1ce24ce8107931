"""One run = one output folder: config.yaml, samples.jsonl (appended as samples complete), result.json.

Files are written atomically (write to a temporary name, then rename) so an interrupted run never
leaves a half-written result; ``samples.jsonl`` is appended line by line and flushed, and a
truncated last line (a kill mid-write) is ignored when read back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def atomic_write_text(path: Path, text: str) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


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


class RunStore:
    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.samples_path = self.dir / "samples.jsonl"
        self.result_path = self.dir / "result.json"
        self.config_path = self.dir / "config.yaml"

    def write_config(self, yaml_text: str) -> None:
        atomic_write_text(self.config_path, yaml_text)

    def append_sample(self, record: dict[str, Any]) -> None:
        with open(self.samples_path, "a") as f:
            f.write(json.dumps(record, default=_default) + "\n")
            f.flush()

    def iter_samples(self) -> Iterator[dict]:
        yield from iter_jsonl(self.samples_path)

    def write_result(self, result: dict) -> None:
        atomic_write_text(self.result_path, json.dumps(result, indent=2, default=_default) + "\n")

    def read_result(self) -> dict | None:
        if not self.result_path.exists():
            return None
        return json.loads(self.result_path.read_text())
