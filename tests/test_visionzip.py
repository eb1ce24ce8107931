"""VisionZip and VisionZip-om (seats-reference 12.4, section 6; baselines-reference 3.2): per-window
counts (float32 dominant product), a hand-worked window (dominant, anchors, assignment, merged
embedding, both contextual_merge settings), the reallocation example, encoder-statistics requests,
the selection on a tiny model against a loop reference, and plan mode's TFLOPs ordering."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import load_tiny, tiny_inputs

from methods import MethodConfigError, ModelInfo, build_selector
from methods.visionzip import contextual_count, dominant_count, planned_keep, visionzip_modality
from seats_exp.selection import AUDIO, AUDIO_ATTN, AUDIO_KEYS, VIDEO, VIDEO_ATTN, VIDEO_KEYS, BaseSelector, PlanInput

@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


QWEN25 = ModelInfo("qwen2_5_omni_7b", "qwen2_5_omni", 28, 25.0)
QWEN3 = ModelInfo("qwen3_omni_30b_a3b", "qwen3_omni", 48, 13.0)


# ---------------------------------------------------------------------------------------------
# counts
# ---------------------------------------------------------------------------------------------

def test_dominant_count_is_a_float32_product():
    # d = 0.3 - 0.1 = 0.19999999999999998: d*10 = 1.9999999999999998 in float64 (floor 1), 2.0 in float32
    assert 0.3 - 0.1 < 0.2 and math.floor((0.3 - 0.1) * 10) == 1
    assert dominant_count(10, 0.3, 0.1) == 2
    assert dominant_count(5, 0.3, 0.1) == 1  # 0.99999... in float64, 1.0 in float32
    assert dominant_count(144, 0.30, 0.05) == 36
    assert dominant_count(144, 0.23912, 0.05) == 27  # floor(0.18912 * 144 = 27.23)
    assert dominant_count(4, 0.4, 0.2) == 1  # floor(0.8) = 0 -> at least 1
    assert dominant_count(10, 0.05, 0.05) == 0  # d = 0: no dominant token
    assert dominant_count(3, 1.0, 0.05) == 2  # floor(0.95 * 3) = 2


def test_contextual_count_rounds_half_to_even_in_float64():
    assert contextual_count(50, 30, 0.05) == 2  # round(2.5) = 2
    assert contextual_count(190, 10, 0.15) == 28  # 0.15 * 190 = 28.5 in float64 (float32: 28.500002 -> 29)
    assert contextual_count(90, 10, 0.35) == 31  # 31.499999999999996 in float64 (float32: 31.5 -> 32)
    assert contextual_count(144, 36, 0.05) == 7  # round(7.2)
    assert contextual_count(10, 2, 0.1) == 1
    assert contextual_count(10, 9, 0.3) == 1  # capped by the n - m non-dominant tokens
    assert contextual_count(10, 10, 0.3) == 0
    assert contextual_count(10, 2, 0.0) == 0


def test_per_window_counts_on_the_canonical_input():
    """Qwen2.5 R=35 (0.30, 0.65): video 36 + 7 = 43 per 144-token grid, audio 30 + 2 = 32 per 50 tokens."""
    assert planned_keep(64 * 144, 144, 0.30, 0.05) == 64 * 43
    assert planned_keep(1600, 50, 0.65, 0.05) == 32 * 32
    # a shorter last window is its own window: 120 = 50 + 50 + 20 -> 32 + 32 + (floor(12.0)=12 + 1)
    assert planned_keep(120, 50, 0.65, 0.05) == 32 + 32 + 13


# ---------------------------------------------------------------------------------------------
# a hand-worked window
# ---------------------------------------------------------------------------------------------

# window of 10, r = 0.4, c = 0.2: d = 0.2 -> m = 2 dominant, c_n = round(2.0) = 2 anchors
SCORES = [0.1, 0.9, 0.2, 0.3, 0.8, 0.1, 0.2, 0.3, 0.1, 0.4]
KEYS = {0: (1.0, 0.0), 6: (0.0, 1.0), 2: (1.0, 0.1), 3: (0.2, 1.0), 5: (1.0, 1.0), 7: (0.0, 3.0),
        8: (2.0, -1.0), 9: (-1.0, 0.5), 1: (5.0, 5.0), 4: (-3.0, 2.0)}


def _window_inputs():
    embeds = torch.tensor([[float(i), 10.0 * i] for i in range(10)])
    keys = torch.tensor([KEYS[i] for i in range(10)])
    return embeds, torch.tensor(SCORES), keys


@pytest.mark.parametrize("merge,anchor0,anchor6", [
    # dominant: #1 (0.9), #4 (0.8); non-dominant in order [0,2,3,5,6,7,8,9], step 8 // 2 = 4 -> anchors #0, #6;
    # #2 -> 0, #3 -> 6, #5 -> 0 (exact tie: first anchor), #7 -> 6, #8 -> 0, #9 -> 6
    ("sum", 0 + (2 + 5 + 8) / 3, 6 + (3 + 7 + 9) / 3),  # anchor + mean(assigned)
    ("mean", (0 + 2 + 5 + 8) / 4, (6 + 3 + 7 + 9) / 4),  # mean of the anchor and its assigned tokens
])
def test_hand_worked_window(merge, anchor0, anchor6):
    embeds, scores, keys = _window_inputs()
    keep, anchors, rows = visionzip_modality(embeds, scores, keys, 10, 0.4, 0.2, merge)
    assert torch.nonzero(keep).flatten().tolist() == [0, 1, 4, 6]
    assert anchors.tolist() == [0, 6]
    assert torch.allclose(rows, torch.tensor([[anchor0, 10 * anchor0], [anchor6, 10 * anchor6]]))


def test_windows_tail_and_anchor_without_assignees():
    """24 tokens in windows of 10, 10 and 4; the second window repeats the first; the tail of 4:
    m = max(floor(0.8), 1) = 1 (#2), c_n = 1 anchor (#0) taking #1 and #3."""
    embeds, scores, keys = _window_inputs()
    tail_embeds = torch.tensor([[100.0, 1.0], [200.0, 2.0], [300.0, 3.0], [400.0, 4.0]])
    tail_scores = torch.tensor([0.5, 0.1, 0.7, 0.2])
    tail_keys = torch.tensor([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0], [1.0, 1.0]])
    keep, anchors, rows = visionzip_modality(torch.cat([embeds, embeds, tail_embeds]), torch.cat([scores, scores, tail_scores]),
                                             torch.cat([keys, keys, tail_keys]), 10, 0.4, 0.2)
    assert torch.nonzero(keep).flatten().tolist() == [0, 1, 4, 6, 10, 11, 14, 16, 20, 22]
    assert anchors.tolist() == [0, 6, 10, 16, 20]
    assert torch.allclose(rows[:2], rows[2:4])
    assert torch.allclose(rows[4], torch.tensor([100 + (200 + 400) / 2, 1 + (2 + 4) / 2]))
    # a window where every non-dominant token is an anchor: embeddings unchanged
    keep, anchors, rows = visionzip_modality(embeds[:3], scores[:3], keys[:3], 3, 0.7, 0.5)
    assert dominant_count(3, 0.7, 0.5) == 1 and contextual_count(3, 1, 0.5) == 2  # round(1.5) = 2
    assert keep.tolist() == [True, True, True] and anchors.tolist() == [0, 2]
    assert torch.equal(rows, embeds[[0, 2]])


