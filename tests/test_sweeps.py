"""Sweeps at scale, without a cluster: experiment grids and their dry listing, stable run folders,
skipping finished points, resuming a killed run, and data parallel ranks.

The end-to-end tests run the real ``seats-exp`` command on the tiny random Qwen2.5-Omni and the
synthetic set (``experiment=smoke``: 3 samples, 4 new tokens).  One module-level sweep (both smoke
points, Hydra's basic launcher), killed once mid-way and launched again, is also the 1-task
reference the data-parallel run is compared with.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launchers import resume
from seats_exp import distributed

REPO = Path(__file__).resolve().parent.parent
SEATS_EXP = Path(sys.executable).with_name("seats-exp")
SCHEDULES = ["r35", "r25", "r15", "r10"]
# The published (method, R) cells of baselines-reference 9.1 / 9.2, per method that exists here
# (a method added later adds its own entry, and its cell files under conf/paper_cell/<model>/).
PAPER_CELLS = {
    "qwen2_5_omni_7b": {
        "random": SCHEDULES, "seats": SCHEDULES, "visionzip_omni": SCHEDULES,
        "fastv_omni": ["r35", "r25", "r15"], "fastv": ["r35", "r25"], "visionzip": ["r35", "r25"],
        "divprune_omni": SCHEDULES, "divprune": ["r35", "r25"], "dycoke": ["r35"],
    },
    "qwen3_omni_30b_a3b": {
        "random": SCHEDULES, "seats": SCHEDULES, "visionzip_omni": SCHEDULES,
        "fastv_omni": ["r35", "r25", "r15"], "fastv": ["r35", "r25"], "visionzip": ["r35", "r25", "r15"],
        "divprune_omni": SCHEDULES, "divprune": ["r35", "r25", "r15"], "dycoke": ["r35"],
    },
}
# Upstream's Qwen3 VisionZip script writes audio-intact into the pair (seats-reference 12.4).
PAPER_PAIRS = {("qwen3_omni_30b_a3b", "visionzip", "r35"): (0.29, 1.0), ("qwen3_omni_30b_a3b", "visionzip", "r25"): (0.18, 1.0),
               ("qwen3_omni_30b_a3b", "visionzip", "r15"): (0.08, 1.0)}
SCHEDULE_PAIRS = {"qwen2_5_omni": {"r35": (0.30, 0.65), "r25": (0.20, 0.55), "r15": (0.10, 0.45), "r10": (0.06, 0.35)},
                  "qwen3_omni": {"r35": (0.32, 0.70), "r25": (0.22, 0.60), "r15": (0.12, 0.50), "r10": (0.07, 0.45)}}
BENCHMARKS = ["dailyomni", "worldsense", "omnivideobench", "videomme", "lvomnibench"]
SMOKE_SAMPLES = 3


# -- helpers --------------------------------------------------------------------------------------------

def cli_env(extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "SLURM_", "SUBMITIT_"))}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    env.update(extra or {})
    return env


def seats_exp_cmd(root: Path, *args: str) -> list[str]:
    return [str(SEATS_EXP), *args, f"paths.root={root}", "eval.progress=false"]


def run_cli(root: Path, *args: str, env: dict | None = None, timeout: int = 300) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    proc = subprocess.run(seats_exp_cmd(root, *args), cwd=root, env=cli_env(env), capture_output=True, text=True,
                          timeout=timeout, check=False)
    return proc, time.monotonic() - started


def records_of(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out


def records(run_dir: Path) -> list[dict]:
    """The complete records of a run folder's samples.jsonl (a line cut short by a kill is not one)."""
    return records_of(run_dir / "samples.jsonl")


def answers(run_dir: Path) -> dict[tuple[str, int], str]:
    return {(r["task"], r["doc_id"]): r["answer"] for r in records(run_dir)}


