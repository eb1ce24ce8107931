"""Site configs: a folder of the user's own ``paths/``, ``hydra/launcher/`` and ``experiment/`` files
added with ``hydra.searchpath=[file://…]``, through the real commands (``seats-exp``,
``seats-exp-sweep-list``) in subprocesses.  Nothing is launched and no weights are loaded.

1. The documented SLURM-site example (``examples/site``, copied to a temporary folder).
2. A ``paths`` preset and an ``experiment`` written by the test into a temporary folder.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
EXAMPLE_SITE = REPO / "examples" / "site"


def _run(tool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HYDRA_"))}
    return subprocess.run([str(BIN / tool), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture()
def site(tmp_path) -> Path:
    folder = tmp_path / "my site"  # a space in the path: the searchpath takes it quoted
    shutil.copytree(EXAMPLE_SITE, folder)
    return folder


def _sp(folder: Path) -> str:
    return f"hydra.searchpath=['file://{folder}']"


def test_example_site_experiment_sets_paths_checkpoint_and_launcher(site, tmp_path):
    proc = _run("seats-exp", _sp(site), "experiment=mycluster_7b", "--cfg", "job", "--resolve", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    job = yaml.safe_load(proc.stdout)
    assert job["paths"] == {"root": "/scratch/seats-exp", "data_root": "/datasets/omni", "model_root": "/models",
                            "output_root": "/scratch/seats-exp/outputs"}
    assert job["model"]["name"] == "qwen2_5_omni_7b" and job["model"]["checkpoint"] == "/models/Qwen2.5-Omni-7B"
    assert job["logger"]["entity"] == "my-wandb-team"
    assert job["benchmark"]["tasks"]["synthetic"]["annotations"] == "/datasets/omni/synthetic/qa.json"

    proc = _run("seats-exp", _sp(site), "experiment=mycluster_7b", "--cfg", "hydra", "-p", "hydra.launcher",
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    launcher = yaml.safe_load(proc.stdout)
    assert launcher["_target_"] == "hydra_plugins.seats_exp_launchers.SlurmLauncher"  # seats-exp's slurm preset
    assert (launcher["partition"], launcher["account"], launcher["gpus_per_node"], launcher["tasks_per_node"]) == (
        "gpu", "myproject", 4, 4)
    assert launcher["setup"][0] == "module load cuda/12.4"
    assert launcher["signal_delay_s"] == 120  # inherited from seats-exp's own slurm preset


def test_example_site_sweep_listing(site, tmp_path):
    # (the command line narrows the experiment's 40-point grid to 2 points, as it would for a launch)
    proc = _run("seats-exp-sweep-list", _sp(site), "experiment=mycluster_7b",
                "+paper_cell/qwen2_5_omni_7b=seats_r10,seats_r35", "benchmark=worldsense", cwd=tmp_path)
    lines = proc.stdout.splitlines()
    assert len(lines) == 4 and lines[1].split()[2] == "qwen2_5_omni_7b.seats.r10.worldsense", proc.stdout[-2000:]
    assert lines[0] == ("experiment paper_qwen2_5_omni_7b: 2 points, launcher mycluster, "
                        "folder /scratch/seats-exp/outputs/experiments/paper_qwen2_5_omni_7b"), proc.stdout[-2000:]
    # The example's checkpoint folder does not exist here: every point says so before anything launches.
    assert all("INVALID: model.checkpoint='/models/Qwen2.5-Omni-7B' does not exist" in line for line in lines[1:-1])
    assert proc.returncode == 2  # invalid points are bad input


def test_site_folder_joins_the_search_path(site, tmp_path):
    proc = _run("seats-exp", _sp(site), "--info", "searchpath", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in proc.stdout.splitlines() if line.startswith("|")]
    assert [r[1] for r in rows[1:]] == ["pkg://hydra.conf", f"file://{REPO / 'conf'}", f"file://{site}",
                                        "structured://"]
    # (Hydra's --help lists the groups of the built-in tree only; a wrong option lists the site's too.)
    proc = _run("seats-exp", _sp(site), "paths=nosuch", "mode=plan", cwd=tmp_path)
    assert proc.returncode == 1
    assert "Available options in 'paths':\n\tdefault\n\tmycluster\n" in proc.stderr


def test_paths_preset_and_experiment_from_a_temporary_folder(tmp_path):
    site = tmp_path / "site"
    (site / "paths").mkdir(parents=True)
    (site / "experiment").mkdir()
    root = tmp_path / "project"
    (site / "paths" / "tmpsite.yaml").write_text(
        f"root: {root}\ndata_root: {root}/datasets\nmodel_root: {root}/checkpoints\noutput_root: {root}/results\n")
    (site / "experiment" / "tmp_study.yaml").write_text(
        "# @package _global_\n"
        "defaults:\n  - override /model: tiny_qwen3_omni\n  - override /paths: tmpsite\n\n"
        "experiment_name: tmp_study\nbenchmark:\n  limit: 2\n"
        "hydra:\n  sweep:\n    dir: ${paths.output_root}/${experiment_name}\n    subdir: ${run_name}\n"
        "  sweeper:\n    params:\n      method: full_tokens,random\n")
    proc = _run("seats-exp-sweep-list", _sp(site), "experiment=tmp_study", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == f"experiment tmp_study: 2 points, launcher basic, folder {root}/results/tmp_study"
    assert [line.split()[2] for line in lines[1:3]] == [
        "tiny_qwen3_omni.full_tokens.r35.synthetic", "tiny_qwen3_omni.random.r35.synthetic"]
    assert not (root / "results").exists()  # a listing writes nothing

    proc = _run("seats-exp", _sp(site), "experiment=tmp_study", "--cfg", "job", "--resolve", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    job = yaml.safe_load(proc.stdout)
    assert job["model"]["checkpoint"] == f"{root}/checkpoints/tiny_qwen3_omni"
    assert job["benchmark"]["limit"] == 2
    assert job["benchmark"]["tasks"]["synthetic"]["video_root"] == f"{root}/datasets/synthetic"

    # The same preset chosen on the command line, without the experiment: plan mode runs with it.
    proc = _run("seats-exp", _sp(site), "paths=tmpsite", "mode=plan", "method=seats", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "prefill FLOPs" in proc.stdout