def test_top_m_ties_keep_the_lower_index():
    embeds = torch.zeros(10, 2)
    keys = torch.tensor([[1.0, float(i)] for i in range(10)])
    scores = torch.tensor([0.5, 0.2, 0.5, 0.5, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0])
    keep, anchors, _ = visionzip_modality(embeds, scores, keys, 10, 0.3, 0.1)  # m = 2 (float32), c_n = 1
    # #0 and #2 win the three-way tie at 0.5; #3 loses it; #1 is the first non-dominant token: the anchor
    assert keep[:4].tolist() == [True, True, True, False] and anchors.tolist() == [1]


# ---------------------------------------------------------------------------------------------
# budgets, statistics and settings
# ---------------------------------------------------------------------------------------------

def test_spec_reallocation_example_and_counts():
    """seats-reference 12: Nv=4320, Na=750, (0.30, 0.65) -> total 1783 -> (0.23912, 1.0)."""
    selector = build_selector("visionzip", {}, 0.30, 0.65, QWEN25)
    video_ratio, audio_ratio = selector.ratios(4320, 750)
    assert (round(video_ratio, 5), audio_ratio) == (0.23912, 1.0)
    # 30 grids of 144: floor(float32(0.18912...) * 144) = 27 dominant + 7 contextual each; audio whole
    assert selector.planned_counts(4320, 750, 144) == (30 * 34, 750)
    omni = build_selector("visionzip_omni", {}, 0.30, 0.65, QWEN25)
    assert omni.ratios(4320, 750) == (0.30, 0.65)
    assert omni.planned_counts(4320, 750, 144) == (30 * 43, 15 * 32)