def results_by_method(sweep_dir: Path) -> dict[str, Path]:
    return {json.loads(p.read_text())["method"]: p.parent for p in sweep_dir.glob("*/result.json")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- experiment grids and listing (compose only) ------------------------------------------------------

def test_experiment_files_are_global_and_named():
    for path in sorted((REPO / "conf" / "experiment").glob("*.yaml")):
        text = path.read_text()
        assert text.startswith("# @package _global_"), path.name
        assert "\nexperiment_name: " in text, path.name


@pytest.mark.parametrize("model", sorted(PAPER_CELLS))
def test_paper_grid_is_the_published_table(model, tmp_path):
    """experiment=paper_<model> crosses exactly the published cells (one file each under
    conf/paper_cell/<model>/, named <method>_<schedule>) with the five benchmarks."""
    from launchers.list_points import expand

    from methods import available

    name = f"paper_{model}"
    _, grid = expand([f"experiment={name}", f"paths.root={tmp_path}"], compose_points=False)
    cell_key = f"+paper_cell/{model}"
    got = []
    for p in grid:
        swept = dict(o.split("=", 1) for o in p.swept)
        assert set(swept) == {cell_key, "benchmark"}, p.swept
        got.append((swept[cell_key], swept["benchmark"]))
    assert len(set(got)) == len(got)
    expected = {(f"{m}_{s}", b) for m, schedules in PAPER_CELLS[model].items() for s in schedules for b in BENCHMARKS}
    assert {cell for cell in got if cell[0].rsplit("_", 1)[0] in PAPER_CELLS[model]} == expected
    assert {cell.rsplit("_", 1)[0] for cell, _ in got} <= set(available())  # later methods: registered ones only

    # one row, as the experiment file documents it, composed like the launcher composes it
    info, row = expand([f"experiment={name}", f"paths.root={tmp_path}", f"{cell_key}=glob(visionzip_r*)",
                        "benchmark=worldsense"])
    assert info["experiment"] == name
    assert sorted(p.run_name for p in row) == sorted(f"{model}.visionzip.{s}.worldsense" for s in PAPER_CELLS[model]["visionzip"])
    assert all(p.problem is None and p.state == "new" for p in row), [p.problem for p in row]
    assert len({p.folder for p in row}) == len(row)


@pytest.mark.parametrize("model", sorted(PAPER_CELLS))
def test_paper_cells_set_method_schedule_and_pair(model, tmp_path):
    from hydra import compose, initialize_config_dir

    from seats_exp.config import validate

    family = "qwen3_omni" if model.startswith("qwen3") else "qwen2_5_omni"
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        for method, schedules in PAPER_CELLS[model].items():
            for schedule in schedules:
                cfg = compose("config", overrides=[f"experiment=paper_{model}", f"+paper_cell/{model}={method}_{schedule}",
                                                   "benchmark=worldsense", f"paths.root={tmp_path}"])
                rc = validate(cfg, check_data=False)
                pair = PAPER_PAIRS.get((model, method, schedule), SCHEDULE_PAIRS[family][schedule])
                assert (rc.model.name, rc.method.name, rc.schedule.name) == (model, method, schedule)
                assert (rc.schedule.video, rc.schedule.audio) == pair


@pytest.mark.parametrize("name, model", [("paper_qwen2_5_omni_7b_full", "qwen2_5_omni_7b"),
                                         ("paper_qwen3_omni_30b_a3b_full", "qwen3_omni_30b_a3b")])
def test_paper_full_token_row(name, model, tmp_path):
    from launchers.list_points import expand

    _, grid = expand([f"experiment={name}", f"paths.root={tmp_path}"], compose_points=False)
    assert sorted(o.split("=", 1)[1] for p in grid for o in p.swept) == sorted(BENCHMARKS)
    info, row = expand([f"experiment={name}", f"paths.root={tmp_path}", "benchmark=worldsense"])
    assert info["experiment"] == name.removesuffix("_full")  # the _full row belongs to the same study
    assert [p.run_name for p in row] == [f"{model}.full_tokens.full.worldsense"]
    assert all(p.problem is None and p.state == "new" for p in row)


def test_experiment_folders_are_stable(tmp_path):
    """No timestamp in a sweep point's folder: a relaunch finds it again.  Needs the experiment to
    override conf/config.yaml's hydra.sweep (experiment listed after _self_ in its defaults)."""
    from launchers.list_points import expand

    for name, extra in (("smoke", []), ("paper_qwen2_5_omni_7b", ["+paper_cell/qwen2_5_omni_7b=glob(seats_*)"]),
                        ("paper_qwen2_5_omni_7b_full", [])):
        info, points = expand([f"experiment={name}", f"paths.root={tmp_path}", *extra])
        assert points
        study = info["experiment"]
        for p in points:
            assert p.folder == tmp_path / "outputs" / "experiments" / study / p.run_name


def test_wandb_organisation_from_config(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from seats_exp.config import validate

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["experiment=paper_qwen2_5_omni_7b", "method=seats", "schedule=r10",
                                           "benchmark=worldsense", f"paths.root={tmp_path}"], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        rc = validate(cfg, check_data=False)
    lg = rc.logger
    assert (lg.name, lg.project, lg.group, lg.job_type) == ("wandb", "seats-exp", "paper_qwen2_5_omni_7b", "seats")
    assert {"model=qwen2_5_omni_7b", "schedule=r10", "benchmark=worldsense"} <= set(lg.tags)
    assert lg.run_name == rc.run_name == "qwen2_5_omni_7b.seats.r10.worldsense"
    assert lg.mode == "auto"  # offline without an API key; the sync command is in conf/logger/wandb.yaml
    assert "wandb sync" in (REPO / "conf" / "logger" / "wandb.yaml").read_text()


def test_launcher_presets_compose(tmp_path):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        for preset, target in [("local", "BasicLauncher"), ("local_submitit", "LocalLauncher"), ("slurm", "SlurmLauncher")]:
            cfg = compose("config", overrides=["experiment=smoke", f"hydra/launcher={preset}"], return_hydra_config=True)
            assert cfg.hydra.launcher._target_.endswith(target)
        slurm = compose("config", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                                             "hydra.launcher.account=proj", "hydra.launcher.qos=high",
                                             "hydra.launcher.tasks_per_node=4", "hydra.launcher.gpus_per_node=4",
                                             "+hydra.launcher.additional_parameters.reservation=r1"],
                        return_hydra_config=True).hydra.launcher
    assert (slurm.partition, slurm.account, slurm.qos, slurm.tasks_per_node, slurm.gpus_per_node) == ("gpu", "proj", "high", 4, 4)
    assert slurm.max_num_timeout > 0 and slurm.array_parallelism > 0 and slurm.additional_parameters.reservation == "r1"


# -- resume bookkeeping and rank plumbing (no model) -------------------------------------------------

def _folder(tmp_path: Path, config: str, samples: list[dict] | None = None, result: bool = False) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "config.yaml").write_text(config)
    if samples is not None:
        (tmp_path / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    if result:
        (tmp_path / "result.json").write_text(json.dumps({"accuracy": 50.0}))
    return tmp_path


def test_folder_states(tmp_path):
    cfg = "seed: 0\nmethod: {name: seats}\neval: {progress: true}\nlogger: {name: none}\n"
    same = "seed: 0\nmethod: {name: seats}\neval: {progress: false}\nlogger: {name: wandb}\n"  # ignored keys only
    other = "seed: 1\nmethod: {name: seats}\neval: {progress: true}\nlogger: {name: none}\n"
    assert resume.folder_state(tmp_path / "absent", cfg).state == "new"
    assert resume.folder_state(_folder(tmp_path / "a", cfg), cfg).state == "new"  # config.yaml alone: nothing to reuse
    partial = _folder(tmp_path / "b", cfg, [{"task": "t", "doc_id": 0, "answer": "A"}, {"task": "t", "doc_id": 1, "answer": None}])
    assert (resume.folder_state(partial, same).state, resume.folder_state(partial, same).n_samples) == ("partial", 1)
    done = _folder(tmp_path / "c", cfg, [], result=True)
    assert resume.finished_result(done, same) == {"accuracy": 50.0}
    conflict = resume.folder_state(done, other)
    assert conflict.state == "conflict" and conflict.differing == ["seed"]
    with pytest.raises(resume.RunFolderConflict, match="differs at: seed"):
        resume.finished_result(done, other)


def test_detect_ranks_from_slurm_env():
    slurm = {"SLURM_JOB_ID": "77", "SLURM_STEP_ID": "0", "SLURM_PROCID": "1", "SLURM_LOCALID": "1",
             "SLURM_STEP_NUM_TASKS": "2", "SLURM_NTASKS": "2", "SLURM_JOB_NODELIST": "gpu[07-09,12]"}
    env = distributed.detect(slurm)
    assert (env.rank, env.world_size, env.local_rank, env.master_addr, env.source) == (1, 2, 1, "gpu07", "slurm")
    assert env.master_port == distributed.detect({**slurm, "SLURM_PROCID": "0"}).master_port  # ranks agree
    assert distributed.detect({**slurm, "MASTER_ADDR": "h", "MASTER_PORT": "1234"}).master_addr == "h"
    batch_script = {k: v for k, v in slurm.items() if k != "SLURM_STEP_ID"}  # sbatch without srun: one process
    assert not distributed.detect(batch_script).enabled
    assert distributed.detect({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "3"}).source == "torchrun"
    assert not distributed.detect({}).enabled
    assert distributed.first_host("a1,b[2-3]") == "a1" and distributed.first_host("n[3-4]-ib") == "n3-ib"


def test_merge_rank_samples(tmp_path):
    (tmp_path / "samples.jsonl").write_text(json.dumps({"task": "t", "doc_id": 2, "answer": "old"}) + "\n")
    sink0, sink1 = distributed.rank_sink(tmp_path, 0), distributed.rank_sink(tmp_path, 1)
    sink0({"task": "t", "doc_id": 0, "answer": "A"})
    sink1({"task": "t", "doc_id": 1, "answer": "B"})
    sink0({"task": "t", "doc_id": 2, "answer": "new"})
    (tmp_path / "samples.rank1.jsonl").open("a").write('{"task": "t", "doc_')  # cut by a kill
    assert len(list(distributed.iter_run_samples(tmp_path))) == 4
    assert distributed.merge_rank_samples(tmp_path) == 3
    assert not list(tmp_path.glob("samples.rank*.jsonl"))
    merged = records(tmp_path)
    assert [(r["doc_id"], r["answer"], r.get("rank")) for r in merged] == [(0, "A", 0), (1, "B", 1), (2, "new", 0)]


# -- end to end on the tiny model ----------------------------------------------------------------------

def wait_for_records(pattern_dir: Path, pattern: str, n: int, proc: subprocess.Popen, timeout: float = 240) -> Path:
    """Poll until a file matching ``pattern`` under ``pattern_dir`` holds ``n`` complete records."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        for path in pattern_dir.glob(pattern):
            if len(records_of(path)) >= n:
                return path
        time.sleep(0.1)
    raise AssertionError(f"no {pattern} with {n} records under {pattern_dir} (process exit code {proc.poll()})")


@pytest.fixture(scope="module")
def smoke_sweep(tmp_path_factory):
    """`seats-exp -m experiment=smoke` (basic launcher: both points in one process, one after the
    other), killed with SIGKILL once the first point has recorded a sample, then launched again."""
    root = tmp_path_factory.mktemp("sweeps")
    sweep_dir = root / "outputs" / "experiments" / "smoke"
    args = ("-m", "experiment=smoke", f"hydra.sweep.dir={sweep_dir}")
    started = time.monotonic()
    proc = subprocess.Popen(seats_exp_cmd(root, *args), cwd=root, env=cli_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        killed_file = wait_for_records(sweep_dir, "*full_tokens*/samples.jsonl", 1, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole session: no process of the run survives
        proc.wait()
    killed_after = time.monotonic() - started
    before_kill = records_of(killed_file)

    relaunch, seconds = run_cli(root, *args)
    assert relaunch.returncode == 0, relaunch.stderr[-4000:]
    print(f"\nsmoke sweep: killed after {killed_after:.1f}s ({len(before_kill)} sample(s) recorded), "
          f"relaunch ran both points in {seconds:.1f}s")
    return {"root": root, "sweep_dir": sweep_dir, "args": args, "seconds": seconds,
            "before_kill": before_kill, "killed_dir": killed_file.parent, "log": relaunch.stdout + relaunch.stderr}


@pytest.mark.slow
def test_sweep_runs_both_points(smoke_sweep):
    from launchers.list_points import expand

    runs = results_by_method(smoke_sweep["sweep_dir"])
    assert set(runs) == {"full_tokens", "random"}
    for run_dir in runs.values():
        result = json.loads((run_dir / "result.json").read_text())
        assert result["n_samples"] == SMOKE_SAMPLES and result["n_errors"] == 0 and result["world_size"] == 1
        assert sorted(d for _, d in answers(run_dir)) == list(range(SMOKE_SAMPLES))
    _, points = expand([*smoke_sweep["args"][1:], f"paths.root={smoke_sweep['root']}", "eval.progress=false"])
    assert [p.state for p in points] == ["done", "done"]


@pytest.mark.slow
def test_killed_point_resumes_without_recomputing(smoke_sweep):
    first = smoke_sweep["before_kill"]
    assert 1 <= len(first) < SMOKE_SAMPLES, f"kill came too late: {len(first)} samples"
    assert f"resuming: {len(first)} samples already recorded" in smoke_sweep["log"]
    recs = records(smoke_sweep["killed_dir"])
    assert recs[:len(first)] == first  # kept as they were
    assert sorted(r["doc_id"] for r in recs) == list(range(SMOKE_SAMPLES))  # each sample computed exactly once
    assert json.loads((smoke_sweep["killed_dir"] / "result.json").read_text())["n_samples"] == SMOKE_SAMPLES


@pytest.mark.slow
def test_relaunching_a_finished_sweep_does_no_model_work(smoke_sweep):
    runs = results_by_method(smoke_sweep["sweep_dir"])
    before = {m: ((d / "samples.jsonl").read_bytes(), (d / "result.json").stat().st_mtime_ns) for m, d in runs.items()}
    proc, seconds = run_cli(smoke_sweep["root"], *smoke_sweep["args"])
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = proc.stdout + proc.stderr
    assert log.count("no model work") == 2
    assert "loaded qwen2_5_omni Thinker" not in log and "resuming" not in log
    after = {m: ((d / "samples.jsonl").read_bytes(), (d / "result.json").stat().st_mtime_ns) for m, d in runs.items()}
    assert after == before  # no new sample, result untouched
    print(f"\nrelaunch of the finished sweep: {seconds:.1f}s (running it: {smoke_sweep['seconds']:.1f}s)")
    assert seconds < smoke_sweep["seconds"]


@pytest.mark.slow
def test_two_ranks_match_one(smoke_sweep):
    """2 data-parallel ranks (local processes with the variables srun sets) give the 1-task predictions."""
    root = smoke_sweep["root"]
    run_dir = root / "dp2"
    port = str(free_port())
    procs = []
    started = time.monotonic()
    for rank in range(2):
        env = {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank),
               "SLURM_NTASKS": "2", "SLURM_STEP_NUM_TASKS": "2", "SLURM_JOB_NODELIST": "localhost",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        procs.append(subprocess.Popen(
            seats_exp_cmd(root, "experiment=smoke", "method=random", f"hydra.run.dir={run_dir}"), cwd=root,
            env=cli_env(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True))
    try:
        logs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    print(f"\n2 data-parallel ranks: {time.monotonic() - started:.1f}s")
    assert [p.returncode for p in procs] == [0, 0], "\n".join(log[-3000:] for log in logs)
    for rank, log in enumerate(logs):
        assert f"data parallel: rank {rank} of 2" in log

    single = results_by_method(smoke_sweep["sweep_dir"])["random"]
    assert answers(run_dir) == answers(single)
    recs = records(run_dir)
    assert sorted(r["doc_id"] for r in recs) == list(range(SMOKE_SAMPLES))
    assert all(r["rank"] == r["doc_id"] % 2 for r in recs)  # each rank generated its own shard only
    assert not list(run_dir.glob("samples.rank*.jsonl")) and not (run_dir / ".tasks.rank1").exists()
    dp, one = (json.loads((d / "result.json").read_text()) for d in (run_dir, single))
    assert dp["world_size"] == 2
    assert (dp["accuracy"], dp["n_samples"], dp["n_errors"]) == (one["accuracy"], one["n_samples"], one["n_errors"])
    assert dp["cost"]["prefill_tflops"] == pytest.approx(one["cost"]["prefill_tflops"])


# -- sweeps that never lose or mix a point (issue 13) ------------------------------------------------------

def _compose_yaml(*overrides: str) -> str:
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        task_cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        return OmegaConf.to_yaml(task_cfg, resolve=True)


def test_colliding_points_refused_before_launch(tmp_path):
    """Two points whose folder name does not carry the swept key: one line naming the key, exit 2,
    nothing launched (no sweep folder, no data, no model)."""
    proc, seconds = run_cli(tmp_path, "-m", "experiment=smoke", "method=seats", "method.temperature=0.1,0.5",
                            timeout=120)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    (line,) = [x for x in proc.stderr.splitlines() if "refusing to launch" in x]
    assert "points #0, #1 would share the folder" in line and "differ in method.temperature" in line
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "data").exists()
    # naming the key in the folder lets the same sweep through (listing only: nothing runs)
    from launchers.list_points import expand

    _, points = expand(["experiment=smoke", "method=seats", "method.temperature=0.1,0.5", f"paths.root={tmp_path}",
                        "hydra.sweep.subdir=${run_name}.temperature_${method.temperature}"])
    assert len({p.folder for p in points}) == 2 and all(p.problem is None for p in points)


def test_point_identity_is_what_changes_the_result(tmp_path):
    """Relaunched from another folder with every root pinned, or with another plan.*: the same point.
    Model, method, data, eval, engine, seed: another point."""
    pins = [f"paths.data_root={tmp_path}/data", f"paths.model_root={tmp_path}/models",
            f"paths.output_root={tmp_path}/out", "experiment=smoke"]
    stored = _compose_yaml(f"paths.root={tmp_path}/here", *pins)
    folder = _folder(tmp_path / "point", stored, [{"task": "t", "doc_id": 0, "answer": "A"}])
    elsewhere = _compose_yaml(f"paths.root={tmp_path}/elsewhere", "plan.video_seconds=8", "plan.json=true",
                              "experiment_name=other", *pins)
    assert resume.folder_state(folder, elsewhere).state == "partial"
    for change, key in [("seed=1", "seed"), ("benchmark.limit=2", "benchmark.limit"),
                        ("engine.kv_scope=after_drop_only", "engine.kv_scope"),
                        ("eval.max_new_tokens_override=2", "eval.max_new_tokens_override"),
                        (f"paths.model_root={tmp_path}/other_models", "model.checkpoint"),
                        (f"paths.data_root={tmp_path}/other_data", "benchmark.tasks.synthetic.annotations")]:
        other = _compose_yaml(f"paths.root={tmp_path}/here", *pins, change)
        state = resume.folder_state(folder, other)
        assert state.state == "conflict" and key in state.differing, (change, state)


def test_store_repairs_a_partial_last_line(tmp_path):
    from seats_exp.store import RunStore, iter_jsonl

    first = {"task": "t", "doc_id": 0, "answer": "A"}
    (tmp_path / "samples.jsonl").write_text(json.dumps(first) + "\n" + '{"task": "t", "doc_id": 1, "ans')  # kill mid-write
    store = RunStore(tmp_path)
    store.append_sample({"task": "t", "doc_id": 1, "answer": "B"})
    store.append_sample({"task": "t", "doc_id": 2, "answer": "C"})
    assert [r["doc_id"] for r in iter_jsonl(tmp_path / "samples.jsonl")] == [0, 1, 2]
    assert (tmp_path / "samples.jsonl").read_text().startswith(json.dumps(first) + "\n{")
    # the same through a rank file (data parallel)
    (tmp_path / "samples.rank1.jsonl").write_text('{"task": "t", "doc_id": 3, "an')
    distributed.rank_sink(tmp_path, 1)({"task": "t", "doc_id": 3, "answer": "D"})
    assert [r["doc_id"] for r in iter_jsonl(tmp_path / "samples.rank1.jsonl")] == [3]


def test_sweep_list_conflicts_exit_nonzero(tmp_path, capsys):
    from launchers.list_points import main

    args = ["experiment=smoke", f"paths.root={tmp_path}", "eval.progress=false"]
    _, points = __import__("launchers.list_points", fromlist=["expand"]).expand(args)
    other = _compose_yaml(*args, "method=random", "seed=7")
    _folder(points[1].folder, other, [{"task": "t", "doc_id": 0, "answer": "A"}])
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "0 done, 1 to run, 1 in conflict" in out
    assert f"  #1 {points[1].folder}: differs at seed" in out
    assert main(args + ["seed=7"]) == 0 and "partial (1 samples)" in capsys.readouterr().out  # its own config
    assert main(args + ["hydra.sweep.dir=" + str(tmp_path / "elsewhere")]) == 0


def _start_together(code: str, n: int, tmp_path: Path, stagger: float = 0.0) -> list[subprocess.Popen]:
    """Start ``code`` in ``n`` processes that begin together (each waits for a go file), the i-th
    ``i * stagger`` seconds after the go: later ones arrive while the first is still creating."""
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = []
    for i in range(n):
        script = (f"import time, pathlib\nwhile not pathlib.Path({str(go)!r}).exists(): time.sleep(0.005)\n"
                  f"time.sleep({i * stagger})\n{code}")
        procs.append(subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    time.sleep(1.0)  # every interpreter up and polling
    go.touch()
    return procs


def _finish(procs: list[subprocess.Popen], timeout: int = 240) -> list[subprocess.CompletedProcess]:
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=timeout)
        outs.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return outs


def test_first_use_of_the_synthetic_set_is_safe_under_concurrency(tmp_path):
    root = tmp_path / "data" / "synthetic"
    code = ("from evaluation.synthetic import ensure\n"
            f"print(ensure({str(root)!r}, num_clips=3, seconds=1.0, fps=4, width=32, height=32))")
    outs = _finish(_start_together(code, 4, tmp_path, stagger=0.1))
    assert [o.returncode for o in outs] == [0] * 4, [o.stderr[-800:] for o in outs if o.returncode]
    from evaluation.synthetic import video_path

    qa = json.loads((root / "qa.json").read_text())
    assert len(qa) == 3 and all(video_path(root, q["video_id"]).is_file() for q in qa)
    assert sorted(p.name for p in root.parent.iterdir() if p.name != ".synthetic.lock") == ["synthetic"]


def test_tiny_checkpoint_first_use_is_safe_and_appears_whole(tmp_path):
    """Two processes build the same tiny checkpoint at once: both return it complete, and a reader
    polling for the folder sees it only once it is whole (written aside under a lock, renamed)."""
    from seats_exp.models.tiny import STAMP

    out = tmp_path / "models" / "tiny"
    procs = _start_together("from seats_exp.models.tiny import build_tiny_checkpoint\n"
                            "from transformers import AutoConfig\n"
                            f"AutoConfig.from_pretrained(build_tiny_checkpoint('qwen2_5_omni', {str(out)!r}))", 2, tmp_path)
    seen = None
    deadline = time.monotonic() + 240
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        if out.exists():
            seen = sorted(p.name for p in out.iterdir())
            break
        time.sleep(0.002)
    outs = _finish(procs)
    assert [o.returncode for o in outs] == [0, 0], [o.stderr[-800:] for o in outs if o.returncode]
    assert seen is not None and STAMP in seen and "model.safetensors" in seen, seen
    assert sorted(p.name for p in out.parent.iterdir()) == [".tiny.lock", "tiny"]


@pytest.mark.slow
def test_wall_time_is_summed_over_attempts(smoke_sweep):
    killed = smoke_sweep["killed_dir"]
    attempts = json.loads((killed / "attempts.json").read_text())
    assert len(attempts) == 2 and all(a["wall_time_s"] > 0 for a in attempts)  # the killed one counted to its last sample
    result = json.loads((killed / "result.json").read_text())
    assert result["attempts"] == 2 and result["wall_time_s"] == pytest.approx(sum(a["wall_time_s"] for a in attempts))
    other = next(d for d in results_by_method(smoke_sweep["sweep_dir"]).values() if d != killed)
    assert json.loads((other / "result.json").read_text())["attempts"] == 1


@pytest.mark.slow
def test_resume_after_a_partial_last_line_loses_no_sample(smoke_sweep):
    """A kill while a line was being written: the relaunch drops the fragment before appending, so every
    sample ends with a parseable record and the cost is averaged over all of them."""
    import shutil

    root = smoke_sweep["root"]
    src = results_by_method(smoke_sweep["sweep_dir"])["random"]
    dst = root / "partial_line"
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("tasks", "result.json", "scores.jsonl", "attempts.json"))
    lines = (dst / "samples.jsonl").read_text().splitlines(keepends=True)
    (dst / "samples.jsonl").write_text(lines[0] + lines[1][: len(lines[1]) // 2])
    proc, _ = run_cli(root, "experiment=smoke", "method=random", f"hydra.run.dir={dst}")
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "resuming: 1 samples already recorded" in log and "dropped a partial last line" in log
    assert sorted(r["doc_id"] for r in records(dst)) == list(range(SMOKE_SAMPLES))
    assert len((dst / "samples.jsonl").read_text().splitlines()) == SMOKE_SAMPLES  # no glued line left
    assert answers(dst) == answers(src)
    new, old = (json.loads((d / "result.json").read_text()) for d in (dst, src))
    assert new["n_samples"] == SMOKE_SAMPLES and new["cost"]["prefill_tflops"] == pytest.approx(old["cost"]["prefill_tflops"])


@pytest.mark.slow
def test_failed_points_fail_their_jobs_and_the_sweep_settles_every_point(smoke_sweep):
    """submitit (local executor): both points fail at once (their folders hold another configuration):
    each job ends in error (not "success" with a failed JobReturn inside), the sweep waits for both and
    exits non-zero naming both."""
    from submitit.core.utils import pickle_load

    from launchers.list_points import expand

    root = smoke_sweep["root"]
    sweep_dir = root / "submitit_fail"
    _, points = expand(["experiment=smoke", f"paths.root={root}", f"hydra.sweep.dir={sweep_dir}"])
    for p in points:
        _folder(p.folder, "seed: 99\n", [{"task": "t", "doc_id": 0, "answer": "A"}])
    proc, _ = run_cli(root, "-m", "experiment=smoke", "hydra/launcher=local_submitit", f"hydra.sweep.dir={sweep_dir}")
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0, log[-3000:]
    assert "2 of 2 points failed (#0, #1)" in log and "relaunch the same sweep" in log
    assert "point #0 (job" in log and "point #1 (job" in log and "RunFolderConflict" in log
    outcomes = [pickle_load(pkl) for pkl in (sweep_dir / ".submitit").glob("*/*_result.pkl")]
    assert [o for o, _ in outcomes] == ["error", "error"]
    assert all("RunFolderConflict" in str(value) for _, value in outcomes)


@pytest.mark.slow
def test_finished_unlogged_point_is_logged_from_its_files(smoke_sweep, tmp_path):
    """A finished point never logged to W&B (logger=none, or W&B failed at the end): relaunching with
    logger=wandb logs it from result.json/samples.jsonl/scores.jsonl without model work, once."""
    import shutil

    from seats_exp.wandb_reader import find_offline_runs, read_offline_run, read_table

    root = smoke_sweep["root"]
    src = results_by_method(smoke_sweep["sweep_dir"])["full_tokens"]
    dst = root / "unlogged"
    shutil.copytree(src, dst)
    assert not (dst / "logged.json").exists()
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "HOME": str(tmp_path)}
    args = ("experiment=smoke", "method=full_tokens", f"hydra.run.dir={dst}", "logger=wandb")
    proc, _ = run_cli(root, *args, env=env)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "not logged to W&B yet: logging it from its result files (no model work)" in log
    assert "loaded qwen2_5_omni Thinker" not in log
    (run_dir,) = find_offline_runs(dst / "wandb")
    assert json.loads((dst / "logged.json").read_text())["mode"] == "offline"

    run = read_offline_run(run_dir)
    result = json.loads((dst / "result.json").read_text())
    config = run["config"]
    assert config["experiment_name"] == "smoke" and config["git_commit"] == result["git_commit"]
    assert config["benchmark"]["limit"] == config["benchmark_limit"] == SMOKE_SAMPLES and config["sample_ids"] is None
    assert config["generation"]["synthetic"]["max_new_tokens"] == 4
    assert config["generation"]["synthetic"] == config["benchmark"]["tasks"]["synthetic"]["generation"]
    assert config["ratios"] == result["ratios"] and config["model"]["name"] == "tiny_qwen2_5_omni"
    assert config["engine"]["kv_scope"] == result["kv_scope"] and config["seed"] == 0
    table = read_table(run_dir, run["summary"]["samples"])
    rows = [dict(zip(table["columns"], row)) for row in table["data"]]
    scores = {s["sample_id"]: s for s in map(json.loads, (dst / "scores.jsonl").read_text().splitlines())}
    assert len(rows) == SMOKE_SAMPLES and len(scores) == SMOKE_SAMPLES
    for row in rows:
        s = scores[row["sample_id"]]
        assert (row["gold"], row["prediction"], row["score"], row["category"]) == (
            s["gold"], s["prediction"], s["score"], s["video_category"])
        assert row["gold"] in "ABCD" and row["score"] in (0, 1) and row["category"]

    again, _ = run_cli(root, *args, env=env)
    assert again.returncode == 0 and "already logged to W&B (offline)" in again.stdout + again.stderr
    assert len(find_offline_runs(dst / "wandb")) == 1
