"""End to end: the real ``seats-exp`` command on every benchmark schema, with real clips.

Each benchmark gets a small annotation file in its published schema (rows taken from
``bench_fixtures``, trimmed and reordered so that ``benchmark.limit=2`` still keeps one sample
whose video is missing) and real H.264/AAC clips from ``evaluation.synthetic.write_clip`` at the
paths the benchmark's video rule expects.  WorldSense gets one clip without an audio track.

The runs (tiny random Qwen2.5-Omni, CPU, each with its own ``paths.root``) start when the module's
first test asks for one, two processes at a time, and only those the selected tests read:

* ``omni5``: all five benchmarks in one invocation, ``benchmark.limit=2``;
* ``worldsense``: a single-benchmark config with ``method=seats schedule=r10`` and
  ``benchmark.scoring=robust`` (all three rows: missing video, silent clip, clip with sound);
* ``dailyomni`` with ``benchmark.sample_ids=[<one id>]``;
* the default synthetic set with ``eval.fidelity=true``, once pruned (``method=seats
  schedule=r10``) and once unpruned (``method=full_tokens``).

Generation length is capped with ``eval.max_new_tokens_override`` (WorldSense asks for 1024
tokens, which a random model fills completely): the tests are about data flow, not answers.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_fixtures as bf

pytestmark = pytest.mark.slow

SEATS_EXP = Path(sys.executable).with_name("seats-exp")
TEMPLATES = ["dailyomni", "worldsense", "omnivideobench", "videomme", "lvomnibench"]
MAX_NEW_TOKENS = 4

# The benchmark's own breakdown keys (upstream's logged tables), spelled out here rather than
# read back from evaluation.benchmarks so that a changed spec shows up as a failing test.
BREAKDOWN_KEYS = {
    "dailyomni": {"video_category", "Type", "video_duration"},
    "worldsense": {"task_type", "domain", "duration", "audio_class"},
    "omnivideobench": {"video_type", "question_type", "audio_type", "duration_bucket"},
    "videomme": {"duration", "domain", "sub_category", "task_type"},
    "lvomnibench": {"video_category", "sub_category", "question_type", "audio_type", "difficulty",
                    "duration_bucket"},
}


# ------------------------------------------------------------------------------------------------
# Fixture data: the bench_fixtures rows, real clips, one missing video per benchmark
# ------------------------------------------------------------------------------------------------


class Bench:
    """One benchmark's files: ``rows`` in file order, which sample ids have a missing video or
    a silent clip, and ``expect[sample_id]`` = the breakdown values that sample must produce."""

    def __init__(self, template, annotations, video_root, rows, ids, missing_id, silent_id=None, expect=None):
        self.template = template
        self.annotations = Path(annotations)
        self.video_root = Path(video_root)
        self.rows = rows
        self.ids = ids  # sample ids in file order
        self.missing_id = missing_id
        self.silent_id = silent_id
        self.expect = expect or {}

    def overrides(self, key=None):
        key = key or self.template
        return [f"benchmark.tasks.{key}.annotations={self.annotations}",
                f"benchmark.tasks.{key}.video_root={self.video_root}"]


def _clip(path: Path, colour: str, pitch: str = "high", audio: bool = True) -> Path:
    from evaluation.synthetic import write_clip

    path.unlink(missing_ok=True)  # drop the bench_fixtures placeholder
    return write_clip(path, colour=colour, pitch=pitch, seconds=2.0, fps=4, width=112, height=112, audio=audio)


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=1), encoding="utf-8")


def build_dailyomni(root: Path) -> Bench:
    fx = bf.write_dailyomni(root)
    by_id = {r["question_id"]: r for r in fx.rows}
    rows = [by_id[101], by_id[202], by_id[201]]  # 202's video (zz9Miss) is missing on disk
    _write_json(fx.annotations, rows)  # JSON list, Choice a list-literal string, as published
    _clip(fx.video_root / "videos" / "dq7Jx1" / "dq7Jx1_video.mp4", "red")
    _clip(fx.video_root / "videos" / "k2Lm09" / "k2Lm09_video.mp4", "green", "low")
    assert not (fx.video_root / "videos" / "zz9Miss").exists()
    return Bench("dailyomni", fx.annotations, fx.video_root, rows, ["101", "202", "201"], "202", expect={
        "101": {"video_category": "Sports", "Type": "AV Event Alignment", "video_duration": "30s"},
        "201": {"video_category": "Education", "Type": "Reasoning", "video_duration": "60s"},
    })


def build_worldsense(root: Path) -> Bench:
    fx = bf.write_worldsense(root)
    # {"version": ..., "data": [...]} as published; index 0's video is deleted, index 1 is silent
    (fx.video_root / "videos" / "ws_0001.mp4").unlink()
    _clip(fx.video_root / "videos" / "ws_0002.mp4", "blue", audio=False)
    _clip(fx.video_root / "videos" / "ws_0003.mp4", "yellow", "low")
    return Bench("worldsense", fx.annotations, fx.video_root, fx.rows, ["0", "1", "2"], "0", silent_id="1", expect={
        "1": {"task_type": "Spatial Reasoning", "domain": "Daily Life", "duration": "1-2min",
              "audio_class": "speech"},
        "2": {"task_type": "Temporal Reasoning", "domain": "Daily Life", "duration": "<1min",
              "audio_class": "sound effect"},
    })


def build_omnivideobench(root: Path) -> Bench:
    fx = bf.write_omnivideobench(root)
    # JSON lines, no question id field (sample id = row number); row 1's video is missing
    (fx.video_root / "videos" / "ovb_002.mp4").unlink()
    _clip(fx.video_root / "videos" / "ovb_001.mp4", "purple")
    _clip(fx.video_root / "videos" / "ovb_003.mp4", "orange", "low")
    return Bench("omnivideobench", fx.annotations, fx.video_root, fx.rows, ["0", "1", "2"], "1", expect={
        "0": {"video_type": "Vlog", "question_type": "Speech Understanding", "audio_type": "Speech",
              "duration_bucket": "1-5min"},
        "2": {"video_type": "Vlog", "question_type": "Counting", "audio_type": "Sound",
              "duration_bucket": "0-1min"},
    })


def build_videomme(root: Path) -> Bench:
    import pandas as pd

    fx = bf.write_videomme(root)
    by_id = {r["question_id"]: r for r in fx.rows}
    rows = [by_id["301-1"], by_id["602-1"], by_id["001-1"]]  # 602-1's video (NoFileHere1) is missing
    # Video-MME is published as parquet (videomme/test-00000-of-00001.parquet)
    ann = fx.video_root / "videomme" / "test-00000-of-00001.parquet"
    ann.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(ann, index=False)
    _clip(fx.video_root / "data" / "Kx2UpPc7mVc.MP4", "red", "low")  # the upper-case extension rule
    _clip(fx.video_root / "data" / "fFjv93ACGo8.mp4", "blue")
    return Bench("videomme", ann, fx.video_root, rows, ["301-1", "602-1", "001-1"], "602-1", expect={
        "301-1": {"duration": "medium", "domain": "Sports Competition", "sub_category": "Football",
                  "task_type": "Action Recognition"},
        "001-1": {"duration": "short", "domain": "Knowledge", "sub_category": "Humanity & History",
                  "task_type": "Counting Problem"},
    })


def build_lvomnibench(root: Path) -> Bench:
    import pandas as pd

    fx = bf.write_lvomnibench(root)
    by_id = {r["question_id"]: r for r in fx.rows}
    rows = [by_id["lv-1"], by_id["lv-3"], by_id["lv-2"]]  # lv-3's video (lv_0002) is deleted
    pd.DataFrame(rows).to_parquet(fx.annotations, index=False)
    (fx.video_root / "videos" / "lv_0002.mp4").unlink()
    _clip(fx.video_root / "videos" / "lv_0001.mp4", "green")
    return Bench("lvomnibench", fx.annotations, fx.video_root, rows, ["lv-1", "lv-3", "lv-2"], "lv-3", expect={
        "lv-1": {"video_category": "Education", "sub_category": "Lecture", "question_type": "Speech",
                 "audio_type": "Speech", "difficulty": "easy", "duration_bucket": "10-30min"},
        "lv-2": {"video_category": "Education", "sub_category": "Lecture", "question_type": "Temporal",
                 "audio_type": "Sound", "difficulty": "hard", "duration_bucket": "10-30min"},
    })


BUILDERS = {"dailyomni": build_dailyomni, "worldsense": build_worldsense, "omnivideobench": build_omnivideobench,
            "videomme": build_videomme, "lvomnibench": build_lvomnibench}


# ------------------------------------------------------------------------------------------------
# Running seats-exp
# ------------------------------------------------------------------------------------------------


class Run:
    def __init__(self, proc: subprocess.CompletedProcess, seconds: float):
        self.proc = proc
        self.seconds = seconds
        out = [line for line in proc.stdout.splitlines() if line.startswith("output folder: ")]
        self.dir = Path(out[-1].split(": ", 1)[1]) if out else None

    def check(self) -> Run:
        assert self.proc.returncode == 0 and self.dir is not None, (
            f"seats-exp failed (rc={self.proc.returncode})\n{self.proc.stdout[-3000:]}\n{self.proc.stderr[-6000:]}")
        return self

    @property
    def result(self) -> dict:
        return json.loads((self.check().dir / "result.json").read_text())

    @property
    def samples(self) -> list[dict]:
        lines = (self.check().dir / "samples.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def samples_of(self, key: str) -> dict[str, dict]:
        """sample id -> samples.jsonl record of task ``seats_<key>``."""
        return {str(r["sample_id"]): r for r in self.samples if r["task"] == f"seats_{key}"}


def _run_args(benches: dict[str, Bench]) -> dict[str, list[str]]:
    """seats-exp arguments of every run (besides paths.root and the common ones)."""
    fidelity = ["benchmark=synthetic", "benchmark.limit=2", "eval.fidelity=true"]
    return {
        # all five benchmarks in one invocation, first two rows of each
        "omni5": ["benchmark=omni5", "benchmark.limit=2", *(a for b in benches.values() for a in b.overrides())],
        # a single-benchmark config, pruned, robust scoring, all three rows
        "worldsense": ["benchmark=worldsense", "method=seats", "schedule=r10", "benchmark.scoring=robust",
                       *benches["worldsense"].overrides()],
        "one_sample": ["benchmark=dailyomni", "benchmark.sample_ids=[201]", *benches["dailyomni"].overrides()],
        "fidelity_seats": [*fidelity, "method=seats", "schedule=r10"],
        "fidelity_full_tokens": [*fidelity, "method=full_tokens"],
    }


#: test function -> the runs it reads (only the runs of the selected tests are started).
NEEDS = {
    "test_omni5_limit2_runs_every_benchmark": ["omni5"],
    "test_omni5_task": ["omni5"],
    "test_omni5_silent_clip_runs_with_a_warning": ["omni5"],
    "test_single_benchmark_worldsense_seats_r10": ["worldsense"],
    "test_scoring_robust_is_recorded": ["worldsense", "omni5"],
    "test_fidelity_seats_r10": ["fidelity_seats"],
    "test_fidelity_full_tokens_agrees_with_itself": ["fidelity_full_tokens"],
    "test_sample_ids_runs_exactly_that_sample": ["one_sample"],
}
PARALLEL_RUNS = 2  # two seats-exp processes at a time, one compute thread each


@pytest.fixture(scope="module")
def e2e(request, tmp_path_factory):
    base = tmp_path_factory.mktemp("bench_e2e")
    benches = {name: BUILDERS[name](base / "data") for name in TEMPLATES}
    args = _run_args(benches)
    selected = {item.originalname for item in request.session.items if item.module is request.module}
    wanted = [name for name in args if any(name in NEEDS.get(t, ()) for t in selected)]

    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HYDRA_"))}
    env.update(LMMS_EVAL_DATASETS_CACHE=str(base / "hf_datasets"), HF_DATASETS_CACHE=str(base / "hf_datasets"),
               HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    common = ["eval.progress=false", f"eval.max_new_tokens_override={MAX_NEW_TOKENS}"]

    def launch(name: str) -> Run:
        root = base / name  # its own paths.root: tiny checkpoint, synthetic set and outputs are not shared
        root.mkdir()
        started = time.perf_counter()
        proc = subprocess.run([str(SEATS_EXP), f"paths.root={root}", *common, *args[name]], cwd=root, env=env,
                              capture_output=True, text=True, timeout=480, check=False)
        return Run(proc, time.perf_counter() - started)

    pool = ThreadPoolExecutor(max_workers=PARALLEL_RUNS)
    futures = {name: pool.submit(launch, name) for name in wanted}

    def get(name: str) -> Run:
        if name not in futures:  # a test outside NEEDS
            futures[name] = pool.submit(launch, name)
        return futures[name].result()

    yield SimpleNamespace(
        benches=benches, omni5=lambda: get("omni5"), worldsense=lambda: get("worldsense"),
        one_sample=lambda: get("one_sample"), fidelity=lambda method: get(f"fidelity_{method}"))
    pool.shutdown(wait=True)
    done = {k: f.result() for k, f in futures.items() if f.done() and f.exception() is None}
    print("\nseats-exp runs: " + ", ".join(f"{k} {r.seconds:.0f}s" for k, r in done.items()))


# ------------------------------------------------------------------------------------------------
# Checks shared by the omni5 and single-benchmark runs
# ------------------------------------------------------------------------------------------------


def _check_task(run: Run, bench: Bench, ids: list[str], *, key: str | None = None) -> dict:
    key = key or bench.template
    result = run.result
    task = result["tasks"][key]
    scored_ids = [i for i in ids if i != bench.missing_id]
    assert task["task"] == bench.template
    # accuracy: a real number in [0, 100] computed over the scored samples only
    assert isinstance(task["accuracy"], (int, float)) and not isinstance(task["accuracy"], bool)
    assert 0.0 <= task["accuracy"] <= 100.0 and math.isfinite(task["accuracy"])
    assert task["n_samples"] == len(ids)
    assert task["n_scored"] == len(scored_ids)
    # the missing video is an error with its reason, not a wrong answer
    assert task["n_errors"] == 1, task["errors"]
    [(reason, count)] = task["errors"].items()
    assert count == 1 and "not found" in reason
    missing_path = _missing_video_path(bench)
    assert missing_path in reason, (reason, missing_path)
    # breakdown tables: exactly the benchmark's own keys, filled from the scored samples' fields
    assert set(task["breakdowns"]) == BREAKDOWN_KEYS[bench.template]
    for field, table in task["breakdowns"].items():
        want = {bench.expect[i][field] for i in scored_ids}
        assert set(table) == want, (field, table, want)
        assert all(0.0 <= v <= 100.0 for v in table.values())
        assert sum(task["breakdown_counts"][field].values()) == len(scored_ids)

    # samples.jsonl: one record per sample, in the materialised order
    records = run.samples_of(key)
    assert sorted(records) == sorted(ids)
    assert sorted(r["doc_id"] for r in records.values()) == list(range(len(ids)))
    missing = records[bench.missing_id]
    assert missing["answer"] is None and "error" in missing
    assert "not found" in missing["error"] and missing_path in missing["error"]
    for sid in scored_ids:
        rec = records[sid]
        assert rec["error"] is None, rec
        assert isinstance(rec["answer"], str)
        assert rec["generated_tokens"] <= MAX_NEW_TOKENS
        assert rec["input_tokens"] > 0 and rec["prefill_flops"] > 0
        if sid == bench.silent_id:
            assert rec["audio_in_video"] is False
            assert "no audio track" in rec["warning"]
        else:
            assert rec["audio_in_video"] is True
            assert "warning" not in rec
    return task


def _missing_video_path(bench: Bench) -> str:
    from evaluation.benchmarks import BENCHMARKS

    row = bench.rows[bench.ids.index(bench.missing_id)]
    path = BENCHMARKS[bench.template].resolve_video(row, str(bench.video_root.resolve()))
    assert not Path(path).exists()
    return path


# ------------------------------------------------------------------------------------------------
# 1. Every benchmark end to end (omni5 with limit=2) and one single-benchmark config
# ------------------------------------------------------------------------------------------------


def test_omni5_limit2_runs_every_benchmark(e2e):
    run = e2e.omni5()
    result = run.result
    assert result["benchmark"] == "omni5" and result["method"] == "full_tokens"
    assert list(result["tasks"]) == TEMPLATES
    assert result["n_samples"] == 2 * len(TEMPLATES)
    assert result["n_errors"] == len(TEMPLATES)  # one missing video per benchmark
    accs = [result["tasks"][t]["accuracy"] for t in TEMPLATES]
    assert result["accuracy"] == pytest.approx(sum(accs) / len(accs))
    assert result["scoring"] == "faithful"
    # the limit is applied per task and recorded with each materialised task
    manifest = json.loads((run.dir / "tasks" / "seats_manifest.json").read_text())["tasks"]
    assert sorted(manifest) == sorted(f"seats_{t}" for t in TEMPLATES)
    assert all(m["limit"] == 2 and m["n_docs"] == 2 for m in manifest.values())
    assert len(run.samples) == 2 * len(TEMPLATES)


@pytest.mark.parametrize("template", TEMPLATES)
def test_omni5_task(e2e, template):
    bench = e2e.benches[template]
    task = _check_task(e2e.omni5(), bench, bench.ids[:2])
    # the benchmark's own aggregation rule
    assert task["aggregation"] == ("mean" if template in ("omnivideobench", "videomme") else "group_unique")


def test_omni5_silent_clip_runs_with_a_warning(e2e):
    run = e2e.omni5()
    bench = e2e.benches["worldsense"]
    rec = run.samples_of("worldsense")[bench.silent_id]
    assert rec["error"] is None and isinstance(rec["answer"], str)
    assert rec["audio_in_video"] is False and "no audio track" in rec["warning"]
    assert run.result["tasks"]["worldsense"]["n_scored"] == 1


def test_single_benchmark_worldsense_seats_r10(e2e):
    run = e2e.worldsense()
    bench = e2e.benches["worldsense"]
    result = run.result
    assert (result["benchmark"], result["method"], result["schedule"]) == ("worldsense", "seats", "r10")
    assert list(result["tasks"]) == ["worldsense"]
    assert result["n_samples"] == 3 and result["n_errors"] == 1
    _check_task(run, bench, bench.ids)
    # SEATS really pruned: fewer tokens at the last layer than went in, for the clips with and without sound
    for sid in ("1", "2"):
        rec = run.samples_of("worldsense")[sid]
        assert rec["layer_lengths"][-1] < rec["llm_input_tokens"], rec["layer_lengths"]
        assert rec["prefill_flops"] < rec["prefill_flops_full"]
    assert run.samples_of("worldsense")["1"]["kept_audio"][0] == 0  # the silent clip has no audio tokens
    assert run.samples_of("worldsense")["2"]["kept_audio"][0] > 0


# ------------------------------------------------------------------------------------------------
# 2. benchmark.scoring=robust
# ------------------------------------------------------------------------------------------------


def test_scoring_robust_is_recorded(e2e):
    run = e2e.worldsense()
    assert run.result["scoring"] == "robust"
    folder = run.dir / "tasks" / "seats_worldsense"
    meta = yaml.safe_load((folder / "worldsense.yaml").read_text().replace("!function", ""))["metadata"]["seats"]
    assert meta["scoring"] == "robust"
    assert "SCORING = 'robust'" in (folder / "utils.py").read_text()
    manifest = json.loads((run.dir / "tasks" / "seats_manifest.json").read_text())["tasks"]
    assert manifest["seats_worldsense"]["scoring"] == "robust"
    # and the task this run materialised really parses robustly when lmms-eval loads it (faithful: "T")
    from lmms_eval.tasks import TaskManager, get_task_dict

    task = get_task_dict(["seats_worldsense"], TaskManager(include_path=str(run.dir / "tasks"),
                                                           include_defaults=False))["seats_worldsense"]
    doc = list(task.test_docs())[0]
    assert task.process_results(doc, ["The answer is B. Option C is incorrect."])["seats_accuracy"]["pred"] == "B"
    # the faithful default for comparison
    omni5 = e2e.omni5()
    assert omni5.result["scoring"] == "faithful"
    meta5 = json.loads((omni5.dir / "tasks" / "seats_manifest.json").read_text())["tasks"]
    assert {m["scoring"] for m in meta5.values()} == {"faithful"}


# ------------------------------------------------------------------------------------------------
# 3. eval.fidelity=true
# ------------------------------------------------------------------------------------------------


def _fidelity_records(run: Run) -> list[dict]:
    records = run.samples
    assert len(records) == 2
    for rec in records:
        assert rec["error"] is None
        fid = rec["fidelity"]
        assert set(fid) == {"top1_agree", "kl"}
        assert isinstance(fid["top1_agree"], bool)
        assert isinstance(fid["kl"], float) and math.isfinite(fid["kl"])
    return records


def test_fidelity_seats_r10(e2e):
    run = e2e.fidelity("seats")
    records = _fidelity_records(run)
    assert all(r["fidelity"]["kl"] >= 0.0 for r in records)
    # pruned for real: fewer tokens, so the full-token pass it is compared with is a different forward
    assert all(r["layer_lengths"][-1] < r["llm_input_tokens"] for r in records)
    assert any(r["fidelity"]["kl"] > 1e-6 for r in records)
    result = run.result
    for cost in (result["cost"], result["tasks"]["synthetic"]["cost"]):
        assert cost["fidelity_top1_agreement"] == pytest.approx(
            sum(float(r["fidelity"]["top1_agree"]) for r in records) / 2)
        assert cost["fidelity_kl"] == pytest.approx(sum(r["fidelity"]["kl"] for r in records) / 2)
        assert 0.0 <= cost["fidelity_top1_agreement"] <= 1.0 and cost["fidelity_kl"] >= 0.0


def test_fidelity_full_tokens_agrees_with_itself(e2e):
    run = e2e.fidelity("full_tokens")
    records = _fidelity_records(run)
    for rec in records:
        assert rec["fidelity"]["top1_agree"] is True
        assert abs(rec["fidelity"]["kl"]) < 1e-5
    cost = run.result["cost"]
    assert cost["fidelity_top1_agreement"] == 1.0
    assert abs(cost["fidelity_kl"]) < 1e-5


# ------------------------------------------------------------------------------------------------
# 4. benchmark.sample_ids
# ------------------------------------------------------------------------------------------------


def test_sample_ids_runs_exactly_that_sample(e2e):
    run = e2e.one_sample()
    bench = e2e.benches["dailyomni"]
    result = run.result
    task = result["tasks"]["dailyomni"]
    assert task["n_samples"] == 1 and task["n_scored"] == 1 and task["n_errors"] == 0
    records = run.samples
    assert [(r["task"], r["sample_id"], r["doc_id"]) for r in records] == [("seats_dailyomni", "201", 0)]
    docs = [json.loads(line) for line in
            (run.dir / "tasks" / "seats_dailyomni" / "docs.jsonl").read_text().splitlines() if line.strip()]
    assert [d["_sample_id"] for d in docs] == ["201"] and docs[0]["_row"] == bench.ids.index("201")
    assert set(task["breakdowns"]["video_category"]) == {"Education"}
