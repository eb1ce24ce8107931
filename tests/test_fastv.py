"""FastV and FastV-om (seats-reference 12.3, baselines-reference 2.2): budgets, hand-worked
selections, the negative setting ratio (reported or an error), plan mode and a tiny-model run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from methods import MethodConfigError, ModelInfo, build_selector
from methods.fastv import fastv_keep_count
from seats_exp.selection import AUDIO, TEXT, VIDEO, PlanInput, SelectionContext

SEATS_EXP = Path(sys.executable).with_name("seats-exp")
QWEN25 = ModelInfo("qwen2_5_omni_7b", "qwen2_5_omni", 28, 25.0)
QWEN3 = ModelInfo("qwen3_omni_30b_a3b", "qwen3_omni", 48, 13.0)
DEFAULTS = {"fastv_k": 2, "score_layer": "self", "negative_setting": "keep_one", "score_dtype": "model"}


def _info(num_layers: int) -> ModelInfo:
    return ModelInfo("custom", "qwen2_5_omni", num_layers, 25.0)


def _ctx(layout: str, scores: list[float], num_layers: int, seed: int = 0, calls: list | None = None) -> SelectionContext:
    """A context over ``layout`` (t/v/a per token) whose score_last_text returns ``scores``."""
    code = {"t": TEXT, "v": VIDEO, "a": AUDIO}
    modality = torch.tensor([code[c] for c in layout])
    n = len(layout)
    gen = torch.Generator().manual_seed(seed)

    def score_last_text(module_index, hidden, score_dtype=None):
        if calls is not None:
            calls.append(module_index if score_dtype is None else (module_index, score_dtype))
        return torch.tensor(scores, dtype=score_dtype or torch.float32)

    return SelectionContext(modality=modality, original_index=torch.arange(n), position_ids=torch.zeros(3, n, dtype=torch.long),
                            token_time=torch.zeros(n), video_grid_thw=None, video_tokens_per_grid=0, seconds_per_grid=1.0,
                            audio_tokens_per_second=25.0, num_layers=num_layers, family="qwen2_5_omni",
                            generator=gen, score_last_text=score_last_text)


def _kept(selection, layout: str, code: str) -> list[int]:
    """Ordinals (within the modality) of the kept tokens."""
    ordinals = [i for i, c in enumerate(layout) if c == code]
    return [k for k, i in enumerate(ordinals) if bool(selection.keep[i])]


# ---------------------------------------------------------------------------------------------
# budgets
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("model,pairs", [
    (QWEN25, {(0.30, 0.65): (0.246154, 0.623077), (0.20, 0.55): (0.138462, 0.515385),
              (0.10, 0.45): (0.030769, 0.407692), (0.06, 0.35): (-0.012308, 0.300000)}),
    (QWEN3, {(0.32, 0.70): (0.290435, 0.686957), (0.22, 0.60): (0.186087, 0.582609),
             (0.12, 0.50): (0.081739, 0.478261), (0.07, 0.45): (0.029565, 0.426087)}),
], ids=["qwen2_5_28_layers", "qwen3_48_layers"])
@pytest.mark.parametrize("method", ["fastv", "fastv_omni"])
def test_setting_ratios_use_the_model_depth(method, model, pairs):
    """seats-reference 12.3's conversion tables, through the method builders."""
    for (v, a), (sv, sa) in pairs.items():
        described = build_selector(method, {}, v, a, model).describe()
        assert (round(described["setting_ratio"]["video"], 6), round(described["setting_ratio"]["audio"], 6)) == (sv, sa)
        assert described["num_layers"] == model.num_layers and described["fastv_k"] == 2


def test_spec_reallocation_example_through_fastv():
    """seats-reference 12: Nv=4320, Na=750, (0.30, 0.65) -> setting (0.24615, 0.62308) -> (0.18056, 1.0)."""
    selector = build_selector("fastv", {}, 0.30, 0.65, QWEN25)
    video, audio, rv, ra = selector.keep_counts(4320, 750, 28)
    assert (round(rv, 5), ra) == (0.18056, 1.0)
    assert (video, audio) == (round(rv * 4320), 750) == (780, 750)
    omni = build_selector("fastv_omni", {}, 0.30, 0.65, QWEN25)
    assert omni.keep_counts(4320, 750, 28)[:2] == (round(0.24615384615384617 * 4320), round(0.6230769230769231 * 750)) == (1063, 467)


def test_keep_count_is_max_one_round():
    assert fastv_keep_count(0.5, 5) == 2  # round(2.5) = 2 (half to even)
    assert fastv_keep_count(0.7, 5) == 4  # round(3.5) = 4
    assert fastv_keep_count(-0.012308, 9216) == 1  # negative setting: one token survives
    assert fastv_keep_count(0.0001, 100) == 1
    assert fastv_keep_count(0.3, 0) == 0


