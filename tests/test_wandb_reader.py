"""A real offline W&B run is written, then read back from its .wandb record file."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from seats_exp.wandb_reader import find_offline_runs, read_offline_run, read_table

# The run is produced in a child process: wandb's service process, its global run state and its
# stdout hooks then live and die with that child instead of leaking into the pytest session.
_PRODUCER = textwrap.dedent(
    """
    import wandb
    run = wandb.init(project="seats-test", group="grp-1", job_type="eval", tags=["t1", "smoke"],
                     name="reader-run", config={"a": 1, "nested": {"b": 2}},
                     settings=wandb.Settings(console="off", x_disable_stats=True))
    for i in range(3):
        wandb.log({"loss": 1.0 / (i + 1), "acc_step": i * 0.1})
    run.summary["acc"] = 0.5
    table = wandb.Table(columns=["id", "pred"], data=[[1, "A"], [2, "C"]])
    wandb.log({"samples": table})
    run.config.update({"late": "x"})
    run.finish()
    """
)


def _offline_env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(
        WANDB_MODE="offline",
        WANDB_DIR=str(tmp_path),
        WANDB_SILENT="true",
        WANDB_CONFIG_DIR=str(tmp_path / "config"),
        WANDB_CACHE_DIR=str(tmp_path / "cache"),
        WANDB_DATA_DIR=str(tmp_path / "data"),
        WANDB_ARTIFACT_DIR=str(tmp_path / "artifacts"),
    )
    return env


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory) -> Path:
    tmp_path = tmp_path_factory.mktemp("wandb_offline")
    proc = subprocess.run(
        [sys.executable, "-c", _PRODUCER],
        cwd=tmp_path,
        env=_offline_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp_path


def test_find_offline_runs(offline_run):
    runs = find_offline_runs(offline_run)  # the WANDB_DIR
    assert len(runs) == 1 and runs[0].name.startswith("offline-run-")
    assert find_offline_runs(offline_run / "wandb") == runs  # or the wandb folder itself
    assert find_offline_runs(offline_run / "nowhere") == []


def test_read_offline_run(offline_run):
    (run_dir,) = find_offline_runs(offline_run)
    data = read_offline_run(run_dir)

    assert data["project"] == "seats-test"
    assert data["group"] == "grp-1"
    assert data["job_type"] == "eval"
    assert data["name"] == "reader-run"
    assert data["tags"] == ["t1", "smoke"]
    assert data["run_id"] and run_dir.name.endswith(data["run_id"])
    assert data["complete"] is True and data["exit_code"] == 0

    assert data["config"] == {"a": 1, "nested": {"b": 2}, "late": "x"}

    history = data["history"]
    assert [row["_step"] for row in history] == [0, 1, 2, 3]
    assert [row["loss"] for row in history[:3]] == pytest.approx([1.0, 0.5, 1 / 3])
    assert [row["acc_step"] for row in history[:3]] == pytest.approx([0.0, 0.1, 0.2])
    assert all("_timestamp" in row and "_runtime" in row for row in history)
    table_ref = history[3]["samples"]
    assert table_ref["_type"] == "table-file" and table_ref["nrows"] == 2 and table_ref["ncols"] == 2

    summary = data["summary"]
    assert summary["acc"] == 0.5
    assert summary["loss"] == pytest.approx(1 / 3)
    assert summary["_step"] == 3
    assert summary["samples"]["_type"] == "table-file"
    assert "_wandb" not in summary

    table = read_table(run_dir, table_ref)
    assert table["columns"] == ["id", "pred"]
    assert table["data"] == [[1, "A"], [2, "C"]]

    # The .wandb file itself is accepted too.
    assert read_offline_run(data["path"])["config"] == data["config"]


def test_missing_run_dir(tmp_path):
    with pytest.raises(FileNotFoundError, match="no run-"):
        read_offline_run(tmp_path)
    with pytest.raises(FileNotFoundError, match="not found"):
        read_offline_run(tmp_path / "absent")


def test_truncated_record_file(offline_run, tmp_path):
    """A run killed mid-write still reads up to its last whole record."""
    (run_dir,) = find_offline_runs(offline_run)
    src = Path(read_offline_run(run_dir)["path"])
    cut = tmp_path / "offline-run-x" / src.name
    cut.parent.mkdir()
    raw = src.read_bytes()
    cut.write_bytes(raw[: len(raw) - 40])
    data = read_offline_run(cut.parent)
    assert data["complete"] is False and data["exit_code"] is None
    assert data["config"]["a"] == 1 and len(data["history"]) >= 3