def test_visionzip_drops_audio_at_random_only_when_clamped():
    selector = build_selector("visionzip", {}, 0.06, 0.1, QWEN25)
    video_ratio, audio_ratio = selector.ratios(1000, 500)  # total 110 < 500: video 0.05, audio (110-50)/500
    assert video_ratio == 0.05 and audio_ratio == pytest.approx(0.12)
    assert selector.planned_counts(1000, 500, 100)[1] == math.floor(0.12 * 500) == 60
    assert selector.plan(PlanInput(1000, 500, 10, 100, 10, 25.0, 28)).details["settings"]["random_audio"] is True


@pytest.mark.parametrize("model", [QWEN25, QWEN3], ids=["qwen2_5", "qwen3"])
def test_statistics_requests(model):
    plain = build_selector("visionzip", {}, 0.3, 0.65, model)
    omni = build_selector("visionzip_omni", {}, 0.3, 0.65, model)
    assert plain.needs == {VIDEO_ATTN, VIDEO_KEYS}  # plain VisionZip never patches the audio encoder
    assert omni.needs == {VIDEO_ATTN, VIDEO_KEYS, AUDIO_ATTN, AUDIO_KEYS}
    for s in (plain, omni):
        assert s.stats_request.video_window_grids == 1 and s.stats_request.audio_window_seconds == 2.0
        assert s.audio_window_tokens == 50  # 2 s x 25 tokens on both families (upstream)


def test_score_dtype_sets_the_statistics_dtype():
    assert build_selector("visionzip_omni", {}, 0.3, 0.65, QWEN25).stats_request.dtype == "model"
    assert build_selector("visionzip_omni", {"score_dtype": "float32"}, 0.3, 0.65, QWEN25).stats_request.dtype == "float32"


@pytest.mark.parametrize("params,match", [
    ({"contextual_ratio": 1.5}, r"method\.contextual_ratio must be a number in \[0, 1\]"),
    ({"grid_in_window": 0}, r"method\.grid_in_window must be a positive integer"),
    ({"sec_in_audio_window": 0}, r"method\.sec_in_audio_window must be a positive number"),
    ({"contextual_merge": "avg"}, r"method\.contextual_merge must be one of \['sum', 'mean'\]"),
    ({"dominant_ratio": 0.2}, r"does not take \['dominant_ratio'\]"),
])
def test_bad_settings(params, match):
    with pytest.raises(MethodConfigError, match=match):
        build_selector("visionzip_omni", params, 0.3, 0.65, QWEN25)


# ---------------------------------------------------------------------------------------------
# on a tiny model: real encoder statistics, a loop reference written from the spec
# ---------------------------------------------------------------------------------------------