# ---------------------------------------------------------------------------------------------
# hand-worked selections
# ---------------------------------------------------------------------------------------------

# 8 layers, K=2: average 0.625 -> setting (0.625*8 - 2)/6 = 0.5
LAYOUT = "tvvvvvvaaaat"
VIDEO_SCORES = [0.1, 0.5, 0.3, 0.5, 0.05, 0.2]
AUDIO_SCORES = [0.2, 0.9, 0.1, 0.9]
SCORES = [0.0, *VIDEO_SCORES, *AUDIO_SCORES, 0.0]


def test_fastv_omni_keeps_the_top_n_of_both():
    """s = 0.5: video keeps round(3.0) = 3 -> 0.5 (#1), 0.5 (#3, tie: lower index first), 0.3 (#2);
    audio keeps round(2.0) = 2 -> #1, #3."""
    calls = []
    selector = build_selector("fastv_omni", {}, 0.625, 0.625, _info(8))
    assert selector.hook_layers(8) == {2}
    selection = selector.after_layer(2, torch.zeros(len(LAYOUT), 4), _ctx(LAYOUT, SCORES, 8, calls=calls))
    assert _kept(selection, LAYOUT, "v") == [1, 2, 3]
    assert _kept(selection, LAYOUT, "a") == [1, 3]
    assert bool(selection.keep[0]) and bool(selection.keep[-1])  # text stays
    assert calls == [1]  # score_layer=self: module K-1 = 1 (0-based) scores its own output


def test_fastv_reallocates_to_audio_intact():
    """setting (0.5, 0.5), V=6, A=4: total = floor(3 + 2) = 5 -> video (5-4)/6 = 0.1667, audio 1.0:
    video keeps max(1, round(1.0)) = 1 -> #1 (first of the two 0.5); all audio survives."""
    selector = build_selector("fastv", {}, 0.625, 0.625, _info(8))
    selection = selector.after_layer(2, torch.zeros(len(LAYOUT), 4), _ctx(LAYOUT, SCORES, 8))
    assert _kept(selection, LAYOUT, "v") == [1]
    assert _kept(selection, LAYOUT, "a") == [0, 1, 2, 3]


def test_score_layer_next_uses_the_next_module():
    calls = []
    selector = build_selector("fastv_omni", {"score_layer": "next"}, 0.625, 0.625, _info(8))
    selector.after_layer(2, torch.zeros(len(LAYOUT), 4), _ctx(LAYOUT, SCORES, 8, calls=calls))
    assert calls == [2]


def test_score_dtype_float32_asks_the_engine_for_float32_scores():
    calls = []
    selector = build_selector("fastv_omni", {"score_dtype": "float32"}, 0.625, 0.625, _info(8))
    selector.after_layer(2, torch.zeros(len(LAYOUT), 4), _ctx(LAYOUT, SCORES, 8, calls=calls))
    assert calls == [(1, torch.float32)]  # the default (model dtype) passes no score_dtype: see calls == [1] above


def test_fastv_drops_audio_at_random_only_when_the_reallocation_clamps():
    """8 layers: averages (0.26, 0.5) -> settings (0.013333, 0.333333); V=100, A=50:
    total = floor(1.333 + 16.667) = 18 -> video clamps at 0.05, audio (18 - 5)/50 = 0.26:
    video keeps round(5.0) = 5 by score, audio keeps round(13.0) = 13 *random* tokens (seeded)."""
    layout = "t" + "v" * 100 + "a" * 50 + "t"
    video_scores = [float(i) for i in range(100)]  # the last five score highest
    audio_scores = [float(i) for i in range(50)]  # top-13 by score would be 37..49
    scores = [0.0, *video_scores, *audio_scores, 0.0]
    selector = build_selector("fastv", {}, 0.26, 0.5, _info(8))
    _, _, rv, ra = selector.keep_counts(100, 50, 8)
    assert rv == 0.05 and ra == pytest.approx(0.26)
    first = selector.after_layer(2, torch.zeros(len(layout), 4), _ctx(layout, scores, 8, seed=1))
    assert _kept(first, layout, "v") == [95, 96, 97, 98, 99]
    kept_audio = _kept(first, layout, "a")
    expected = sorted(torch.randperm(50, generator=torch.Generator().manual_seed(1))[:13].tolist())
    assert kept_audio == expected and kept_audio != list(range(37, 50))
    again = selector.after_layer(2, torch.zeros(len(layout), 4), _ctx(layout, scores, 8, seed=1))
    other = selector.after_layer(2, torch.zeros(len(layout), 4), _ctx(layout, scores, 8, seed=2))
    assert _kept(again, layout, "a") == kept_audio and _kept(other, layout, "a") != kept_audio
    assert len(_kept(other, layout, "a")) == 13
    plan = selector.plan(PlanInput(100, 50, 2, 100, 1, 25.0, 8))
    assert plan.per_layer == [(100, 50)] * 2 + [(5, 13)] * 6
    assert plan.details["settings"]["random_audio"] is True


