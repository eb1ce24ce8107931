"""End to end, through the real commands: ``seats-exp`` and ``python -m lmms_eval``.

1. The walking skeleton: ``seats-exp paths.root=<tmp> logger=wandb`` (tiny Qwen2.5-Omni written on
   first use, the synthetic set generated on first use, full tokens, W&B in mode auto without a
   key -> offline) writes result.json and samples.jsonl, and the offline W&B run, read back from
   its .wandb file, holds the same config and summary.
2. Bad media: a missing clip and a corrupt clip are recorded per sample with their reason and
   counted as errors, the run goes on and scores the rest; a clip without audio runs with a warning.
3. The lmms-eval CLI path: ``--model seats_omni`` found through the entry point, our materialised
   task folder through ``--include_path``.

Each run is a child process, so wandb's service and lmms-eval's global state die with it.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from evaluation import benchmarks
from evaluation.synthetic import generate, video_path, write_clip, write_corrupt_video
from seats_exp.tracking import flat_summary
from seats_exp.wandb_reader import find_offline_runs, read_offline_run, read_table

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
SEATS_EXP = BIN / "seats-exp"


def _env(tmp: Path) -> dict:
    """No W&B settings from the outside (no WANDB_MODE, no API key), a private HOME (no ~/.netrc
    key either), wandb quiet."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HYDRA_"))}
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    env.update(HOME=str(home), WANDB_SILENT="true", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return env


def _run(cmd: list[str], tmp: Path, timeout: float = 420) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=tmp, env=_env(tmp), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        print(proc.stdout[-5000:])
        print(proc.stderr[-5000:], file=sys.stderr)
    return proc


def _output_folder(stdout: str) -> Path:
    found = re.findall(r"^output folder: (.+)$", stdout, flags=re.M)
    assert len(found) == 1, stdout[-3000:]
    return Path(found[0].strip())


def _samples(run_dir: Path) -> list[dict]:
    lines = (run_dir / "samples.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


# ------------------------------------------------------------------------------------------------
# 1. The default run with W&B offline
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e_default")
    proc = _run([str(SEATS_EXP), f"paths.root={tmp}", "logger=wandb"], tmp)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = _output_folder(proc.stdout)
    return tmp, proc, run_dir


def test_default_run_writes_its_folder(default_run):
    tmp, proc, run_dir = default_run
    assert run_dir.is_dir() and run_dir.is_relative_to(tmp / "outputs" / "runs")
    assert run_dir.name.endswith("_tiny_qwen2_5_omni.full_tokens.r35.synthetic")
    for name in ("config.yaml", "result.json", "samples.jsonl"):
        assert (run_dir / name).is_file(), name
    # Everything under paths.root: the tiny checkpoint and the synthetic set were made on first use.
    assert (tmp / "data" / "models" / "tiny_qwen2_5_omni" / "model.safetensors").is_file()
    qa = json.loads((tmp / "data" / "synthetic" / "qa.json").read_text())
    assert len(qa) == 6
    assert all(video_path(tmp / "data" / "synthetic", q["video_id"]).is_file() for q in qa)
    # The summary table went to stdout.
    header = next(line for line in proc.stdout.splitlines() if line.startswith("method"))
    assert {"schedule", "benchmark", "accuracy", "errors"} <= set(header.split())
    # config.yaml is the resolved config of this run.
    import yaml

    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["model"]["name"] == "tiny_qwen2_5_omni"
    assert config["model"]["checkpoint"] == str(tmp / "data" / "models" / "tiny_qwen2_5_omni")
    assert config["logger"]["name"] == "wandb" and config["paths"]["root"] == str(tmp)


def test_default_run_result(default_run):
    tmp, _, run_dir = default_run
    result = json.loads((run_dir / "result.json").read_text())
    assert (result["model"], result["method"], result["schedule"], result["benchmark"]) == (
        "tiny_qwen2_5_omni", "full_tokens", "r35", "synthetic")
    assert result["ratios"] == {"video": 0.30, "audio": 0.65}
    assert result["run_name"] == "tiny_qwen2_5_omni.full_tokens.r35.synthetic"
    assert isinstance(result["accuracy"], float) and 0.0 <= result["accuracy"] <= 100.0
    assert result["n_samples"] == 6 and result["n_errors"] == 0
    assert result["seed"] == 0 and result["scoring"] == "faithful"
    assert result["run_dir"] == str(run_dir)
    assert result["wall_time_s"] > 0

    task = result["tasks"]["synthetic"]
    assert task["accuracy"] == result["accuracy"]
    assert (task["n_samples"], task["n_scored"], task["n_errors"], task["errors"]) == (6, 6, 0, {})
    assert set(task["breakdowns"]) == {"video_category", "Type", "video_duration"}
    qa = json.loads((tmp / "data" / "synthetic" / "qa.json").read_text())
    assert set(task["breakdowns"]["video_category"]) == {q["video_category"] for q in qa}
    assert set(task["breakdowns"]["Type"]) == {q["Type"] for q in qa}
    for table, counts in task["breakdown_counts"].items():
        assert sum(counts.values()) == 6, table
        assert all(0.0 <= acc <= 100.0 for acc in task["breakdowns"][table].values())

    cost = result["cost"]
    assert len(cost["tokens_per_layer"]) == 8
    assert cost["flops_ratio"] == 1.0 and cost["prefill_tflops"] == cost["prefill_tflops_full"] > 0
    assert cost["llm_input_tokens"] == cost["input_tokens"] == cost["tokens_per_layer"][-1]  # full tokens

    versions = result["versions"]
    assert {"python", "torch", "transformers", "lmms_eval", "hydra-core", "wandb", "seats-exp"} <= set(versions)
    assert versions["transformers"].startswith("5.") and versions["lmms_eval"].startswith("0.7.")
    assert "not installed" not in versions.values()
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", result["git_commit"] or ""), result["git_commit"]


def test_default_run_samples(default_run):
    tmp, _, run_dir = default_run
    records = _samples(run_dir)
    assert len(records) == 6
    qa = json.loads((tmp / "data" / "synthetic" / "qa.json").read_text())
    assert sorted(r["doc_id"] for r in records) == list(range(6))
    assert sorted(r["sample_id"] for r in records) == sorted(q["question_id"] for q in qa)
    for r in records:
        assert r["task"] == "seats_synthetic"
        assert r["error"] is None and isinstance(r["answer"], str)
        assert r["audio_in_video"] is True and "warning" not in r
        assert 0 < r["generated_tokens"] <= 32  # the task's max_new_tokens, applied for real
        assert r["input_tokens"] == r["llm_input_tokens"] > 0
        assert r["layer_lengths"] == [r["input_tokens"]] * 8
        assert r["kept_video"][0] > 0 and r["kept_audio"][0] > 0
        assert r["prefill_flops"] == r["prefill_flops_full"] > 0
        assert r["time_llm_prefill"] > 0 and r["seconds"] > 0
        assert r["drop_events"] == []


def test_default_run_offline_wandb_run_reads_back(default_run):
    tmp, _, run_dir = default_run
    result = json.loads((run_dir / "result.json").read_text())
    runs = find_offline_runs(run_dir / "wandb")
    assert len(runs) == 1, "mode auto without an API key must log offline, under the run folder"
    run = read_offline_run(runs[0])
    assert run["complete"] and run["exit_code"] == 0

    expected = flat_summary(result)
    assert {"accuracy", "n_samples", "n_errors", "wall_time_s", "synthetic/accuracy"} <= set(expected)
    assert {k: run["summary"].get(k) for k in expected} == expected
    internal = {k for k in run["summary"] if k.startswith("_")}
    assert set(run["summary"]) - internal == set(expected) | {"samples", "layer", "tokens/all", "tokens/video", "tokens/audio"}
    assert expected["R"] == 100  # full tokens
    # History for the W&B Report: one row per decoder layer, then R with the accuracies.
    layers = [h for h in run["history"] if "layer" in h]
    cost = result["cost"]
    assert [h["layer"] for h in layers] == list(range(1, 9))
    assert [h["tokens/video"] for h in layers] == cost["video_tokens_per_layer"]
    assert [h["tokens/audio"] for h in layers] == cost["audio_tokens_per_layer"]
    assert [h["tokens/all"] for h in layers] == cost["tokens_per_layer"]
    (at_r,) = [h for h in run["history"] if "R" in h]
    assert (at_r["R"], at_r["accuracy"], at_r["synthetic/accuracy"]) == (100, result["accuracy"], result["accuracy"])

    config = run["config"]
    assert config["model"]["name"] == result["model"] and config["model"]["family"] == "qwen2_5_omni"
    assert config["method"] == {"name": result["method"]}
    # the whole resolved config of the point, plus the settings to compare runs by
    assert config["schedule"]["name"] == result["schedule"] and config["ratios"] == result["ratios"]
    assert config["benchmark"]["name"] == result["benchmark"] and config["benchmark_limit"] is None
    assert config["paths"]["root"] == str(tmp) and config["git_commit"] == result["git_commit"]
    assert (config["seed"], config["scoring"], config["kv_scope"]) == (0, "faithful", result["kv_scope"])

    assert run["project"] == "seats-exp" and run["group"] == "adhoc" and run["job_type"] == "full_tokens"
    assert run["name"] == result["run_name"]
    assert set(run["tags"]) == {"model=tiny_qwen2_5_omni", "schedule=r35", "benchmark=synthetic", "method=full_tokens"}

    table = read_table(runs[0], run["summary"]["samples"])
    cols = table["columns"]
    assert cols[:4] == ["task", "sample_id", "answer", "error"]
    rows = [dict(zip(cols, row)) for row in table["data"]]
    records = {r["sample_id"]: r for r in _samples(run_dir)}
    assert len(rows) == 6 and {row["sample_id"] for row in rows} == set(records)
    for row in rows:
        assert row["answer"] == records[row["sample_id"]]["answer"] and row["error"] is None
        assert row["llm_input_tokens"] == records[row["sample_id"]]["llm_input_tokens"]


# ------------------------------------------------------------------------------------------------
# 2. Bad media in a Daily-Omni-schema set
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_media_run(tmp_path_factory, tiny_qwen2_5):
    tmp = tmp_path_factory.mktemp("e2e_bad_media")
    root = tmp / "Daily-Omni"
    qa_path = generate(root, num_clips=4, seconds=2.0)
    (root / "synthetic.json").unlink()  # now a plain Daily-Omni copy, not a generator-managed folder
    qa = json.loads(qa_path.read_text())
    ids = [q["video_id"] for q in qa]
    video_path(root, ids[0]).unlink()  # missing
    write_corrupt_video(video_path(root, ids[1]))  # corrupt
    write_clip(video_path(root, ids[2]), seconds=2.0, audio=False)  # no audio track
    annotations = tmp / "annotations" / "qa.json"  # a copy of the annotations, elsewhere
    annotations.parent.mkdir()
    shutil.copy(qa_path, annotations)
    proc = _run([str(SEATS_EXP), f"paths.root={tmp}", "benchmark=dailyomni",
                 f"benchmark.tasks.dailyomni.annotations={annotations}", f"benchmark.tasks.dailyomni.video_root={root}",
                 f"model.checkpoint={tiny_qwen2_5}", "eval.max_new_tokens_override=4", "eval.progress=false"], tmp)
    return root, qa, proc


def test_bad_media_run_goes_on_and_counts_errors(bad_media_run):
    root, qa, proc = bad_media_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = _output_folder(proc.stdout)
    result = json.loads((run_dir / "result.json").read_text())
    missing, corrupt = (str(video_path(root, qa[i]["video_id"]).resolve()) for i in (0, 1))

    assert result["n_samples"] == 4 and result["n_errors"] == 2
    task = result["tasks"]["dailyomni"]
    assert (task["n_samples"], task["n_scored"], task["n_errors"]) == (4, 2, 2)
    assert len(task["errors"]) == 2 and set(task["errors"].values()) == {1}
    assert task["errors"].get(f"video file not found: {missing}") == 1
    assert any(k.startswith(f"unreadable video file {corrupt}") for k in task["errors"]), task["errors"]
    # Accuracy over the two scored samples only; errors are in no breakdown.
    assert task["accuracy"] in (0.0, 50.0, 100.0) and result["accuracy"] == task["accuracy"]
    for table, counts in task["breakdown_counts"].items():
        assert sum(counts.values()) == 2, table
    assert result["cost"]["llm_input_tokens"] > 0  # cost from the samples that ran

    logged = proc.stdout + proc.stderr
    assert f"skipped: video file not found: {missing}" in logged
    assert f"skipped: unreadable video file {corrupt}" in logged


def test_bad_media_samples_record_reasons(bad_media_run):
    root, qa, proc = bad_media_run
    records = {r["sample_id"]: r for r in _samples(_output_folder(proc.stdout))}
    assert set(records) == {q["question_id"] for q in qa}
    gone, broken, silent, fine = (records[q["question_id"]] for q in qa)

    assert gone["answer"] is None and gone["error"].startswith("video file not found: ")
    assert broken["answer"] is None and broken["error"].startswith("unreadable video file ")
    for bad in (gone, broken):
        assert "prefill_flops" not in bad  # never ran, never costed

    assert silent["error"] is None and isinstance(silent["answer"], str)
    assert silent["audio_in_video"] is False and "no audio track" in silent["warning"]
    assert silent["kept_audio"][0] == 0 and silent["kept_video"][0] > 0
    assert fine["error"] is None and fine["audio_in_video"] is True and "warning" not in fine
    for ran in (silent, fine):
        assert 0 < ran["generated_tokens"] <= 4  # eval.max_new_tokens_override applied


# ------------------------------------------------------------------------------------------------
# 3. python -m lmms_eval --model seats_omni
# ------------------------------------------------------------------------------------------------


def test_lmms_eval_cli_path(tmp_path, tiny_qwen2_5):
    from evaluation.common import group_unique_accuracy

    data = tmp_path / "synthetic"
    qa_path = generate(data, num_clips=2, seconds=2.0)
    task_dir = tmp_path / "tasks"
    settings = {"task": "dailyomni", "annotations": str(qa_path), "video_root": str(data), "fps": 2,
                "max_frames": {"qwen2_5_omni": 128, "qwen3_omni": 128}, "min_pixels": 128, "max_pixels": 144,
                "total_pixels": 24576, "system_prompt": "persona",
                "generation": {"max_new_tokens": 8, "temperature": 0.0, "top_p": 1.0, "num_beams": 1, "do_sample": False}}
    assert benchmarks.materialize({"synthetic": settings}, task_dir) == ["seats_synthetic"]
    out = tmp_path / "lmms_out"

    proc = _run([sys.executable, "-m", "lmms_eval", "--model", "seats_omni",
                 "--model_args", f"pretrained={tiny_qwen2_5},family=qwen2_5_omni,dtype=float32,device=cpu",
                 "--tasks", "seats_synthetic", "--include_path", str(task_dir), "--batch_size", "1",
                 "--output_path", str(out), "--log_samples"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]

    results_files = glob.glob(str(out / "**" / "*_results.json"), recursive=True)
    assert len(results_files) == 1, sorted(p.name for p in out.rglob("*"))
    report = json.loads(Path(results_files[0]).read_text())
    assert report["config"]["model"] == "seats_omni"
    assert report["n-samples"]["seats_synthetic"]["effective"] == 2
    accuracy = report["results"]["seats_synthetic"]["seats_accuracy,none"]
    assert isinstance(accuracy, (int, float)) and 0.0 <= accuracy <= 100.0

    # The aggregate is the task's own rule over the per-sample records lmms-eval logged.
    sample_files = glob.glob(str(out / "**" / "*samples_seats_synthetic*.jsonl"), recursive=True)
    assert len(sample_files) == 1
    logged = [json.loads(line) for line in Path(sample_files[0]).read_text().splitlines() if line.strip()]
    records = [s["seats_accuracy"] for s in logged]
    assert len(records) == 2 and all(r["error"] is None and r["score"] in (0, 1) for r in records)
    assert accuracy == pytest.approx(group_unique_accuracy(records))
    assert {r["sample_id"] for r in records} == {q["question_id"] for q in json.loads(qa_path.read_text())}
