"""Sweeps on a real one-node SLURM cluster brought up on this machine (``launchers/local_slurm.py``):
the smoke sweep through hydra-submitit-launcher (``hydra/launcher=slurm``, one job per point, one job
array), and one point as a 2-task job whose ranks srun starts (data parallel through submitit's
``JobEnvironment``), preempted once and requeued; with job accounting (slurmdbd + MariaDB), a point
cancelled with scancel ends the sweep with that point failed, and a relaunch resumes it.  The daemons
are stopped when the module ends, whatever happened.

Skipped on a machine without SLURM/munge or without root; under ``CI=true`` that is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from conftest import IN_CI, require_tool
from test_sweeps import answers, cli_env, records, results_by_method, run_cli, seats_exp_cmd, wait_for_records

from launchers import local_slurm

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
REPO = Path(__file__).resolve().parent.parent
# Sized for the local node: no GPU request, one CPU per task, no memory request.
LOCAL_NODE = ("hydra/launcher=slurm", f"hydra.launcher.partition={local_slurm.PARTITION}",
              "hydra.launcher.gpus_per_node=null", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=null",
              "hydra.launcher.timeout_min=15", "benchmark.limit=6")
N = 6  # samples per point: enough that a point cancelled after its first sample cannot finish in KillWait


@pytest.fixture(scope="module")
def cluster():
    for tool in local_slurm.REQUIRED_TOOLS:
        require_tool(tool)
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("the local SLURM cluster needs root under CI=true")
        pytest.skip("the local SLURM cluster needs root")
    folder = Path(tempfile.mkdtemp(prefix="seats-exp-slurm-"))
    started = time.monotonic()
    try:
        c = local_slurm.start(folder)
        print(f"\nlocal SLURM up in {time.monotonic() - started:.1f}s")
        yield c
    finally:
        stopped = local_slurm.stop(folder)
        assert not any(local_slurm.status(folder).values()), f"daemons still running after stop ({stopped})"
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def slurm_root(cluster, tmp_path_factory):
    """A paths.root whose synthetic set and tiny checkpoint exist: concurrent jobs then only read them."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from seats_exp.config import validate
    from seats_exp.models.tiny import build_tiny_checkpoint
    from seats_exp.runner import prepare_data

    root = tmp_path_factory.mktemp("slurm_runs")
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=smoke", f"paths.root={root}"], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        rc = validate(cfg, check_data=False)
    prepare_data(rc)
    build_tiny_checkpoint(rc.model.family, rc.model.checkpoint)
    return root


def _array_jobs(sweep_dir: Path) -> list[Path]:
    return sorted(p for p in (sweep_dir / ".submitit").iterdir() if p.is_dir() and re.fullmatch(r"\d+_\d+", p.name))