# ---------------------------------------------------------------------------------------------
# the negative setting ratio
# ---------------------------------------------------------------------------------------------

def test_negative_setting_keeps_one_and_is_reported():
    """Qwen2.5-Omni-7B R=10 video: (0.06*28 - 2)/26 = -0.012308 -> one video token survives."""
    selector = build_selector("fastv_omni", {}, 0.06, 0.35, QWEN25)
    described = selector.describe()
    assert round(described["setting_ratio"]["video"], 6) == -0.012308
    assert len(described["warnings"]) == 1 and "-0.012308" in described["warnings"][0]
    assert "keeps 1 token" in described["warnings"][0]
    plan = selector.plan(PlanInput(9216, 1600, 100, 144, 64, 25.0, 28))
    assert plan.per_layer[2] == (1, round(0.3 * 1600)) == (1, 480)
    assert plan.details["warnings"] == described["warnings"]
    assert not build_selector("fastv_omni", {}, 0.10, 0.45, QWEN25).describe()["warnings"]


def test_negative_setting_error_names_the_key():
    with pytest.raises(MethodConfigError, match=r"method\.negative_setting=error: .*video -0\.012308"):
        build_selector("fastv", {"negative_setting": "error"}, 0.06, 0.35, QWEN25)
    build_selector("fastv", {"negative_setting": "error"}, 0.10, 0.45, QWEN25)  # positive: fine


@pytest.mark.parametrize("params,match", [
    ({"fastv_k": 0}, r"method\.fastv_k must be an integer in \[1, 27\]"),
    ({"fastv_k": 28}, r"method\.fastv_k"),
    ({"fastv_k": 27, "score_layer": "next"}, r"method\.fastv_k must be an integer in \[1, 26\].*score_layer=next"),
    ({"score_layer": "prev"}, r"method\.score_layer must be one of"),
    ({"negative_setting": "clamp"}, r"method\.negative_setting must be one of"),
    ({"window": 3}, r"does not take \['window'\]"),
])
def test_bad_settings(params, match):
    with pytest.raises(MethodConfigError, match=match):
        build_selector("fastv", params, 0.3, 0.65, QWEN25)


def _seats_exp(tmp_path: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HYDRA_"))}
    return subprocess.run([str(SEATS_EXP), f"paths.root={tmp_path}", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_cli_plan_reports_the_negative_setting(tmp_path):
    args = ("mode=plan", "model=qwen2_5_omni_7b", "method=fastv", "schedule=r10")
    text = _seats_exp(tmp_path, *args)
    assert text.returncode == 0, text.stderr[-2000:]
    assert "setting_ratio={'video': -0.012308, 'audio': 0.3}" in text.stdout
    assert any(line.startswith("warning: fastv: negative layer-2 setting ratio for video -0.012308")
               for line in text.stdout.splitlines())
    js = _seats_exp(tmp_path, *args, "plan.json=true")
    (line,) = [x for x in js.stdout.splitlines() if x.strip()]
    plan = json.loads(line)
    assert plan["settings"]["setting_ratio"] == {"video": -0.012308, "audio": 0.3}
    assert len(plan["warnings"]) == 1
    error = _seats_exp(tmp_path, *args, "method.negative_setting=error")
    assert error.returncode == 2
    lines = [x for x in error.stderr.splitlines() if x.startswith("seats-exp:")]
    assert len(lines) == 1 and "method.negative_setting=error" in lines[0] and "-0.012308" in lines[0]
    assert "Traceback" not in error.stderr


def test_run_records_the_warning_in_result_json_and_the_log(tmp_path):
    """Tiny model (8 layers), R=10 video 0.06: (0.48 - 2)/6 < 0 -> reported in method_settings and the log."""
    proc = _seats_exp(tmp_path, "method=fastv_omni", "schedule=r10", "benchmark.limit=1", "eval.progress=false",
                      "benchmark.tasks.synthetic.generation.max_new_tokens=2", "hydra.run.dir=run")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    settings = result["method_settings"]
    assert settings["name"] == "fastv_omni" and settings["setting_ratio"]["video"] == pytest.approx((0.06 * 8 - 2) / 6)
    assert len(settings["warnings"]) == 1 and "negative layer-2 setting ratio" in settings["warnings"][0]
    log_text = "\n".join(p.read_text() for p in (tmp_path / "run").glob("*.log"))
    assert "negative layer-2 setting ratio" in log_text
