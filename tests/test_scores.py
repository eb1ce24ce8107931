"""Scores you can trust: every answer is scored against its own question, with the media settings the
user configured, and every bad input is named (issue 12).

Fast unit tests (no model weights) for resume matching, the annotation-file identity of a point,
rows missing required fields, the robust parser corpus, the lmms-eval CLI path's media settings,
the response cache and video files that cannot be used; the real ``seats-exp`` /
``seats-exp-sweep-list`` commands for the bad inputs that must end with one clear line (exit 2).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
for p in (str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)


from evaluation import benchmarks as B  # noqa: E402
from evaluation import common as C  # noqa: E402

SEATS_EXP = Path(sys.executable).with_name("seats-exp")
SWEEP_LIST = Path(sys.executable).with_name("seats-exp-sweep-list")
CORPUS = HERE / "data" / "robust_parser_corpus.json"


def _docs(out: Path, key: str) -> list[dict]:
    return [json.loads(x) for x in (out / f"seats_{key}" / B.DOCS_NAME).read_text().splitlines() if x.strip()]


def _write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------
# 1. Resume matches saved answers on (task, sample id); a changed annotation file is another point
# ------------------------------------------------------------------------------------------------


class _Req:
    def __init__(self, *args):
        self.args = args


def _wrapper(done: dict, task_settings=None, cli_media=None):
    from evaluation.lmms_model import Runtime, SeatsOmni

    runtime = Runtime(model=None, engine=None, dims=None, task_settings=task_settings or {}, done=done,
                      progress=False, cli_media=cli_media or {})
    return SeatsOmni(runtime=runtime)


def test_resume_matches_answers_by_sample_id_not_row(data, tmp_path):
    """Answers saved for the file in one order, resumed on the same rows reordered: every answer goes
    back to its own question (a row-number match would give each one another question's answer)."""
    from evaluation.lmms_model import record_key

    fx = data["worldsense"]
    rows = B.load_annotations(fx.annotations)
    first = B.materialize({"worldsense": fx.settings()}, tmp_path / "a")[0]
    docs = _docs(tmp_path / "a", "worldsense")
    # what samples.jsonl holds after the first run: one record per answered sample
    saved = [{"task": first, "doc_id": i, "sample_id": d["_sample_id"], "occurrence": d["_occurrence"],
              "answer": f"answer to {d['question']}"} for i, d in enumerate(docs)]
    done = {record_key(r): r["answer"] for r in saved}

    reordered = _write_rows(tmp_path / "reordered.json", list(reversed(rows)))
    name = B.materialize({"worldsense": fx.settings(annotations=str(reordered))}, tmp_path / "b")[0]
    docs_b = _docs(tmp_path / "b", "worldsense")
    assert [d["_sample_id"] for d in docs_b] == [d["_sample_id"] for d in reversed(docs)]
    lm = _wrapper(done)
    lm.task_dict = {name: {"test": docs_b}}
    requests = [_Req("ctx", {}, None, i, name, "test") for i in range(len(docs_b))]
    answers = lm.generate_until(requests)  # every answer is a resumed one: no model is needed
    assert answers == [f"answer to {d['question']}" for d in docs_b]


def test_duplicate_sample_ids_resume_by_occurrence(data, tmp_path):
    fx = data["dailyomni"]
    rows = B.load_annotations(fx.annotations)
    dup = _write_rows(tmp_path / "dup.json", [rows[0], dict(rows[1], question_id=rows[0]["question_id"])])
    name = B.materialize({"d": fx.settings(annotations=str(dup))}, tmp_path / "o")[0]
    docs = _docs(tmp_path / "o", "d")
    assert [d["_occurrence"] for d in docs] == [0, 1]
    sid = docs[0]["_sample_id"]
    lm = _wrapper({(name, sid, 0): "first", (name, sid, 1): "second"})
    lm.task_dict = {name: {"test": docs}}
    assert lm.generate_until([_Req("c", {}, None, i, name, "test") for i in (1, 0)]) == ["second", "first"]


def test_changed_annotation_file_is_a_refusal_not_a_resume(data, tmp_path):
    """The annotation file's content hash is part of the point: resuming a folder after the file was
    edited (here: its rows reordered) is refused, naming the key, before any data or model work."""
    from launchers.resume import (
        RunFolderConflict,
        finished_result,
        folder_state,
        with_data_identity,
    )

    fx = data["dailyomni"]
    ann = tmp_path / "qa.json"
    shutil.copy(fx.annotations, ann)
    task = SimpleNamespace(key="dailyomni", annotations=str(ann), synthetic=None)
    rc = SimpleNamespace(benchmark=SimpleNamespace(tasks=[task]))
    config = "model: {name: tiny}\nbenchmark: {name: dailyomni}\n"
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(with_data_identity(config, rc))
    (run / "samples.jsonl").write_text(json.dumps({"task": "seats_dailyomni", "doc_id": 0, "answer": "B"}) + "\n")
    assert folder_state(run, with_data_identity(config, rc)).state == "partial"  # same file: resume

    _write_rows(ann, list(reversed(json.loads(ann.read_text()))))
    with pytest.raises(RunFolderConflict, match=r"annotations_sha256\.dailyomni"):
        finished_result(run, with_data_identity(config, rc))


# ------------------------------------------------------------------------------------------------
# 2. Rows missing required fields are per-sample errors, never scores
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scoring", ["faithful", "robust"])
def test_rows_missing_required_fields_are_errors_with_their_reason(data, tmp_path, scoring):
    fx = data["dailyomni"]
    rows = B.load_annotations(fx.annotations)
    good = rows[0]
    bad = [
        {k: v for k, v in rows[1].items() if k != "Answer"},
        {k: v for k, v in rows[2].items() if k != "Question"},
        dict(rows[3], Answer="E"),  # not one of the four options
    ]
    ann = _write_rows(tmp_path / "qa.json", [good, *bad])
    B.materialize({"d": fx.settings(annotations=str(ann))}, tmp_path / "o", scoring=scoring)
    docs = _docs(tmp_path / "o", "d")
    assert docs[0]["_problem"] is None
    assert [d["_problem"] for d in docs[1:]] == [
        "row has no 'Answer' field", "row has no 'Question' field", "answer 'E' is not one of the options A/B/C/D"]
    bound = B.BENCHMARKS["dailyomni"].utils().bind(scoring, 0)
    # an unparseable reply would score 1 against a missing gold in robust mode ("" == ""); here: errors
    recs = [bound.process_results(d, ["???"])[C.METRIC_NAME] for d in docs[1:]]
    recs.append(bound.process_results(docs[0], [good["Answer"]])[C.METRIC_NAME])
    for rec in recs[:3]:
        assert rec["score"] is None and rec["error"].startswith("bad annotation row: ") and rec["answer"] is None
    summary = B.summarize("dailyomni", recs)
    assert (summary["n_scored"], summary["n_errors"], summary["accuracy"]) == (1, 3, 100.0)
    assert sum(summary["errors"].values()) == 3


def test_a_file_where_no_row_can_be_scored_is_refused(data, tmp_path):
    fx = data["worldsense"]
    rows = [{k: v for k, v in r.items() if k != "answer"} for r in B.load_annotations(fx.annotations)]
    ann = _write_rows(tmp_path / "qa.json", rows)
    with pytest.raises(B.BenchmarkDataError, match=r"benchmark\.tasks\.worldsense\.annotations: none of the 3 rows"):
        B.materialize({"worldsense": fx.settings(annotations=str(ann))}, tmp_path / "o")
    empty = _write_rows(tmp_path / "empty.json", [])
    with pytest.raises(B.BenchmarkDataError, match="holds no rows"):
        B.materialize({"worldsense": fx.settings(annotations=str(empty))}, tmp_path / "o")


def test_bad_row_is_not_generated(data, tmp_path):
    """The model wrapper never runs a row that cannot be scored: its sample record names the reason."""
    fx = data["dailyomni"]
    rows = B.load_annotations(fx.annotations)
    ann = _write_rows(tmp_path / "qa.json", [rows[0], {k: v for k, v in rows[1].items() if k != "Answer"}])
    name = B.materialize({"d": fx.settings(annotations=str(ann))}, tmp_path / "o")[0]
    docs = _docs(tmp_path / "o", "d")
    sink = []
    lm = _wrapper({})
    lm.runtime.sink = sink.append
    reply = lm._answer("ctx", {}, lambda doc: [doc["_video_path"]], 1, name, docs[1])
    assert C.is_error(reply) and "row has no 'Answer' field" in reply
    assert sink[0]["error"] == "bad annotation row: row has no 'Answer' field" and sink[0]["answer"] is None


# ------------------------------------------------------------------------------------------------
# 3. Robust parser: the corpus; faithful parsing unchanged (tests/test_benchmarks.py)
# ------------------------------------------------------------------------------------------------


def _corpus() -> list[dict]:
    return json.loads(CORPUS.read_text(encoding="utf-8"))["cases"]


def test_robust_parser_corpus():
    cases = _corpus()
    assert len(cases) >= 60
    got = [C.robust_extract(c["reply"], C.letters_for(c["options"]), c["options"]) for c in cases]
    wrong = [(c["reply"], g, c["expected"]) for c, g in zip(cases, got) if g != c["expected"]]
    assert not wrong, wrong


def test_robust_parser_issue_examples():
    opts = ["A. A whistle", "B. A loud bounce", "C. Applause", "D. Silence"]
    assert C.robust_extract("The answer is B. Option C is incorrect.", list("ABCD"), opts) == "B"
    assert C.robust_extract("B, because option A shows silence.", list("ABCD"), opts) == "B"
    assert C.robust_extract("A is correct.", list("ABCD"), opts) == "A"


def test_robust_prediction_through_a_real_lmms_eval_task(data, tmp_path, hf_cache):
    """scoring=robust reaches the task lmms-eval loads: "The answer is B" is B there (faithful: "T")."""
    from lmms_eval.tasks import TaskManager, get_task_dict

    fx = data["worldsense"]
    preds = {}
    for scoring in ("robust", "faithful"):
        out = tmp_path / scoring
        names = B.materialize({"worldsense": fx.settings()}, out, scoring=scoring)
        task = get_task_dict(names, TaskManager(include_path=str(out), include_defaults=False))[names[0]]
        doc = list(task.test_docs())[0]
        rec = task.process_results(doc, ["The answer is B. Option C is incorrect."])[C.METRIC_NAME]
        preds[scoring] = (rec["pred"], rec["scoring"])
    assert preds == {"robust": ("B", "robust"), "faithful": ("T", "faithful")}


# ------------------------------------------------------------------------------------------------
# 4. Both entry points send the same media for the same task
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["qwen2_5_omni", "qwen3_omni"])
def test_lmms_eval_cli_path_uses_the_task_media_settings(data, tmp_path, family):
    from evaluation.media import MediaSettings

    fx = data["omnivideobench"]
    settings = fx.settings(fps=2.0, max_frames={"qwen2_5_omni": 256, "qwen3_omni": 196}, min_pixels=100,
                           max_pixels=120, total_pixels=20000, system_prompt="empty")
    name = B.materialize({"ovb": settings}, tmp_path / "o")[0]
    doc = _docs(tmp_path / "o", "ovb")[0]
    runner_side = MediaSettings(**B.media_settings(settings, family))  # what seats-exp passes in
    cli = _wrapper({}, cli_media={"fps": 2.0, "max_frames": 768})  # --model_args ... (no task settings)
    cli.runtime.family = family
    assert cli.media_settings(name, doc) == runner_side
    assert runner_side.max_frames == settings["max_frames"][family] != 768