@pytest.fixture(scope="module")
def slurm_sweep(cluster, slurm_root):
    """The smoke sweep through SLURM (one job array), with point #0 cancelled (scancel) once it has
    recorded a sample: submitit sees the cancellation through sacct and the sweep returns non-zero once
    point #1 is done; then the same sweep is launched again and completes."""
    sweep_dir = slurm_root / "sweep"
    env = cluster.client_env()
    args = ("-m", "experiment=smoke", *LOCAL_NODE, f"hydra.sweep.dir={sweep_dir}")
    started = time.monotonic()
    proc = subprocess.Popen(seats_exp_cmd(slurm_root, *args), cwd=slurm_root, env=cli_env(env), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        samples = wait_for_records(sweep_dir, "*full_tokens*/samples.jsonl", 1, proc)
        cancelled = next(p.name for p in _array_jobs(sweep_dir) if p.name.endswith("_0"))
        subprocess.run(["scancel", cancelled], env={**os.environ, **env}, check=True, timeout=30)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    first_seconds = time.monotonic() - started
    before = records(samples.parent)
    first_jobs = set(_array_jobs(sweep_dir))
    relaunch, seconds = run_cli(slurm_root, *args, env=env, timeout=420)
    assert relaunch.returncode == 0, relaunch.stdout[-3000:] + relaunch.stderr[-4000:]
    print(f"\nsmoke sweep through SLURM (2 jobs, #0 cancelled): returned after {first_seconds:.1f}s; relaunch {seconds:.1f}s")
    return {"dir": sweep_dir, "first": proc, "first_log": out, "cancelled": cancelled, "point": samples.parent,
            "before_cancel": before, "first_jobs": first_jobs, "relaunch_jobs": set(_array_jobs(sweep_dir)) - first_jobs}


def test_sweep_runs_through_submitit_slurm(slurm_sweep):
    runs = results_by_method(slurm_sweep["dir"])
    assert set(runs) == {"full_tokens", "random"}  # both result.json written
    for run_dir in runs.values():
        result = json.loads((run_dir / "result.json").read_text())
        assert result["n_samples"] == N and result["n_errors"] == 0
        # one answered record per sample (a record the cancelled job wrote while being killed, e.g. a
        # decode error, is superseded by the resumed one: the last record of a sample wins)
        assert sorted(r["doc_id"] for r in records(run_dir) if r["answer"] is not None) == list(range(N))
    # one job per point, submitted as one array with the parallelism cap (once per launch)
    scripts = list((slurm_sweep["dir"] / ".submitit").glob("*/*_submission.sh"))
    assert len(scripts) == 2 and all("#SBATCH --array=0-1%" in p.read_text() for p in scripts)
    assert all("#SBATCH --partition=local" in p.read_text() for p in scripts)
    assert len(slurm_sweep["relaunch_jobs"]) == 2
    assert all(list(d.glob("*_result.pkl")) for d in slurm_sweep["relaunch_jobs"])


def _sacct(env: dict, job_id: str) -> dict[str, str]:
    out = subprocess.run(["sacct", "-X", "-n", "-P", "-o", "JobID,State", "-j", job_id], env={**os.environ, **env},
                         capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0, out.stderr
    return dict(line.split("|", 1) for line in out.stdout.split("\n") if line)


def _final_states(env: dict, job_id: str, n_tasks: int = 2, timeout: float = 60) -> dict[str, str]:
    """sacct's states of the array's tasks once every task is recorded and none is running any more (a job
    that wrote its result may still be exiting; the accounting daemon may record a task a moment later)."""
    deadline = time.monotonic() + timeout
    while True:
        states = _sacct(env, job_id)
        final = len(states) == n_tasks and not any(s in ("RUNNING", "PENDING", "COMPLETING") for s in states.values())
        if final or time.monotonic() > deadline:
            return states
        time.sleep(1)


def test_job_accounting_records_the_sweep(cluster, slurm_sweep):
    env = cluster.client_env()
    first = slurm_sweep["cancelled"].split("_")[0]
    assert _final_states(env, first) == {f"{first}_0": "CANCELLED by 0", f"{first}_1": "COMPLETED"}
    (again,) = {d.name.split("_")[0] for d in slurm_sweep["relaunch_jobs"]}
    assert _final_states(env, again) == {f"{again}_0": "COMPLETED", f"{again}_1": "COMPLETED"}


def test_cancelled_point_fails_the_sweep_and_relaunch_resumes_it(slurm_sweep):
    out = slurm_sweep["first_log"]
    assert slurm_sweep["first"].returncode != 0, out[-4000:]
    assert "1 of 2 points failed (#0)" in out and "CANCELLED" in out, out[-4000:]
    before = slurm_sweep["before_cancel"]
    answered = {r["doc_id"] for r in before if r["answer"] is not None}
    assert 1 <= len(answered) < N, f"cancel came too late: {before}"
    logs = {d.name[-1]: "".join(p.read_text() for p in d.glob("*_log.*")) for d in slurm_sweep["relaunch_jobs"]}
    assert f"resuming: {len(answered)} samples already recorded" in logs["0"]  # the cancelled point, resumed
    assert "no model work" in logs["1"]  # the point that had finished
    recs = records(slurm_sweep["point"])
    assert recs[:len(before)] == before  # kept as they were
    resumed = [r["doc_id"] for r in recs[len(before):]]
    assert sorted(resumed) == sorted(set(range(N)) - answered)  # only the samples without an answer were generated
    assert json.loads((slurm_sweep["point"] / "result.json").read_text())["attempts"] == 2


def test_failed_points_fail_their_slurm_jobs(cluster, slurm_root):
    """A point that raises fails its job: SLURM (sacct) reports FAILED, not COMPLETED; the sweep names both."""
    sweep_dir = slurm_root / "failing"
    for method in ("full_tokens", "random"):  # each folder holds another configuration: both points refuse at once
        folder = sweep_dir / f"tiny_qwen2_5_omni.{method}.r35.synthetic"
        folder.mkdir(parents=True)
        (folder / "config.yaml").write_text("seed: 99\n")
        (folder / "samples.jsonl").write_text(json.dumps({"task": "t", "doc_id": 0, "answer": "A"}) + "\n")
    proc, _ = run_cli(slurm_root, "-m", "experiment=smoke", *LOCAL_NODE, f"hydra.sweep.dir={sweep_dir}",
                      env=cluster.client_env(), timeout=300)
    assert proc.returncode != 0 and "2 of 2 points failed (#0, #1)" in proc.stderr + proc.stdout
    (array_id,) = {d.name.split("_")[0] for d in _array_jobs(sweep_dir)}
    assert _final_states(cluster.client_env(), array_id) == {f"{array_id}_0": "FAILED", f"{array_id}_1": "FAILED"}


def _squeue(env: dict, *args: str) -> str:
    return subprocess.run(["squeue", "-h", *args], env={**os.environ, **env}, capture_output=True, text=True,
                          timeout=30, check=False).stdout.strip()


def test_two_task_job_preempted_resumes_and_matches_one_task(cluster, slurm_root, slurm_sweep):
    """One point as a job with 2 tasks: srun starts 2 ranks, each generates its half of the samples.
    The job is preempted (SIGUSR2, as SLURM sends it) after the first sample: the launcher's
    checkpoint requeues it, the requeued job resumes from the recorded samples, rank 0 scores."""
    dp_dir = slurm_root / "dp"
    env = cluster.client_env()
    started = time.monotonic()
    proc = subprocess.Popen(
        seats_exp_cmd(slurm_root, "-m", "experiment=smoke", "method=full_tokens", *LOCAL_NODE,
                      "hydra.launcher.tasks_per_node=2", f"hydra.sweep.dir={dp_dir}"),
        cwd=slurm_root, env=cli_env(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)
    try:
        wait_for_records(dp_dir, "*/samples.rank0.jsonl", 1, proc)
        (job_dir,) = [p for p in (dp_dir / ".submitit").iterdir() if p.is_dir()]  # one point: a plain job
        job_id = job_dir.name
        subprocess.run(["scancel", "--signal=USR2", job_id], env={**os.environ, **env}, check=True, timeout=30)
        # SLURM holds a requeued job for a while (BeginTime); release it now.
        deadline = time.monotonic() + 60
        while _squeue(env, "-j", job_id, "-o", "%T") != "PENDING" and time.monotonic() < deadline:
            time.sleep(0.2)
        subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now"], env={**os.environ, **env},
                       check=True, timeout=30)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, out[-5000:]
    print(f"\n2-task data-parallel job through SLURM, preempted and requeued once: {time.monotonic() - started:.1f}s")

    logs = "".join(p.read_text() for p in job_dir.glob("*_log.*"))
    assert "Calling checkpoint method" in logs and f"Requeued job {job_id}" in logs
    assert "data parallel: rank 0 of 2 (submitit" in logs and "data parallel: rank 1 of 2 (submitit" in logs
    assert "samples already recorded, not generated again" in logs

    (run_dir,) = results_by_method(dp_dir).values()
    result = json.loads((run_dir / "result.json").read_text())
    assert result["world_size"] == 2 and result["n_samples"] == N
    recs = records(run_dir)
    assert sorted(r["doc_id"] for r in recs) == list(range(N))  # none generated twice across the requeue
    assert all(r["rank"] == r["doc_id"] % 2 for r in recs)
    assert answers(run_dir) == answers(results_by_method(slurm_sweep["dir"])["full_tokens"])

