"""DivPrune and DivPrune-om (baselines-reference 4): hand-worked selections, budgets, audio-intact
reallocation, windows equal to SEATS Stage I with equal scores, settings errors, plan = run."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import load_tiny, tiny_inputs

from methods import MethodConfigError, ModelInfo, build_selector
from methods.divprune import divprune_keep
from methods.diversity import farthest_point_keep
from seats_exp.engine import Engine
from seats_exp.selection import AUDIO, TEXT, VIDEO, EncoderStats, PlanInput, SelectionContext

INFO = ModelInfo("qwen2_5_omni_7b", "qwen2_5_omni", 28, 25.0)


def unit(degrees: list[float]) -> torch.Tensor:
    rad = torch.tensor(degrees, dtype=torch.float64) * math.pi / 180
    return torch.stack([rad.cos(), rad.sin()], dim=1).float()


# Five unit vectors at 0, 10, 90, 105, 180 degrees; d = 1 - cos(angle difference).
# Second-smallest entry per column: 0.0152, 0.0152, 0.0341, 0.0341, 0.7412 (180 vs 105) -> first pick 4.
# min distance to {4}: [2, 1.985, 1, 0.741] -> pick 0; to {4, 0}: 10deg 0.0152, 90deg 1, 105deg 0.741
# -> pick 2; to {4, 0, 2}: 10deg 0.0152, 105deg 0.0341 -> pick 3.
ANGLES = [0, 10, 90, 105, 180]
PICK_ORDER = [4, 0, 2, 3, 1]


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5])
def test_hand_worked_selection(m):
    keep = farthest_point_keep(unit(ANGLES)[None], m)[0]
    assert torch.nonzero(keep).flatten().tolist() == sorted(PICK_ORDER[:m])


def test_ties_take_the_lowest_index():
    # four axis vectors: every column's second-smallest distance is exactly 1 -> first pick 0;
    # then distances to 0 are [., 1, 2, 1] -> 2; then 1 and 3 tie at 1 -> 1
    axes = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    assert torch.nonzero(farthest_point_keep(axes[None], 1)[0]).flatten().tolist() == [0]
    assert torch.nonzero(farthest_point_keep(axes[None], 2)[0]).flatten().tolist() == [0, 2]
    assert torch.nonzero(farthest_point_keep(axes[None], 3)[0]).flatten().tolist() == [0, 1, 2]


def test_global_budget_is_round_r_n():
    features = unit(ANGLES)
    # M = round(r N): 0.5 * 5 = 2.5 -> 2 (half to even), 0.7 * 5 = 3.5 -> 4, 0.05 * 5 = 0.25 -> 0
    assert divprune_keep(features, 0.5, None).sum() == 2
    assert divprune_keep(features, 0.7, None).sum() == 4
    assert divprune_keep(features, 0.05, None).sum() == 0
    # windowed: max(1, min(n, round(r n))) per window -> windows of 3 and 2 at r = 0.05 keep 1 each
    assert divprune_keep(features, 0.05, 3).sum() == 2


def _ctx(modality: list[int], embeds: torch.Tensor, per_grid: int, attn=None) -> SelectionContext:
    mod = torch.tensor(modality)
    s = mod.numel()
    stats = EncoderStats() if attn is None else EncoderStats(video_attn=attn[0], audio_attn=attn[1])
    return SelectionContext(
        modality=mod, original_index=torch.arange(s), position_ids=torch.zeros(3, s, dtype=torch.long),
        token_time=torch.zeros(s), video_grid_thw=None, video_tokens_per_grid=per_grid, seconds_per_grid=2.0,
        audio_tokens_per_second=25.0, num_layers=28, family="qwen2_5_omni", stats=stats, embeds=embeds,
        generator=torch.Generator().manual_seed(3))


def _layout(num_video: int, num_audio: int, dim: int = 16, seed: int = 0):
    """text, video block, audio block, video block, audio block, text (Qwen2.5 interleaving)."""
    g = torch.Generator().manual_seed(seed)
    hv, ha = num_video // 2, num_audio // 2
    modality = [TEXT] * 3 + [VIDEO] * hv + [AUDIO] * ha + [VIDEO] * (num_video - hv) + [AUDIO] * (num_audio - ha) + [TEXT] * 4
    return modality, torch.randn(len(modality), dim, generator=g)


def test_divprune_omni_windows_equal_seats_stage1_with_equal_scores():
    from methods.seats import Seats, resolve_settings

    per_grid = 16
    modality, embeds = _layout(5 * per_grid, 130)  # odd grid count and a short last audio window
    rv, ra = 0.3, 0.65
    divprune = build_selector("divprune_omni", {"window": "video_grids:2+audio_seconds:2"}, rv, ra, INFO)
    # SEATS Stage I with the same windows (2 grids, 2 s x 25) and encoder ratio = schedule ratio
    seats = Seats(resolve_settings({"encoder_ratio_scale": 1.0}, rv, ra, INFO))
    mod = torch.tensor(modality)
    ones = (torch.ones(int((mod == VIDEO).sum())), torch.ones(int((mod == AUDIO).sum())))
    got = divprune.before_llm(_ctx(modality, embeds, per_grid)).keep
    expected = seats.before_llm(_ctx(modality, embeds, per_grid, attn=ones)).keep
    assert torch.equal(got, expected)
    assert 0 < int(got[mod == VIDEO].sum()) < int((mod == VIDEO).sum())
    assert 0 < int(got[mod == AUDIO].sum()) < int((mod == AUDIO).sum())
    # video-only windows: the video part still equals SEATS', audio becomes one global selection
    video_only = build_selector("divprune_omni", {"window": "video_grids:2"}, rv, ra, INFO)
    keep = video_only.before_llm(_ctx(modality, embeds, per_grid)).keep
    assert torch.equal(keep[mod == VIDEO], expected[mod == VIDEO])
    assert int(keep[mod == AUDIO].sum()) == round(ra * 130)


def test_divprune_omni_default_is_one_global_selection_per_modality():
    modality, embeds = _layout(96, 60)
    mod = torch.tensor(modality)
    keep = build_selector("divprune_omni", {}, 0.3, 0.65, INFO).before_llm(_ctx(modality, embeds, 16)).keep
    assert torch.equal(keep[mod == VIDEO], divprune_keep(embeds[mod == VIDEO], 0.3, None))
    assert torch.equal(keep[mod == AUDIO], divprune_keep(embeds[mod == AUDIO], 0.65, None))
    assert int(keep[mod == VIDEO].sum()) == round(0.3 * 96) and int(keep[mod == AUDIO].sum()) == round(0.65 * 60)
    assert keep[mod == TEXT].all()


def test_divprune_keeps_audio_and_reallocates_the_budget():
    # Nv = 100, Na = 50, (0.30, 0.65): total floor(30 + 32.5) = 62 -> (12/100, 1.0)
    modality, embeds = _layout(100, 50)
    mod = torch.tensor(modality)
    keep = build_selector("divprune", {}, 0.30, 0.65, INFO).before_llm(_ctx(modality, embeds, 20)).keep
    assert int(keep[mod == VIDEO].sum()) == 12
    assert keep[mod == AUDIO].all() and keep[mod == TEXT].all()
    assert torch.equal(keep[mod == VIDEO], divprune_keep(embeds[mod == VIDEO], 0.12, None))


def test_divprune_low_budget_drops_audio_at_random():
    # Nv = Na = 100, (0.06, 0.35): total 41; video clamps at 0.05 -> audio (41 - 5) / 100 = 0.36
    modality, embeds = _layout(100, 100)
    mod = torch.tensor(modality)
    selector = build_selector("divprune", {}, 0.06, 0.35, INFO)
    first = selector.before_llm(_ctx(modality, embeds, 20)).keep
    again = selector.before_llm(_ctx(modality, embeds, 20)).keep
    assert int(first[mod == VIDEO].sum()) == 5 and int(first[mod == AUDIO].sum()) == 36
    assert torch.equal(first, again)  # the engine's per-sample generator makes it reproducible


@pytest.mark.parametrize("name,window,match", [
    ("divprune", "audio_seconds:2", "audio intact"), ("divprune_omni", "video_grids:0", "positive integer"),
    ("divprune_omni", "grids:2", "expected"), ("divprune_omni", 3, "expected"),
    ("divprune_omni", "audio_seconds:-1", "expected"),
])
def test_bad_windows_name_the_key(name, window, match):
    with pytest.raises(MethodConfigError, match=f"method.window.*{match}"):
        build_selector(name, {"window": window}, 0.3, 0.65, INFO)


def test_unknown_setting_is_refused():
    with pytest.raises(MethodConfigError, match="window"):
        build_selector("divprune", {"windows": "none"}, 0.3, 0.65, INFO)


@pytest.mark.parametrize("name,params", [("divprune", {}), ("divprune_omni", {}),
                                         ("divprune_omni", {"window": "video_grids:2+audio_seconds:2"}),
                                         ("divprune", {"window": "video_grids:1"})])
def test_plan_equals_a_run(name, params):
    num_video, num_audio, per_grid = 5 * 16, 130, 16
    modality, embeds = _layout(num_video, num_audio)
    mod = torch.tensor(modality)
    selector = build_selector(name, params, 0.3, 0.65, INFO)
    keep = selector.before_llm(_ctx(modality, embeds, per_grid)).keep
    plan = selector.plan(PlanInput(num_video, num_audio, 7, per_grid, 5, 25.0, 28))
    assert plan.per_layer == [(int(keep[mod == VIDEO].sum()), int(keep[mod == AUDIO].sum()))] * 28


@pytest.mark.parametrize("name", ["divprune", "divprune_omni"])
def test_on_a_tiny_thinker(name, tiny_qwen2_5, clips):
    """Through the engine on a real prompt: the LLM sees exactly the selector's kept count."""
    torch.set_num_threads(1)
    loaded = load_tiny(tiny_qwen2_5, "qwen2_5_omni")
    inputs, has_audio = tiny_inputs(loaded, clips["av"])
    info = ModelInfo("tiny_qwen2_5_omni", "qwen2_5_omni", loaded.adapter.num_layers, 25.0)
    selector = build_selector(name, {}, 0.3, 0.65, info)
    ids = inputs["input_ids"][0]
    num_video = int((ids == loaded.adapter.video_token_id).sum())
    num_audio = int((ids == loaded.adapter.audio_token_id).sum())
    grid = inputs["video_grid_thw"][0]
    per_grid = int(grid[1] * grid[2]) // 4
    plan = selector.plan(PlanInput(num_video, num_audio, ids.numel() - num_video - num_audio, per_grid,
                                   num_video // per_grid, 25.0, info.num_layers))
    loaded.thinker.model.rope_deltas = None
    with Engine(loaded.thinker, loaded.adapter, selector) as engine, torch.no_grad():
        loaded.thinker.generate(**inputs, use_audio_in_video=has_audio, max_new_tokens=2, do_sample=False)
        record = engine.pop_records()[0]
    text = ids.numel() - num_video - num_audio
    assert record.layer_lengths == [v + a + text for v, a in plan.per_layer]
    assert record.llm_input_length < ids.numel()