def test_cli_model_args_apply_to_other_tasks():
    lm = _wrapper({}, cli_media={"fps": 1.0, "max_frames": 64})
    media = lm.media_settings("some_other_task", {})
    assert (media.fps, media.max_frames) == (1.0, 64)


# ------------------------------------------------------------------------------------------------
# 5. Error replies never enter lmms-eval's response cache
# ------------------------------------------------------------------------------------------------


def test_error_replies_are_not_cached_or_replayed(tmp_path):
    from lmms_eval.api.instance import Instance
    from lmms_eval.caching.response_cache import ResponseCache

    from evaluation.lmms_model import guard_response_cache

    guard_response_cache()

    class FakeLM:
        def __init__(self, reply):
            self.reply, self.calls = reply, 0

        def generate_until(self, requests):
            self.calls += len(requests)
            return [self.reply for _ in requests]

    def request():
        return Instance(request_type="generate_until", arguments=("ctx", {"max_new_tokens": 4, "temperature": 0,
                                                                          "do_sample": False}, None, 0, "seats_t", "test"),
                        idx=0, metadata={"task": "seats_t", "doc_id": 0, "repeats": 1})

    def run(reply):
        cache = ResponseCache.create(cache_root=str(tmp_path / "cache"), model="seats_omni", model_args="x",
                                     task_dict={}, world_size=1, global_rank=0)
        lm = FakeLM(reply)
        out = cache.execute(lm, "generate_until", [request()])
        cache.finalize(success=True)
        return out, lm.calls

    assert run(C.make_error("video file not found: /v.mp4")) == ([C.make_error("video file not found: /v.mp4")], 1)
    assert run("B") == (["B"], 1)  # the fixed file is really run, not replayed from the cache
    assert run("C") == (["B"], 0)  # a normal reply is cached as before