def _reference_modality(embeds, scores, keys, window, r, c, merge):
    """seats-reference 12.4 literally, one window and one token at a time (plain Python lists)."""
    n_total = embeds.shape[0]
    keep = [False] * n_total
    replaced = {}
    for start in range(0, n_total, window):
        idx = list(range(start, min(start + window, n_total)))
        n = len(idx)
        m = dominant_count(n, r, c)
        cn = contextual_count(n, m, c)
        order = sorted(idx, key=lambda i: (-float(scores[i]), i))
        dominant = set(order[:m])
        for i in dominant:
            keep[i] = True
        rest = [i for i in idx if i not in dominant]
        if cn <= 0 or not rest:
            continue
        step = max(1, len(rest) // cn)
        anchors = rest[0::step][:cn]
        unit = {i: keys[i] / (keys[i].norm() + 1e-6) for i in rest}
        assigned = {a: [] for a in anchors}
        for i in rest:
            if i in anchors:
                continue
            dots = [float(unit[i] @ unit[a]) for a in anchors]
            assigned[anchors[dots.index(max(dots))]].append(i)
        for a in anchors:
            keep[a] = True
            group = assigned[a]
            if not group:
                replaced[a] = embeds[a]
            elif merge == "sum":
                replaced[a] = embeds[a] + torch.stack([embeds[i] for i in group]).mean(0)
            else:
                replaced[a] = (embeds[a] + torch.stack([embeds[i] for i in group]).sum(0)) / (len(group) + 1)
    return keep, replaced


class Recorder(BaseSelector):
    """Wraps a selector: keeps the context and the selection of before_llm."""

    def __init__(self, inner):
        self.inner = inner
        self.name, self.needs, self.stats_request = inner.name, inner.needs, inner.stats_request
        self.seen = []

    def before_llm(self, ctx):
        selection = self.inner.before_llm(ctx)
        self.seen.append((ctx, selection))
        return selection


@pytest.mark.parametrize("merge", ["sum", "mean"])
@pytest.mark.parametrize("family", ["qwen2_5_omni", "qwen3_omni"])
def test_tiny_model_selection_matches_the_loop_reference(family, merge, request, clips):
    from seats_exp.runner import attach_engine

    loaded = load_tiny(request.getfixturevalue("tiny_qwen3" if family == "qwen3_omni" else "tiny_qwen2_5"), family)
    inputs, has_audio = tiny_inputs(loaded, clips["av"])
    info = ModelInfo(f"tiny_{family}", family, loaded.adapter.num_layers, loaded.adapter.audio_tokens_per_second)
    selector = Recorder(build_selector("visionzip_omni", {"contextual_merge": merge}, 0.32, 0.62, info))
    engine = attach_engine(loaded, selector, "all_executed")
    captured = {}
    def capture(module, args, kwargs):
        captured["embeds"] = kwargs["inputs_embeds"][0].clone()  # after the engine's cut (registered later)

    handle = loaded.adapter.language_model.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        with torch.no_grad():
            loaded.thinker(**inputs, use_audio_in_video=has_audio)
    finally:
        handle.remove()
        engine.detach()
    ((ctx, selection),) = selector.seen
    assert ctx.stats.video_attn is not None and ctx.stats.audio_keys is not None
    expected_keep = torch.ones(ctx.length, dtype=torch.bool)
    expected_rows = {}
    for code, scores, keys, window, ratio in ((VIDEO, ctx.stats.video_attn, ctx.stats.video_keys, ctx.video_tokens_per_grid, 0.32),
                                              (AUDIO, ctx.stats.audio_attn, ctx.stats.audio_keys, 50, 0.62)):
        positions = torch.nonzero(ctx.modality == code).flatten()
        keep, replaced = _reference_modality(ctx.embeds[positions], scores, keys, window, ratio, 0.05, merge)
        expected_keep[positions] = torch.tensor(keep)
        expected_rows.update({int(positions[i]): row for i, row in replaced.items()})
    assert torch.equal(selection.keep, expected_keep)
    assert sorted(selection.replace_index.tolist()) == sorted(expected_rows)
    # what the LLM received: the kept rows, anchors replaced by their merged embedding
    kept = torch.nonzero(expected_keep).flatten().tolist()
    llm_in = captured["embeds"]
    assert llm_in.shape[0] == len(kept)
    changed = 0
    for row, original in enumerate(kept):
        want = expected_rows.get(original, ctx.embeds[original])
        assert torch.allclose(llm_in[row], want, atol=1e-5), f"row {row} (prompt index {original})"
        changed += int(not torch.allclose(want, ctx.embeds[original]))
    assert changed > 0  # the merge did change some anchors


# ---------------------------------------------------------------------------------------------
# plan mode on the canonical Qwen2.5-Omni-7B input
# ---------------------------------------------------------------------------------------------

def test_plan_tflops_on_the_canonical_input():
    """64 s at 2 fps (64 grids x 144), 64 s audio (1600), 100 text, R=35: pre-LLM methods cost far
    less than full tokens, FastV-om more than them (layers 1-2 at full length); VisionZip and
    VisionZip-om keep the same 3776 tokens (2176 + 1600 and 2752 + 1024)."""
    from hydra import compose, initialize_config_dir

    from seats_exp.cli import CONFIG_DIR
    from seats_exp.config import validate
    from seats_exp.plan import make_plan

    canonical = ["mode=plan", "model=qwen2_5_omni_7b", "schedule=r35", "plan.video_seconds=64", "plan.fps=2",
                 "plan.tokens_per_grid=144", "plan.audio_seconds=64", "plan.text_tokens=100",
                 "paths.root=/tmp/seats-compose-root"]
    plans = {}
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        for method in ("full_tokens", "random", "visionzip", "visionzip_omni", "fastv", "fastv_omni"):
            plans[method] = make_plan(validate(compose("config", overrides=[*canonical, f"method={method}"]), check_data=False))
    flops = {m: p["flops"] for m, p in plans.items()}
    assert plans["visionzip_omni"]["layers"][0] | {"exact": "exact"} == {
        "layer": 1, "video": 64 * 43, "audio": 32 * 32, "text": 100, "exact": "exact"}
    assert plans["visionzip"]["layers"][0]["video"] == 64 * 34 and plans["visionzip"]["layers"][0]["audio"] == 1600
    assert flops["visionzip"] == flops["visionzip_omni"]
    assert plans["random"]["layers"][0]["video"] == math.floor(0.3 * 9216) == 2764
    assert flops["fastv_omni"] > max(flops["random"], flops["visionzip_omni"])
    assert all(flops[m] < flops["full_tokens"] for m in flops if m != "full_tokens")
    assert abs(flops["random"] - flops["visionzip_omni"]) / flops["random"] < 0.01
    assert plans["fastv"]["settings"]["applied_ratio"]["audio"] == 1.0
