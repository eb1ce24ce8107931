"""Config composition and the ``seats-exp`` command line, without loading a model.

Every option of every config group is composed with Hydra's compose API and validated by
``seats_exp.config.validate`` (the check a run does before any weight loads); resolved values are
compared with the numbers of the spec.  Bad inputs go through the real ``seats-exp`` command in a
subprocess: each must end with one clear line naming the key and a non-zero exit code.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from seats_exp.config import ConfigError, build_selector_for, validate

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"
SEATS_EXP = Path(sys.executable).with_name("seats-exp")


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


MODELS = ["tiny_qwen2_5_omni", "tiny_qwen3_omni", "qwen2_5_omni_3b", "qwen2_5_omni_7b", "qwen3_omni_30b_a3b"]
FAMILY = {"tiny_qwen2_5_omni": "qwen2_5_omni", "tiny_qwen3_omni": "qwen3_omni", "qwen2_5_omni_3b": "qwen2_5_omni",
          "qwen2_5_omni_7b": "qwen2_5_omni", "qwen3_omni_30b_a3b": "qwen3_omni"}
LAYERS = {"tiny_qwen2_5_omni": 8, "tiny_qwen3_omni": 8, "qwen2_5_omni_3b": 36, "qwen2_5_omni_7b": 28,
          "qwen3_omni_30b_a3b": 48}
CHECKPOINT = {"qwen2_5_omni_3b": "Qwen/Qwen2.5-Omni-3B", "qwen2_5_omni_7b": "Qwen/Qwen2.5-Omni-7B",
              "qwen3_omni_30b_a3b": "Qwen/Qwen3-Omni-30B-A3B-Instruct"}
# Spec (design.md section 5 / seats-reference): (video, audio) retention per family and budget.
SCHEDULES = {
    "r35": {"qwen2_5_omni": (0.30, 0.65), "qwen3_omni": (0.32, 0.70)},
    "r25": {"qwen2_5_omni": (0.20, 0.55), "qwen3_omni": (0.22, 0.60)},
    "r15": {"qwen2_5_omni": (0.10, 0.45), "qwen3_omni": (0.12, 0.50)},
    "r10": {"qwen2_5_omni": (0.06, 0.35), "qwen3_omni": (0.07, 0.45)},
    "full": {"qwen2_5_omni": (1.0, 1.0), "qwen3_omni": (1.0, 1.0)},
}
# SEATS per-model defaults resolved from the model (conf/method/seats.yaml comments).
SEATS_LAYERS = {"tiny_qwen2_5_omni": ([3, 4, 5], 7, 0.1), "tiny_qwen3_omni": ([3, 4, 5], 7, 0.3),
                "qwen2_5_omni_3b": ([21, 23, 26], 31, 0.1), "qwen2_5_omni_7b": ([16, 18, 20], 24, 0.1),
                "qwen3_omni_30b_a3b": ([27, 31, 35], 40, 0.3)}
# Single-benchmark files: task key -> annotation path under data_root, max_frames per family,
# system prompt, max_new_tokens (conf/benchmark/task/*.yaml, spec section 14).
BENCHMARKS = {
    "dailyomni": ("Daily-Omni/qa.json", {"qwen2_5_omni": 128, "qwen3_omni": 128}, "persona", 32),
    "worldsense": ("WorldSense/worldsense_qa.json", {"qwen2_5_omni": 128, "qwen3_omni": 128}, "persona", 1024),
    "omnivideobench": ("OmniVideoBench/omnivideobench.json", {"qwen2_5_omni": 256, "qwen3_omni": 196}, "empty", 32),
    "videomme": ("Video-MME/videomme/test-00000-of-00001.parquet", {"qwen2_5_omni": 768, "qwen3_omni": 196}, "empty", 16),
    "lvomnibench": ("LVOmniBench/lvomnibench.json", {"qwen2_5_omni": 768, "qwen3_omni": 196}, "empty", 32),
}
ROOT = "/tmp/seats-compose-root"  # never created: compose and validate(check_data=False) do not touch it


@pytest.fixture(scope="module")
def hydra_conf():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield


def _compose(*overrides: str, root: str | None = ROOT):
    extra = [f"paths.root={root}"] if root else []
    return compose("config", overrides=[*extra, *overrides])


def _rc(*overrides: str, check_data: bool = False):
    return validate(_compose(*overrides), check_data=check_data)


# ------------------------------------------------------------------------------------------------
# Defaults and paths
# ------------------------------------------------------------------------------------------------


def test_groups_on_disk_are_the_documented_ones():
    for group, required in {"model": MODELS, "schedule": [*SCHEDULES, "custom"], "logger": ["none", "wandb"],
                            "paths": ["default"], "benchmark": [*BENCHMARKS, "omni5", "synthetic"],
                            "method": ["full_tokens", "random", "seats"]}.items():
        assert set(required) <= set(_options(group)), (group, _options(group))


def test_defaults_are_the_walking_skeleton(hydra_conf):
    rc = _rc()
    assert rc.mode == "run" and rc.seed == 0
    assert (rc.model.name, rc.model.family, rc.model.tiny, rc.model.dtype) == ("tiny_qwen2_5_omni", "qwen2_5_omni", True, "float32")
    assert rc.method.name == "full_tokens" and rc.method.params == {}
    assert (rc.schedule.name, rc.schedule.video, rc.schedule.audio) == ("r35", 0.30, 0.65)
    assert rc.benchmark.name == "synthetic" and [t.key for t in rc.benchmark.tasks] == ["synthetic"]
    assert rc.logger.name == "none"
    assert rc.kv_scope == "all_executed" and rc.fidelity is False and rc.max_new_tokens_override is None
    assert rc.run_name == "tiny_qwen2_5_omni.full_tokens.r35.synthetic"


def test_default_paths_follow_the_launch_folder(hydra_conf):
    cfg = compose("config", return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # what @hydra.main does: ${hydra:runtime.cwd} resolves
    try:
        cwd = cfg.hydra.runtime.cwd
        assert cwd == os.getcwd()
        paths = OmegaConf.to_container(cfg.paths, resolve=True)
        assert paths == {"root": cwd, "data_root": f"{cwd}/data", "model_root": f"{cwd}/data/models",
                         "output_root": f"{cwd}/outputs"}
        assert cfg.model.checkpoint == f"{cwd}/data/models/tiny_qwen2_5_omni"
        assert cfg.hydra.run.dir.startswith(f"{cwd}/outputs/runs/")
        assert cfg.hydra.run.dir.endswith("_tiny_qwen2_5_omni.full_tokens.r35.synthetic")
        assert cfg.hydra.job.chdir is False
    finally:
        HydraConfig.instance().cfg = None


def test_paths_root_moves_data_models_and_outputs(hydra_conf):
    cfg = _compose(root="/srv/x")
    rc = validate(cfg, check_data=False)
    assert rc.paths == {"root": "/srv/x", "data_root": "/srv/x/data", "model_root": "/srv/x/data/models",
                        "output_root": "/srv/x/outputs"}
    assert rc.model.checkpoint == "/srv/x/data/models/tiny_qwen2_5_omni"
    task = rc.benchmark.tasks[0]
    assert task.annotations == "/srv/x/data/synthetic/qa.json" and task.video_root == "/srv/x/data/synthetic"
    # Each root can also be moved on its own.
    rc = _rc("paths.data_root=/data/bench", "paths.model_root=/models")
    assert rc.model.checkpoint == "/models/tiny_qwen2_5_omni"
    assert rc.benchmark.tasks[0].annotations == "/data/bench/synthetic/qa.json"
    assert rc.paths["output_root"] == f"{ROOT}/outputs"


# ------------------------------------------------------------------------------------------------
# model x method x schedule
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_model_options(hydra_conf, model):
    rc = _rc(f"model={model}")
    assert rc.model.name == model and rc.model.family == FAMILY[model]
    assert rc.model.num_layers == LAYERS[model]
    if model.startswith("tiny_"):
        assert rc.model.tiny and rc.model.dtype == "float32"
        assert rc.model.checkpoint == f"{ROOT}/data/models/{model}"
    else:
        assert not rc.model.tiny and rc.model.dtype == "bfloat16"
        assert rc.model.checkpoint == CHECKPOINT[model]
    assert {"hidden", "heads", "kv_heads", "head_dim", "intermediate", "vocab"} <= set(rc.model.dims)
    assert rc.model.dims["heads"] % rc.model.dims["kv_heads"] == 0


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("method", _options("method"))
def test_every_model_method_schedule_composes(hydra_conf, model, method, schedule):
    overrides = [f"model={model}", f"method={method}", f"schedule={schedule}"]
    if method == "seats" and schedule == "full":
        # Faithful SEATS: Stage I keeps encoder_ratio_scale x ratio, > 1 at full retention -> a config error.
        with pytest.raises(ConfigError, match=r"method\.encoder_ratio_scale"):
            _rc(*overrides)
        overrides.append("method.clamp_encoder_ratio=true")
    if method == "dycoke" and SCHEDULES[schedule][FAMILY[model]][0] < 0.25:
        # TTM alone keeps at least 25 % of the video: a lower target is a config error naming the range
        with pytest.raises(ConfigError, match=r"outside the range TTM can reach, \[0.25, 1\]"):
            _rc(*overrides)
        overrides.append("method.ttm_k=0.7")  # an explicit K (DyCoke's paper setting) composes anywhere
    if method == "omnizip" and not 0.25 <= SCHEDULES[schedule][FAMILY[model]][0] <= 0.65:
        # OmniZip's per-window clamps bound the video retention: outside it is a config error naming the range
        with pytest.raises(ConfigError, match=r"reachable video retention \[0.25, 0.65\]"):
            _rc(*overrides)
        overrides.append("method.clamp=true")  # runs at the nearest reachable pair
    rc = _rc(*overrides)
    assert rc.method.name == method
    assert (rc.schedule.name, rc.schedule.video, rc.schedule.audio) == (schedule, *SCHEDULES[schedule][FAMILY[model]])
    assert build_selector_for(rc).describe()["name"] == method
    assert rc.run_name == f"{model}.{method}.{schedule}.synthetic"


@pytest.mark.parametrize("family_model,expected", [("qwen2_5_omni_7b", (0.06, 0.35)), ("qwen3_omni_30b_a3b", (0.07, 0.45)),
                                                   ("tiny_qwen2_5_omni", (0.06, 0.35)), ("tiny_qwen3_omni", (0.07, 0.45))])
def test_schedule_r10_resolves_by_family(hydra_conf, family_model, expected):
    rc = _rc(f"model={family_model}", "schedule=r10")
    assert (rc.schedule.video, rc.schedule.audio) == expected


@pytest.mark.parametrize("model", MODELS)
def test_seats_defaults_resolve_from_the_model(hydra_conf, model):
    layers, late, temperature = SEATS_LAYERS[model]
    described = build_selector_for(_rc(f"model={model}", "method=seats", "schedule=r10")).describe()
    assert described["drop_layers"] == layers
    assert described["late_block_layer"] == late
    assert described["temperature"] == temperature
    assert described["num_layers"] == LAYERS[model]


def test_custom_schedule(hydra_conf):
    rc = _rc("model=qwen3_omni_30b_a3b", "schedule=custom", "schedule.video=0.2", "schedule.audio=0.5")
    assert (rc.schedule.name, rc.schedule.video, rc.schedule.audio) == ("custom", 0.2, 0.5)
    rc = _rc("schedule=custom", "schedule.video=1", "schedule.audio=1.0")  # 1 is inside (0, 1]
    assert (rc.schedule.video, rc.schedule.audio) == (1.0, 1.0)
    with pytest.raises(ConfigError, match=r"schedule\.video must be set"):
        _rc("schedule=custom")


@pytest.mark.parametrize("key,value", [("video", "1.5"), ("video", "0"), ("audio", "-0.1"), ("audio", "1.01")])
def test_ratio_outside_unit_interval_is_a_config_error(hydra_conf, key, value):
    other = "audio" if key == "video" else "video"
    with pytest.raises(ConfigError, match=rf"schedule\.{key}=.* is outside \(0, 1\]"):
        _rc("schedule=custom", f"schedule.{key}={value}", f"schedule.{other}=0.5")


def test_family_ratio_override_outside_unit_interval(hydra_conf):
    with pytest.raises(ConfigError, match=r"schedule\.qwen3_omni\.audio=1\.2 is outside"):
        _rc("model=tiny_qwen3_omni", "schedule=r10", "schedule.qwen3_omni.audio=1.2")


def test_method_knob_override(hydra_conf):
    rc = _rc("model=qwen2_5_omni_7b", "method=seats", "schedule=r25", "method.drop_layers=[10,12,14]")
    assert build_selector_for(rc).describe()["drop_layers"] == [10, 12, 14]


# ------------------------------------------------------------------------------------------------
# benchmark, logger, experiment
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(BENCHMARKS))
@pytest.mark.parametrize("model", ["qwen2_5_omni_7b", "qwen3_omni_30b_a3b"])
def test_single_benchmark_options(hydra_conf, name, model):
    annotations, max_frames, system_prompt, max_new = BENCHMARKS[name]
    rc = _rc(f"benchmark={name}", f"model={model}")
    assert rc.benchmark.name == name and rc.benchmark.scoring == "faithful" and rc.benchmark.limit is None
    (task,) = rc.benchmark.tasks
    assert (task.key, task.task) == (name, name)
    assert task.annotations == f"{ROOT}/data/{annotations}"
    assert task.video_root == f"{ROOT}/data/{annotations.split('/')[0]}"
    assert task.max_frames == max_frames and task.fps == 2
    assert task.system_prompt == system_prompt
    assert task.generation["max_new_tokens"] == max_new and task.generation["do_sample"] is False
    assert task.synthetic is None
    assert rc.run_name == f"{model}.full_tokens.r35.{name}"


def test_omni5_has_the_five_benchmarks(hydra_conf):
    rc = _rc("benchmark=omni5", "model=qwen2_5_omni_7b", "method=seats", "schedule=r10")
    assert rc.benchmark.name == "omni5"
    assert [t.key for t in rc.benchmark.tasks] == list(BENCHMARKS)
    for task in rc.benchmark.tasks:
        annotations, max_frames, system_prompt, max_new = BENCHMARKS[task.key]
        assert task.task == task.key and task.annotations == f"{ROOT}/data/{annotations}"
        assert task.max_frames == max_frames and task.system_prompt == system_prompt
        assert task.generation["max_new_tokens"] == max_new


def test_synthetic_benchmark(hydra_conf):
    rc = _rc("benchmark=synthetic", "benchmark.limit=3")
    (task,) = rc.benchmark.tasks
    assert (task.key, task.task, task.system_prompt) == ("synthetic", "dailyomni", "persona")
    assert task.synthetic == {"num_clips": 6, "seed": 0, "seconds": 4.0, "fps": 4, "width": 112, "height": 112}
    assert rc.benchmark.limit == 3
    # The synthetic set is generated on first use, so a run needs no data on disk.
    validate(_compose(root="/nonexistent/root"), check_data=True)


def test_benchmark_task_paths_can_be_overridden(hydra_conf):
    rc = _rc("benchmark=dailyomni", "benchmark.tasks.dailyomni.annotations=/mine/qa.json",
             "benchmark.tasks.dailyomni.video_root=/mine")
    assert (rc.benchmark.tasks[0].annotations, rc.benchmark.tasks[0].video_root) == ("/mine/qa.json", "/mine")


def test_missing_data_root_is_a_config_error(hydra_conf):
    with pytest.raises(ConfigError, match=r"benchmark\.tasks\.dailyomni\.annotations=/nonexistent/Daily-Omni/qa\.json does not exist"):
        validate(_compose("benchmark=dailyomni", "paths.data_root=/nonexistent"), check_data=True)
    # plan mode needs no data
    validate(_compose("benchmark=dailyomni", "paths.data_root=/nonexistent", "mode=plan"), check_data=True)


def test_existing_annotations_but_missing_video_root(hydra_conf, tmp_path):
    qa = tmp_path / "qa.json"
    qa.write_text("[]")
    with pytest.raises(ConfigError, match=r"benchmark\.tasks\.dailyomni\.video_root=.* is not a folder"):
        validate(_compose("benchmark=dailyomni", f"benchmark.tasks.dailyomni.annotations={qa}",
                          f"benchmark.tasks.dailyomni.video_root={tmp_path}/videos"), check_data=True)


@pytest.mark.parametrize("logger", ["none", "wandb"])
def test_logger_options(hydra_conf, logger):
    rc = _rc(f"logger={logger}", "method=seats", "schedule=r10")
    assert rc.logger.name == logger
    if logger == "wandb":
        assert (rc.logger.mode, rc.logger.project, rc.logger.group) == ("auto", "seats-exp", "adhoc")
        assert rc.logger.job_type == "seats"
        assert rc.logger.tags == ["model=tiny_qwen2_5_omni", "schedule=r10", "benchmark=synthetic", "method=seats"]
        assert rc.logger.run_name == rc.run_name == "tiny_qwen2_5_omni.seats.r10.synthetic"
        assert rc.logger.log_samples_table is True
        assert _rc("logger=wandb", "logger.mode=offline").logger.mode == "offline"
        with pytest.raises(ConfigError, match=r"logger\.mode='sometimes'"):
            _rc("logger=wandb", "logger.mode=sometimes")


@pytest.mark.parametrize("experiment", _options("experiment") or [pytest.param(None, marks=pytest.mark.skip(reason="no experiment files yet"))])
def test_experiment_options(hydra_conf, experiment):
    cfg = _compose(f"experiment={experiment}", "logger=wandb")
    rc = validate(cfg, check_data=False)
    assert rc.method.name and rc.benchmark.tasks
    if cfg.get("experiment_name"):
        assert rc.logger.group == cfg.experiment_name  # W&B groups runs by experiment


def test_unknown_group_option_is_rejected_by_hydra(hydra_conf):
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match="method/nope"):
        _compose("method=nope")


def test_other_invalid_values(hydra_conf):
    with pytest.raises(ConfigError, match=r"eval\.batch_size=2"):
        _rc("eval.batch_size=2")
    with pytest.raises(ConfigError, match=r"model\.dtype='fp8'"):
        _rc("model.dtype=fp8")
    with pytest.raises(ConfigError, match=r"engine\.kv_scope"):
        _rc("engine.kv_scope=some")
    with pytest.raises(ConfigError, match=r"benchmark\.limit=0"):
        _rc("benchmark.limit=0")
    with pytest.raises(ConfigError, match=r"mode='train'"):
        _rc("mode=train")
    with pytest.raises(ConfigError, match=r"model has unknown keys \['checkpiont'\]"):
        _rc("+model.checkpiont=/x")


# ------------------------------------------------------------------------------------------------
# The seats-exp command: bad inputs end with one clear line
# ------------------------------------------------------------------------------------------------


def _seats_exp(tmp_path: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HYDRA_"))}
    return subprocess.run([str(SEATS_EXP), f"paths.root={tmp_path}", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def test_cli_unknown_group_option_lists_the_options(tmp_path):
    proc = _seats_exp(tmp_path, "method=nope")
    assert proc.returncode != 0
    assert "Could not find 'method/nope'" in proc.stderr
    listed = proc.stderr.split("Available options in 'method':", 1)[1]
    for option in _options("method"):
        assert f"\t{option}\n" in listed
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("args,message", [
    (["schedule=custom", "schedule.video=1.5"], "schedule.video=1.5 is outside (0, 1]"),
    (["benchmark=dailyomni", "paths.data_root=/nonexistent"],
     "benchmark.tasks.dailyomni.annotations=/nonexistent/Daily-Omni/qa.json does not exist"),
    (["eval.batch_size=2"], "eval.batch_size=2: token selection runs one sample at a time"),
    (["model=qwen2_5_omni_7b", "method=seats", "method.drop_layers=[16,18,40]"], "method.drop_layers"),
], ids=["ratio", "data_root", "batch_size", "drop_layer"])
def test_cli_config_errors_are_one_line(tmp_path, args, message):
    proc = _seats_exp(tmp_path, *args)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = _last_line(proc.stderr)
    assert last.startswith("seats-exp: configuration error: ") and message in last, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    # Hydra makes the run folder (its .hydra/ and log) before main; nothing of a run may follow.
    made = {p.name for p in (tmp_path / "outputs").rglob("*") if p.parent.name != ".hydra"}
    assert not made & {"config.yaml", "result.json", "samples.jsonl", "tasks"}, made
    assert not (tmp_path / "data").exists(), "validation must fail before data are generated"


@pytest.fixture(scope="module")
def missing_checkpoint_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("missing_ckpt")
    return _seats_exp(tmp, "model=qwen2_5_omni_7b", "model.checkpoint=/nonexistent/ckpt", "eval.progress=false")


def test_cli_missing_checkpoint_fails_naming_model_checkpoint(missing_checkpoint_run):
    proc = missing_checkpoint_run
    assert proc.returncode != 0
    assert "model.checkpoint='/nonexistent/ckpt' does not exist" in proc.stderr
    assert "output folder:" not in proc.stdout


def test_cli_missing_checkpoint_is_one_clear_line(missing_checkpoint_run):
    proc = missing_checkpoint_run
    assert "Traceback" not in proc.stderr
    last = _last_line(proc.stderr)
    assert last.startswith("seats-exp: ") and "model.checkpoint='/nonexistent/ckpt' does not exist" in last


def test_cli_plan_json(tmp_path):
    proc = _seats_exp(tmp_path, "mode=plan", "model=qwen2_5_omni_7b", "method=full_tokens", "plan.json=true")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stdout[:2000]
    plan = json.loads(lines[0])
    assert isinstance(plan, dict)
    assert {"layers", "flops", "flops_full", "flops_ratio"} <= set(plan)
    assert plan["model"] == "qwen2_5_omni_7b" and plan["method"] == "full_tokens"
    assert len(plan["layers"]) == 28
    first = plan["layers"][0]
    assert all(layer == {**first, "layer": i + 1} for i, layer in enumerate(plan["layers"]))  # nothing pruned
    assert plan["flops"] == plan["flops_full"] > 0 and plan["flops_ratio"] == 1.0
    assert not (tmp_path / "data").exists(), "plan mode loads no weights and needs no data"