# ------------------------------------------------------------------------------------------------
# 7. Video files that cannot be used: the real cause, read with PyAV/decord
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bad_videos(tmp_path_factory):
    import av

    from evaluation.synthetic import write_clip

    d = tmp_path_factory.mktemp("bad_videos")
    one = write_clip(d / "one_frame.mp4", seconds=0.25, fps=4)
    full = write_clip(d / "full.mp4", seconds=4.0, fps=4)
    fast = d / "faststart.mp4"  # index first, so a cut file still opens
    with av.open(str(full)) as src, av.open(str(fast), "w", options={"movflags": "faststart"}) as dst:
        streams = {s.index: dst.add_stream_from_template(s) for s in src.streams}
        for packet in src.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                dst.mux(packet)
    cut = d / "cut.mp4"
    cut.write_bytes(fast.read_bytes()[: fast.stat().st_size // 2])
    tail_cut = d / "tail_cut.mp4"  # index at the end: the cut removes it
    tail_cut.write_bytes(full.read_bytes()[: full.stat().st_size * 6 // 10])
    return {"one": one, "cut": cut, "tail_cut": tail_cut, "ok": fast}


@pytest.mark.parametrize("name,message", [
    ("one", r"has 1 frame; at least 2 are needed"),
    ("cut", r"is truncated: its header declares 16 frames, only \d+ can be read"),
    ("tail_cut", r"unreadable video file .* \(truncated, corrupt or not a video; PyAV: .*Invalid data"),
])
def test_unusable_video_reports_its_real_cause(bad_videos, name, message):
    from evaluation.media import MediaError, MediaSettings, build_inputs

    class NoProcessor:  # the checks come before the processor is ever used
        def apply_chat_template(self, *a, **k):
            raise AssertionError("the processor must not be reached for an unusable file")

    with pytest.raises(MediaError, match=message) as err:
        build_inputs(NoProcessor(), "qwen2_5_omni", bad_videos[name], "q", MediaSettings.defaults("qwen2_5_omni"))
    assert "torchvision" not in str(err.value)


def test_reader_failure_is_not_hidden_by_a_torchvision_fallback(bad_videos, monkeypatch):
    """A decord failure while sampling comes back as itself; qwen-omni-utils' torchvision fallback is off."""
    from qwen_omni_utils.v2_5 import vision_process

    from evaluation import media

    calls = []

    def broken(ele):
        calls.append("decord")
        raise RuntimeError("DECORDError: cannot seek to frame 12")

    monkeypatch.setitem(vision_process.VIDEO_READER_BACKENDS, "decord", broken)
    monkeypatch.setitem(vision_process.VIDEO_READER_BACKENDS, "torchvision",
                        lambda ele: calls.append("torchvision") or (_ for _ in ()).throw(AttributeError("read_video")))

    class Processor:
        def apply_chat_template(self, *a, **k):
            return "text"

    with pytest.raises(media.MediaError, match=r"could not decode the frames of .*DECORDError: cannot seek") as err:
        media.build_inputs(Processor(), "qwen2_5_omni", bad_videos["ok"], "q", media.MediaSettings.defaults("qwen2_5_omni"))
    assert calls == ["decord"] and "read_video" not in str(err.value)


# ------------------------------------------------------------------------------------------------
# Bad inputs through the real commands: one clear line, exit 2
# ------------------------------------------------------------------------------------------------


def _env():
    return {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HYDRA_"))} | {
        "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}


def _cmd(exe: Path, tmp_path: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(exe), *args], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=timeout)


def _one_line(proc) -> str:
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return lines[-1] if lines else ""


@pytest.mark.parametrize("args,message", [
    (["benchmark.limit=abc"], "benchmark.limit='abc' is not a whole number >= 1 or null"),
    (["eval.max_new_tokens_override=abc"], "eval.max_new_tokens_override='abc' is not a whole number >= 1 or null"),
    (["benchmark.tasks.synthetic.fps=abc"], "benchmark.tasks.synthetic.fps='abc' is not a positive number"),
    (["benchmark.tasks.synthetic.max_frames.qwen2_5_omni=many"],
     "benchmark.tasks.synthetic.max_frames.qwen2_5_omni='many' is not a whole number >= 2"),
    (["benchmark.tasks.synthetic.total_pixels=1.5"], "benchmark.tasks.synthetic.total_pixels=1.5 is not a whole number >= 1"),
    (["benchmark.tasks.synthetic.task=nosuch"], "benchmark.tasks.synthetic.task='nosuch' is not allowed; choose one of: "
                                                "dailyomni, lvomnibench, omnivideobench, videomme, worldsense"),
], ids=["limit", "max_new_tokens", "fps", "max_frames", "pixels", "template"])
def test_seats_exp_bad_typed_setting_is_one_line(tmp_path, args, message):
    proc = _cmd(SEATS_EXP, tmp_path, f"paths.root={tmp_path}", *args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = _one_line(proc)
    assert last == f"seats-exp: configuration error: {message}", last
    assert not (tmp_path / "data").exists()


def _dailyomni_args(tmp_path: Path, annotations: Path) -> list[str]:
    videos = tmp_path / "videos"
    videos.mkdir(exist_ok=True)
    return [f"paths.root={tmp_path}", "benchmark=dailyomni", f"benchmark.tasks.dailyomni.annotations={annotations}",
            f"benchmark.tasks.dailyomni.video_root={videos}"]


def test_seats_exp_empty_annotation_list(tmp_path):
    ann = _write_rows(tmp_path / "qa.json", [])
    proc = _cmd(SEATS_EXP, tmp_path, *_dailyomni_args(tmp_path, ann))
    assert proc.returncode == 2
    assert _one_line(proc) == f"seats-exp: benchmark.tasks.dailyomni.annotations: {ann} holds no rows"


def test_seats_exp_unscorable_annotation_file(tmp_path, data):
    rows = [{k: v for k, v in r.items() if k != "Answer"} for r in B.load_annotations(data["dailyomni"].annotations)]
    ann = _write_rows(tmp_path / "qa.json", rows)
    proc = _cmd(SEATS_EXP, tmp_path, *_dailyomni_args(tmp_path, ann))
    assert proc.returncode == 2
    assert _one_line(proc).startswith(f"seats-exp: benchmark.tasks.dailyomni.annotations: none of the 4 rows of {ann} "
                                      "can be scored (row has no 'Answer' field)")


def _read_only_dir(path: Path):
    """A folder nobody can write into, or skip: root ignores permission bits, so it gets a read-only bind mount."""
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        return lambda: path.chmod(0o755)
    mount = shutil.which("mount")
    if mount is None or subprocess.run([mount, "--bind", "-o", "ro", str(path), str(path)],
                                       capture_output=True).returncode != 0:
        pytest.skip("cannot make a read-only folder as root here (no bind mount)")
    return lambda: subprocess.run(["umount", str(path)], check=True)


def test_seats_exp_read_only_synthetic_root(tmp_path):
    ro = tmp_path / "ro"
    restore = _read_only_dir(ro)
    try:
        proc = _cmd(SEATS_EXP, tmp_path, f"paths.root={tmp_path}", f"paths.data_root={ro}")
    finally:
        restore()
    assert proc.returncode == 2
    last = _one_line(proc)
    why = "Read-only file system" if os.geteuid() == 0 else "Permission denied"
    assert last == (f"seats-exp: benchmark.tasks.synthetic.video_root={ro}/synthetic: cannot write the synthetic set "
                    f"there ({why}); set paths.data_root (or paths.root) to a writable folder"), last


@pytest.mark.parametrize("arg,message", [
    ("method=nosuch", "Could not find 'method/nosuch'"),
    ("nosuchkey=1", "Could not override 'nosuchkey'"),
    ("seed=[1", "no viable alternative at input '[1'"),
], ids=["option", "key", "syntax"])
def test_sweep_list_bad_override_is_one_line(tmp_path, arg, message):
    proc = _cmd(SWEEP_LIST, tmp_path, "experiment=smoke", f"paths.root={tmp_path}", arg, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = _one_line(proc)
    assert last.startswith("seats-exp-sweep-list: bad override: ") and message in last, last
    assert len([ln for ln in proc.stderr.splitlines() if ln.strip()]) == 1


@pytest.mark.slow
def test_ctrl_c_marks_the_run_folder_interrupted_and_says_how_to_resume(tmp_path):
    """SIGINT while samples are being generated: the recorded samples stay, no result.json, the folder is
    marked interrupted, and the message names the command that resumes it (which then completes)."""
    run_dir = tmp_path / "run"
    args = [f"paths.root={tmp_path}", "eval.progress=false", "eval.max_new_tokens_override=2",
            "benchmark.tasks.synthetic.synthetic.num_clips=4", f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen([str(SEATS_EXP), *args], cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    samples = run_dir / "samples.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not (samples.exists() and samples.read_text().strip()):
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err
    last = [ln for ln in err.splitlines() if ln.strip()][-1]
    kept = [json.loads(x) for x in samples.read_text().splitlines() if x.strip()]
    assert kept and last.startswith(f"seats-exp: interrupted: {len(kept)} answered sample(s) kept in {run_dir} "
                                    "(no result.json); resume with: seats-exp "), last
    assert not (run_dir / "result.json").exists()
    marker = json.loads((run_dir / "interrupted.json").read_text())
    assert marker["answered_samples"] == len(kept) and f"hydra.run.dir={run_dir}" in marker["resume"]

    again = _cmd(SEATS_EXP, tmp_path, *args)  # the printed resume command: same arguments, same folder
    assert again.returncode == 0, again.stderr[-3000:]
    result = json.loads((run_dir / "result.json").read_text())
    assert result["n_samples"] == 4 and not (run_dir / "interrupted.json").exists()
    records = [json.loads(x) for x in samples.read_text().splitlines() if x.strip()]
    assert {r["sample_id"] for r in records[: len(kept)]} == {r["sample_id"] for r in kept}
    assert len(records) == 4  # the kept samples were not generated again
