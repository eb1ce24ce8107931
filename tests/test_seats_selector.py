"""SEATS selector: vectorised stages vs loop references, flags, validation, plan and hooks.

The references below are written from seats-reference sections 7 and 9 with plain Python loops and
NumPy, deliberately simple and independent of ``methods/seats.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from methods import MethodConfigError, ModelInfo, build_selector
from methods.seats import (
    contiguity_windows,
    solve_schedule,
    stage1_keep_count,
    stage1_keep_mask,
    stage2_keep_mask,
    stage2_totals,
    time_windows,
)
from seats_exp.selection import (
    AUDIO,
    AUDIO_ATTN,
    TEXT,
    VIDEO,
    VIDEO_ATTN,
    EncoderStats,
    PlanInput,
    SelectionContext,
)

QWEN2_5_7B = ModelInfo("qwen2_5_omni_7b", "qwen2_5_omni", 28, 25)
QWEN2_5_3B = ModelInfo("qwen2_5_omni_3b", "qwen2_5_omni", 36, 25)
QWEN3 = ModelInfo("qwen3_omni_30b_a3b", "qwen3_omni", 48, 13)
TINY_QWEN2_5 = ModelInfo("tiny_qwen2_5_omni", "qwen2_5_omni", 8, 25)
TINY_QWEN3 = ModelInfo("tiny_qwen3_omni", "qwen3_omni", 8, 13)


# =============================================================================================
# Loop references
# =============================================================================================


def reference_stage1(features: np.ndarray, scores: np.ndarray | None, window: int, ratio: float) -> list[bool]:
    """Section 7: per window, greedy weighted max-min selection (float64, Python loops)."""
    keep = [True] * len(features)
    for start in range(0, len(features), window):
        stop = min(start + window, len(features))
        n = stop - start
        k = max(1, min(n, round(ratio * n)))
        if k >= n:
            continue
        unit = []
        for row in features[start:stop].astype(np.float64):
            unit.append(row / (math.sqrt(float(np.dot(row, row))) + 1e-8))
        weight = [1e6 * (1.0 if scores is None else float(scores[start + j])) for j in range(n)]
        dist = [[(1.0 - float(np.dot(unit[i], unit[j]))) * weight[j] for j in range(n)] for i in range(n)]
        second_smallest = [sorted(dist[i][j] for i in range(n))[1] for j in range(n)]
        first = max(range(n), key=lambda j: (second_smallest[j], -j))
        chosen = [first]
        running = list(dist[first])
        running[first] = -1.0
        for _ in range(k - 1):
            pick = max(range(n), key=lambda j: (running[j], -j))
            chosen.append(pick)
            running = [min(running[j], dist[pick][j]) for j in range(n)]
            running[pick] = -1.0
        for j in range(n):
            keep[start + j] = j in chosen
    return keep


def _runs(positions: list[int]) -> list[list[int]]:
    """Ordinal index lists of contiguous runs of sequence positions."""
    runs: list[list[int]] = []
    for ordinal, position in enumerate(positions):
        if runs and position == positions[ordinal - 1] + 1:
            runs[-1].append(ordinal)
        else:
            runs.append([ordinal])
    return runs


def _softmax32(values: list[float], temperature: float) -> np.ndarray:
    logits = np.array(values, dtype=np.float32) / np.float32(temperature)
    exps = np.exp(logits - logits.max())
    return exps / exps.sum()


def _best_first(scores: list[float], members: list[int]) -> list[int]:
    return sorted(members, key=lambda i: (-scores[i], i))


def reference_stage2(layout, scores, video_ratio, audio_ratio, temperature, weighting="softmax_mean"):
    """Section 9 with loops.  Returns (keep list, budgets dict or None for the global fallback)."""
    video_pos = [i for i, m in enumerate(layout) if m == VIDEO]
    audio_pos = [i for i, m in enumerate(layout) if m == AUDIO]
    video_scores = [float(scores[p]) for p in video_pos]
    audio_scores = [float(scores[p]) for p in audio_pos]
    n_video, n_audio = len(video_pos), len(audio_pos)
    video_total = max(1, round(video_ratio * n_video)) if n_video else 0
    audio_total = max(1, round(audio_ratio * n_audio)) if n_audio else 0
    keep = [True] * len(layout)

    video_runs, audio_runs = _runs(video_pos), _runs(audio_pos)
    paired = min(len(video_runs), len(audio_runs))
    windows = [(video_runs[i], audio_runs[i]) for i in range(paired)]
    windows += [(run, []) for run in video_runs[paired:]]
    windows += [([], run) for run in audio_runs[paired:]]

    if len(windows) <= 1 or n_video == 0 or n_audio == 0:
        for positions, modality_scores, total in (
            (video_pos, video_scores, video_total),
            (audio_pos, audio_scores, audio_total),
        ):
            kept = set(_best_first(modality_scores, list(range(len(positions))))[:total])
            for ordinal, position in enumerate(positions):
                keep[position] = ordinal in kept
        return keep, None

    sizes_v = [len(v) for v, _ in windows]
    sizes_a = [len(a) for _, a in windows]
    caps = [v + a for v, a in zip(sizes_v, sizes_a)]
    if weighting == "softmax_mean":
        mean_v = [
            np.float32(sum(np.float32(video_scores[i]) for i in v)) / np.float32(max(len(v), 1)) for v, _ in windows
        ]
        mean_a = [
            np.float32(sum(np.float32(audio_scores[i]) for i in a)) / np.float32(max(len(a), 1)) for _, a in windows
        ]
        wv, wa = _softmax32(mean_v, temperature), _softmax32(mean_a, temperature)
        w = (wv + wa) / np.float32(2)
    else:
        wv = np.array(sizes_v, dtype=np.float32) / np.float32(n_video)
        wa = np.array(sizes_a, dtype=np.float32) / np.float32(n_audio)
        w = np.array(caps, dtype=np.float32) / np.float32(sum(caps))
    total = video_total + audio_total
    budget = [min(max(int(np.round(w[i] * np.float32(total))), 1), caps[i]) for i in range(len(windows))]
    while sum(budget) != total:
        if sum(budget) > total:
            candidates = [i for i in range(len(budget)) if budget[i] > 1]
            if not candidates:
                break
            best = max(candidates, key=lambda i: (budget[i], -i))
            budget[best] -= 1
        else:
            candidates = [i for i in range(len(budget)) if budget[i] < caps[i]]
            if not candidates:
                break
            best = min(candidates, key=lambda i: (budget[i], i))
            budget[best] += 1

    video_budget, audio_budget = [], []
    for i in range(len(windows)):
        b, vs, as_ = budget[i], sizes_v[i], sizes_a[i]
        v_share = wv[i] * np.float32(video_total)
        a_share = wa[i] * np.float32(audio_total)
        v_frac = v_share / (v_share + a_share + np.float32(1e-12))
        vb = min(max(int(np.round(np.float32(b) * v_frac)), 0), vs)
        ab = min(max(b - vb, 0), as_)
        rem = b - vb - ab
        extra = min(max(rem, 0), max(vs - vb, 0))
        vb += extra
        rem -= extra
        ab += min(max(rem, 0), max(as_ - ab, 0))
        if vs > 0 and vb < 1:
            vb = 1
            if ab > 1:
                ab = max(1, min(as_, max(b - vb, 0)))
        if as_ > 0 and ab < 1:
            ab = 1
            if vb > 1:
                vb = max(1, min(vs, max(b - ab, 0)))
        video_budget.append(vb)
        audio_budget.append(ab)

    for positions, modality_scores, side, budgets in (
        (video_pos, video_scores, 0, video_budget),
        (audio_pos, audio_scores, 1, audio_budget),
    ):
        window_of = {}
        for index, window in enumerate(windows):
            for ordinal in window[side]:
                window_of[ordinal] = index
        counter = [0] * len(windows)
        for ordinal in _best_first(modality_scores, list(range(len(positions)))):
            window = window_of[ordinal]
            keep[positions[ordinal]] = counter[window] < budgets[window]
            counter[window] += 1
    return keep, {"budget": budget, "video_budget": video_budget, "audio_budget": audio_budget}


# =============================================================================================
# Random cases
# =============================================================================================


def random_layout(rng: np.random.Generator) -> list[int]:
    """Text, then interleaved video/audio chunks (some empty -> misaligned runs), leftovers, text."""
    layout = [TEXT] * int(rng.integers(1, 5))
    for _ in range(int(rng.integers(1, 7))):
        layout += [VIDEO] * int(rng.integers(0, 12)) + [AUDIO] * int(rng.integers(0, 8))
        if rng.random() < 0.15:
            layout += [TEXT] * int(rng.integers(1, 3))
    if rng.random() < 0.4:
        layout += [int(rng.choice([VIDEO, AUDIO]))] * int(rng.integers(1, 30))
    return layout + [TEXT] * int(rng.integers(1, 4))


def tie_free_scores(rng: np.random.Generator, length: int) -> np.ndarray:
    """Distinct float32 scores spread enough that the window softmax is not flat."""
    return (rng.permutation(length).astype(np.float32) + 1) * np.float32(rng.uniform(1e-4, 5e-3))


@pytest.mark.parametrize("seed", range(50))
def test_stage2_matches_loop_reference(seed):
    rng = np.random.default_rng(seed)
    layout = random_layout(rng)
    scores = tie_free_scores(rng, len(layout))
    video_ratio, audio_ratio = float(rng.uniform(0.05, 1.0)), float(rng.uniform(0.05, 1.0))
    temperature = float(rng.choice([0.1, 0.3, 0.02]))
    weighting = "size_proportional" if seed % 5 == 4 else "softmax_mean"
    expected, budgets = reference_stage2(layout, scores, video_ratio, audio_ratio, temperature, weighting)
    result = stage2_keep_mask(
        torch.tensor(layout),
        torch.from_numpy(scores),
        video_ratio,
        audio_ratio,
        temperature=temperature,
        window_weighting=weighting,
    )
    assert result.keep.tolist() == expected
    assert result.windowed == (budgets is not None)
    if budgets is not None:
        assert result.budget.tolist() == budgets["budget"]
        assert result.video_budget.tolist() == budgets["video_budget"]
        assert result.audio_budget.tolist() == budgets["audio_budget"]


def test_random_layouts_cover_both_paths_and_misaligned_runs():
    windowed = fallback = misaligned = 0
    for seed in range(50):
        rng = np.random.default_rng(seed)
        layout = torch.tensor(random_layout(rng))
        windows = contiguity_windows(layout)
        has_both = bool((layout == VIDEO).any() and (layout == AUDIO).any())
        windowed += windows.num_windows > 1 and has_both
        fallback += not (windows.num_windows > 1 and has_both)
        video_runs = int(windows.video_window.max()) + 1 if windows.video_window.numel() else 0
        misaligned += has_both and windows.num_windows > video_runs
    assert windowed >= 25 and fallback >= 3 and misaligned >= 3


@pytest.mark.parametrize("seed", range(50))
def test_stage1_matches_loop_reference(seed):
    rng = np.random.default_rng(1000 + seed)
    window = int(rng.integers(2, 13))
    num_tokens = int(rng.integers(1, 4)) * window + int(rng.integers(0, window))  # shorter last window
    features = rng.standard_normal((num_tokens, 8)).astype(np.float32)
    scores = rng.uniform(1e-4, 2e-2, num_tokens).astype(np.float32)
    ratio = float(rng.uniform(0.05, 1.0))
    weighted = scores if seed % 4 else None
    expected = reference_stage1(features, weighted, window, ratio)
    got = stage1_keep_mask(
        torch.from_numpy(features), None if weighted is None else torch.from_numpy(weighted), window, ratio
    )
    assert got.tolist() == expected


# =============================================================================================
# Totals and windows
# =============================================================================================


def test_stage2_totals_use_bankers_rounding_and_floor_of_one():
    assert stage2_totals(15, 9, 0.5, 0.5) == (8, 4)  # round(7.5) = 8, round(4.5) = 4
    assert stage2_totals(5, 0, 0.5, 0.5) == (2, 0)  # round(2.5) = 2; absent modality -> 0
    assert stage2_totals(10, 10, 0.0, 0.01) == (1, 1)  # at least one token of a present modality


def test_contiguity_windows_pair_runs_then_leftovers():
    # Video runs: [0,1], [2], [3,4]; audio runs: [0], [1,2]  -> windows v0+a0, v1+a1, v2 only.
    layout = torch.tensor([0, 1, 1, 2, 0, 1, 2, 2, 0, 1, 1, 0])
    windows = contiguity_windows(layout)
    assert windows.num_windows == 3
    assert windows.video_window.tolist() == [0, 0, 1, 2, 2]
    assert windows.audio_window.tolist() == [0, 1, 1]
    # More audio runs than video runs: audio-only windows come after the video-only ones.
    layout = torch.tensor([1, 2, 0, 2, 0, 2, 2])
    windows = contiguity_windows(layout)
    assert windows.num_windows == 3
    assert windows.video_window.tolist() == [0]
    assert windows.audio_window.tolist() == [0, 1, 2, 2]


def test_time_windows_group_by_start_time_block():
    layout = torch.tensor([0, 1, 1, 2, 2, 1, 2, 2, 2, 0])
    nan = float("nan")
    token_time = torch.tensor([nan, 0.0, 1.0, 0.0, 1.5, 4.0, 2.0, 5.9, 6.0, nan])
    windows = time_windows(layout, token_time, 2.0)
    # Blocks: video 0,0,2; audio 0,0,1,2,3 -> windows by sorted block: 0->0, 1->1, 2->2, 3->3.
    assert windows.num_windows == 4
    assert windows.video_window.tolist() == [0, 0, 2]
    assert windows.audio_window.tolist() == [0, 0, 1, 2, 3]
    # A media token without a time falls back to contiguity runs.
    token_time[2] = nan
    assert time_windows(layout, token_time, 2.0).num_windows == contiguity_windows(layout).num_windows


# =============================================================================================
# Settings, defaults and validation
# =============================================================================================


def build(params=None, ratios=(0.3, 0.65), model=TINY_QWEN2_5):
    return build_selector("seats", params or {}, ratios[0], ratios[1], model)


def test_builder_is_registered_and_declares_stats():
    selector = build(model=QWEN2_5_7B)
    assert selector.name == "seats"
    assert selector.needs == frozenset({VIDEO_ATTN, AUDIO_ATTN})
    assert selector.stats_request.video_window_grids == 2
    assert selector.stats_request.audio_window_seconds == 2
    assert selector.stats_request.dtype == "model"
    described = selector.describe()
    assert described["name"] == "seats" and described["drop_layers"] == [16, 18, 20]
    assert described["schedule"]["video_keep"] == [0.9298, 0.7949, 0.2986]


@pytest.mark.parametrize(
    "model, drops, late, temperature, hooks",
    [
        (QWEN2_5_7B, [16, 18, 20], 24, 0.1, {16, 18, 20, 23}),
        (QWEN2_5_3B, [21, 23, 26], 31, 0.1, {21, 23, 26, 30}),
        (QWEN3, [27, 31, 35], 40, 0.3, {27, 31, 35, 39}),
        (TINY_QWEN2_5, [3, 4, 5], 7, 0.1, {3, 4, 5, 6}),
        (TINY_QWEN3, [3, 4, 5], 7, 0.3, {3, 4, 5, 6}),
        # Unknown variant: depth-scaled from the family's reference model (48 -> 24 layers).
        (ModelInfo("qwen3_omni_small", "qwen3_omni", 24, 13), [14, 16, 18], 20, 0.3, {14, 16, 18, 19}),
    ],
)
def test_per_model_defaults(model, drops, late, temperature, hooks):
    settings = build(model=model, ratios=(0.3, 0.65) if model.family == "qwen2_5_omni" else (0.32, 0.7)).settings
    assert list(settings.drop_layers) == drops
    assert settings.late_block_layer == late
    assert settings.temperature == temperature
    assert build(model=model).hook_layers(model.num_layers) == hooks


@pytest.mark.parametrize("value", ["16-18-20", "16,18,20", [20, 16, 18], "16, 18, 20"])
def test_drop_layers_accept_list_or_string(value):
    assert build({"drop_layers": value}, model=QWEN2_5_7B).settings.drop_layers == (16, 18, 20)


def test_explicit_settings_override_auto():
    selector = build({"drop_layers": "2-4", "late_block_layer": 6, "temperature": 0.5, "grid_in_window": 1,
                      "sec_in_audio_window": 4, "encoder_ratio_scale": 1.2})  # fmt: skip
    assert selector.hook_layers(8) == {2, 4, 5}
    assert selector.settings.temperature == 0.5
    assert selector.stats_request.video_window_grids == 1 and selector.stats_request.audio_window_seconds == 4
    assert selector.audio_window_tokens == 100
    assert selector.video_encoder_ratio == 0.3 * 1.2
    # No late removal: only the drop layers are hooked.
    assert build({"late_block_layer": None}).hook_layers(8) == {3, 4, 5}


@pytest.mark.parametrize(
    "params, ratios, model, fragment",
    [
        ({}, (0.0, 0.5), TINY_QWEN2_5, "schedule.video"),
        ({}, (0.3, 1.2), TINY_QWEN2_5, "schedule.audio"),
        ({"drop_layers": "16-18-23"}, (0.3, 0.65), QWEN2_5_7B, "method.drop_layers"),  # = late - 1
        ({"drop_layers": "16-18-26", "late_block_layer": 24}, (0.3, 0.65), QWEN2_5_7B, "method.drop_layers"),
        ({"drop_layers": [0, 2]}, (0.3, 0.65), TINY_QWEN2_5, "method.drop_layers"),
        ({"drop_layers": [3, 9], "late_block_layer": None}, (0.3, 0.65), TINY_QWEN2_5, "method.drop_layers"),
        ({"drop_layers": "3-3"}, (0.3, 0.65), TINY_QWEN2_5, "method.drop_layers"),
        ({"drop_layers": "a-b"}, (0.3, 0.65), TINY_QWEN2_5, "method.drop_layers"),
        ({"late_block_layer": 10}, (0.3, 0.65), TINY_QWEN2_5, "method.late_block_layer"),
        ({"score_layer": "previous"}, (0.3, 0.65), TINY_QWEN2_5, "method.score_layer"),
        ({"window_weighting": "uniform"}, (0.3, 0.65), TINY_QWEN2_5, "method.window_weighting"),
        ({"windows": "frames"}, (0.3, 0.65), TINY_QWEN2_5, "method.windows"),
        ({"tie_break": "random"}, (0.3, 0.65), TINY_QWEN2_5, "method.tie_break"),
        ({"score_dtype": "bf16"}, (0.3, 0.65), TINY_QWEN2_5, "method.score_dtype"),
        ({"stage1_audio_tokens_per_second": "fast"}, (0.3, 0.65), TINY_QWEN2_5, "method.stage1_audio_tokens"),
        ({"clamp_encoder_ratio": "yes"}, (0.3, 0.65), TINY_QWEN2_5, "method.clamp_encoder_ratio"),
        ({"temperature": -1}, (0.3, 0.65), TINY_QWEN2_5, "method.temperature"),
        ({"grid_in_window": 0}, (0.3, 0.65), TINY_QWEN2_5, "method.grid_in_window"),
        ({"stage2_layers": [1]}, (0.3, 0.65), TINY_QWEN2_5, "stage2_layers"),
        ({}, (0.3, 0.8), TINY_QWEN2_5, "method.encoder_ratio_scale"),  # 0.8 x 1.4 > 1
        ({}, (0.3, 0.65), ModelInfo("llava", "llava", 8, 25), "method.drop_layers"),
    ],
)
def test_validation_errors(params, ratios, model, fragment):
    with pytest.raises(MethodConfigError, match=fragment.replace(".", r"\.")):
        build(params, ratios, model)


def test_encoder_ratio_error_names_both_keys():
    with pytest.raises(MethodConfigError) as error:
        build({}, (0.3, 0.8))
    assert "method.encoder_ratio_scale" in str(error.value) and "schedule.audio" in str(error.value)


# =============================================================================================
# Plan mode
# =============================================================================================


def test_plan_qwen2_5_7b_r10():
    selector = build({}, (0.06, 0.35), QWEN2_5_7B)
    plan = selector.plan(
        PlanInput(
            video_tokens=64 * 144,
            audio_tokens=1600,
            text_tokens=100,
            video_tokens_per_grid=144,
            num_grids=64,
            audio_tokens_per_second=25,
            num_layers=28,
        )
    )
    # Stage I: 32 video windows of 288 keep 24 each; 32 audio windows of 50 keep 24 each.
    # Stage II totals: round(0.9298 x 768) = 714, round(0.7949 x 714) = 568, round(0.2986 x 568) = 170.
    expected = [(768, 768)] * 16 + [(714, 714)] * 2 + [(568, 568)] * 2 + [(170, 170)] * 3 + [(0, 0)] * 5
    assert plan.per_layer == expected
    assert plan.details["schedule"] == {
        "video_keep": [0.9298, 0.7949, 0.2986],
        "audio_keep": [0.9298, 0.7949, 0.2986],
        "video_encoder_ratio": 0.08399999999999999,
        "audio_encoder_ratio": 0.48999999999999994,
        "drop_layers": [16, 18, 20],
        "late_block_layer": 24,
    }


def test_plan_shorter_last_windows_and_missing_audio():
    selector = build({}, (0.3, 0.65), QWEN2_5_7B)
    plan = selector.plan(PlanInput(3 * 144, 0, 50, 144, 3, 25, 28))
    assert plan.per_layer[0] == (121 + 60, 0)


# =============================================================================================
# Hooks, driven with a hand-built context
# =============================================================================================


def make_context(layout, *, scores_by_module=None, seed=0, tokens_per_grid=4, stats=True, score_dtype_kw=False):
    """A SelectionContext for ``layout`` with random embeddings/stats and a fake scorer.

    The fake ``score_last_text`` returns ``scores_by_module[module_index]`` restricted to the current
    tokens (``original_index`` of ``scratch["current"]``, the latest narrowed context) and records
    each call in ``scratch["calls"]``.
    """
    generator = torch.Generator().manual_seed(seed)
    modality = torch.tensor(layout)
    length = modality.numel()
    token_time = torch.full((length,), float("nan"))
    video_ordinal = torch.arange(int((modality == VIDEO).sum()))
    audio_ordinal = torch.arange(int((modality == AUDIO).sum()))
    token_time[modality == VIDEO] = (video_ordinal // tokens_per_grid).float()  # 1 s per grid
    token_time[modality == AUDIO] = audio_ordinal.float() / 25
    calls: list = []

    def fake_scorer(module_index, hidden):
        calls.append((module_index, tuple(hidden.shape)))
        return scores_by_module[module_index][ctx.scratch["current"].original_index]

    def fake_scorer_with_dtype(module_index, hidden, score_dtype=None):
        calls.append((module_index, score_dtype))
        full = scores_by_module[module_index][ctx.scratch["current"].original_index]
        return full if score_dtype == torch.float32 else full.bfloat16()

    ctx = SelectionContext(
        modality=modality,
        original_index=torch.arange(length),
        position_ids=torch.arange(length).expand(3, length).clone(),
        token_time=token_time,
        video_grid_thw=torch.tensor([[max(1, len(video_ordinal) // tokens_per_grid), 4, 4]]),
        video_tokens_per_grid=tokens_per_grid,
        seconds_per_grid=1.0,
        audio_tokens_per_second=25,
        num_layers=8,
        family="qwen2_5_omni",
        stats=EncoderStats(
            video_attn=torch.rand(len(video_ordinal), generator=generator) if stats else None,
            audio_attn=torch.rand(len(audio_ordinal), generator=generator) if stats else None,
        ),
        embeds=torch.randn(length, 16, generator=generator).bfloat16(),
        score_last_text=fake_scorer_with_dtype if score_dtype_kw else fake_scorer,
    )
    ctx.scratch.update(calls=calls, current=ctx)
    return ctx


def narrow(ctx: SelectionContext, keep: torch.Tensor) -> SelectionContext:
    """What the engine does to the context after a cut (only the fields SEATS reads)."""
    narrowed = SelectionContext(
        modality=ctx.modality[keep],
        original_index=ctx.original_index[keep],
        position_ids=ctx.position_ids[:, keep],
        token_time=ctx.token_time[keep],
        video_grid_thw=ctx.video_grid_thw,
        video_tokens_per_grid=ctx.video_tokens_per_grid,
        seconds_per_grid=ctx.seconds_per_grid,
        audio_tokens_per_second=ctx.audio_tokens_per_second,
        num_layers=ctx.num_layers,
        family=ctx.family,
        score_last_text=ctx.score_last_text,
        scratch=ctx.scratch,
    )
    ctx.scratch["current"] = narrowed
    return narrowed


def interleaved_layout(num_chunks=6, video_per_chunk=8, audio_per_chunk=50):
    """Qwen2.5-like: text, (2 grids of 4 video tokens, 50 audio tokens) per chunk, text."""
    layout = [TEXT] * 5
    for _ in range(num_chunks):
        layout += [VIDEO] * video_per_chunk + [AUDIO] * audio_per_chunk
    return layout + [TEXT] * 7


def random_scores(length, modules, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {m: torch.rand(length, generator=generator) * 0.05 for m in modules}


def test_before_llm_runs_stage1_per_modality():
    layout = interleaved_layout()
    selector = build({}, (0.3, 0.65))
    ctx = make_context(layout)
    selection = selector.before_llm(ctx)
    assert selection is not None and selection.label == "stage1"
    video, audio = ctx.video_mask, ctx.audio_mask
    expected_video = stage1_keep_mask(ctx.embeds[video], ctx.stats.video_attn, 8, selector.video_encoder_ratio)
    expected_audio = stage1_keep_mask(ctx.embeds[audio], ctx.stats.audio_attn, 50, selector.audio_encoder_ratio)
    assert torch.equal(selection.keep[video], expected_video)
    assert torch.equal(selection.keep[audio], expected_audio)
    assert selection.keep[ctx.text_mask].all()
    assert int(selection.keep[video].sum()) == 6 * stage1_keep_count(8, 0.42)
    assert int(selection.keep[audio].sum()) == 6 * 45


def test_before_llm_missing_stats_or_modality_is_untouched():
    selector = build({}, (0.3, 0.65))
    assert selector.before_llm(make_context(interleaved_layout(), stats=False)) is None
    # Audio-only input: only audio is selected, no error about video.
    ctx = make_context([TEXT] * 3 + [AUDIO] * 100 + [TEXT])
    selection = selector.before_llm(ctx)
    assert int(selection.keep.sum()) == 4 + 2 * 45
    # Audio stats missing: video still selected, audio kept whole.
    ctx = make_context(interleaved_layout())
    ctx.stats.audio_attn = None
    selection = selector.before_llm(ctx)
    assert selection.keep[ctx.audio_mask].all() and not selection.keep[ctx.video_mask].all()


def test_after_layer_drives_stage2_then_stage3():
    layout = interleaved_layout()
    selector = build({}, (0.3, 0.65))  # tiny: drops 3, 4, 5; Stage III after layer 6
    scores = random_scores(len(layout), range(8))
    ctx = make_context(layout, scores_by_module=scores)
    hidden = torch.zeros(len(layout), 16)
    for step, layer in enumerate((3, 4, 5)):
        selection = selector.after_layer(layer, hidden[: ctx.length], ctx)
        assert selection.label == f"stage2.{step + 1}"
        expected, _ = reference_stage2(
            ctx.modality.tolist(),
            scores[layer - 1][ctx.original_index].numpy(),
            selector.video_keep[step],
            selector.audio_keep[step],
            0.1,
        )
        assert selection.keep.tolist() == expected
        ctx = narrow(ctx, selection.keep)
    assert [call[0] for call in ctx.scratch["calls"]] == [2, 3, 4]  # score_layer=self: module layer-1
    assert selector.after_layer(2, hidden, ctx) is None  # not a hook layer
    final = selector.after_layer(6, hidden[: ctx.length], ctx)
    assert final.label == "stage3"
    assert torch.equal(final.keep, ctx.text_mask)
    assert len(ctx.scratch["calls"]) == 3  # Stage III does not score


def test_after_layer_without_media_does_nothing():
    selector = build({}, (0.3, 0.65))
    ctx = make_context([TEXT] * 10, scores_by_module={})
    assert selector.after_layer(3, torch.zeros(10, 16), ctx) is None
    assert selector.after_layer(6, torch.zeros(10, 16), ctx) is None


def test_both_encoder_ratios_at_one_make_every_stage_inert():
    # Faithful quirk (section 5.1 step 6): no Stage I means no inner hooks either.
    selector = build({"clamp_encoder_ratio": True}, (0.9, 0.95))
    assert selector.inert and selector.hook_layers(8) == set()
    assert selector.before_llm(make_context(interleaved_layout())) is None
    plan = selector.plan(PlanInput(48, 300, 12, 4, 12, 25, 8))
    assert plan.per_layer == [(48, 300)] * 8


# =============================================================================================
# Flags, each both ways
# =============================================================================================


def g3_inputs() -> tuple[torch.Tensor, torch.Tensor]:
    """Golden case G3 of section 16 (layout v6+a3, v5+a4, v4+a2; scores x 20)."""
    modality = torch.tensor([int(c) for c in "00011111122211111222211112200"])
    video = [0.010, 0.002, 0.030, 0.004, 0.005, 0.001, 0.020, 0.003, 0.007, 0.006, 0.009, 0.040, 0.008, 0.011, 0.012]
    audio = [0.015, 0.013, 0.014, 0.016, 0.017, 0.018, 0.019, 0.021, 0.022]
    scores = torch.zeros(modality.numel())
    scores[modality == VIDEO] = torch.tensor(video) * 20
    scores[modality == AUDIO] = torch.tensor(audio) * 20
    return modality, scores


def _stage2_keep(selector, ctx, layer=3):
    selection = selector.after_layer(layer, torch.zeros(ctx.length, 16), ctx)
    return None if selection is None else selection.keep


def test_flag_score_layer():
    layout = interleaved_layout()
    scores = random_scores(len(layout), range(8))
    faithful_ctx, next_ctx = (
        make_context(layout, scores_by_module=scores),
        make_context(layout, scores_by_module=scores),
    )
    faithful = _stage2_keep(build({}), faithful_ctx)
    shifted = _stage2_keep(build({"score_layer": "next"}), next_ctx)
    assert faithful_ctx.scratch["calls"][0][0] == 2 and next_ctx.scratch["calls"][0][0] == 3
    assert not torch.equal(faithful, shifted)


def test_flag_window_weighting():
    # G3 scores: softmax_mean gives budgets [3, 3, 6]; size_proportional [4, 4, 4].
    modality, scores = g3_inputs()
    softmax = stage2_keep_mask(modality, scores, 0.5, 0.5, temperature=0.1)
    sized = stage2_keep_mask(modality, scores, 0.5, 0.5, temperature=0.1, window_weighting="size_proportional")
    assert softmax.budget.tolist() == [3, 3, 6] and sized.budget.tolist() == [4, 4, 4]
    assert not torch.equal(softmax.keep, sized.keep)
    # Through the selector as well.
    layout = interleaved_layout()
    scores = random_scores(len(layout), range(8))
    scores[2][torch.tensor(layout) == VIDEO] *= torch.linspace(0.1, 3.0, int((torch.tensor(layout) == VIDEO).sum()))
    faithful = _stage2_keep(build({"temperature": 0.01}), make_context(layout, scores_by_module=scores))
    sized = _stage2_keep(build({"temperature": 0.01, "window_weighting": "size_proportional"}),
                         make_context(layout, scores_by_module=scores))  # fmt: skip
    assert not torch.equal(faithful, sized)


def test_flag_windows_time_vs_contiguity():
    # Audio outlasts video in position space: the last audio run spans 4 s but is one run, so the
    # contiguity windows put it in one giant window; time windows split it by 2-s blocks.
    layout = [TEXT] * 3 + [VIDEO] * 8 + [AUDIO] * 50 + [VIDEO] * 8 + [AUDIO] * 150 + [TEXT] * 4
    scores = random_scores(len(layout), range(8), seed=3)
    ctx_contiguity = make_context(layout, scores_by_module=scores)
    ctx_time = make_context(layout, scores_by_module=scores)
    assert contiguity_windows(ctx_time.modality).num_windows == 2
    assert time_windows(ctx_time.modality, ctx_time.token_time, 2.0).num_windows == 4
    faithful = _stage2_keep(build({}), ctx_contiguity)
    timed = _stage2_keep(build({"windows": "time"}), ctx_time)
    assert not torch.equal(faithful, timed)
    # window_seconds changes the blocks.
    assert time_windows(ctx_time.modality, ctx_time.token_time, 8.0).num_windows == 1


def test_flag_stage1_audio_tokens_per_second():
    faithful = build({}, (0.32, 0.45), TINY_QWEN3)
    model_rate = build({"stage1_audio_tokens_per_second": "model"}, (0.32, 0.45), TINY_QWEN3)
    assert faithful.audio_window_tokens == 50 and model_rate.audio_window_tokens == 26
    layout = [TEXT] * 2 + [AUDIO] * 100 + [TEXT] * 2
    assert int(faithful.before_llm(make_context(layout)).keep.sum()) == 4 + 2 * 32  # round(0.63 x 50) = 32
    assert int(model_rate.before_llm(make_context(layout)).keep.sum()) == 4 + 3 * 16 + 14  # windows 26,26,26,22
    inp = PlanInput(0, 100, 4, 0, 0, 13, 8)
    assert faithful.plan(inp).per_layer[0] == (0, 64) and model_rate.plan(inp).per_layer[0] == (0, 62)


def test_flag_clamp_encoder_ratio():
    with pytest.raises(MethodConfigError):
        build({}, (0.3, 0.8))
    clamped = build({"clamp_encoder_ratio": True}, (0.3, 0.8))
    assert clamped.audio_encoder_ratio == 1.0 and clamped.video_encoder_ratio == 0.42
    # The schedule is solved with the clamped ratio, so audio keeps more per step than video.
    assert clamped.audio_keep != clamped.video_keep
    selection = clamped.before_llm(make_context(interleaved_layout()))
    assert selection.keep[torch.tensor(interleaved_layout()) == AUDIO].all()


def test_flag_tie_break():
    layout = interleaved_layout(num_chunks=1, video_per_chunk=300, audio_per_chunk=120)
    generator = torch.Generator().manual_seed(5)
    tied = torch.randint(0, 3, (len(layout),), generator=generator).float() * 0.01  # many exact ties
    scores = {m: tied for m in range(8)}
    stable = _stage2_keep(build({}), make_context(layout, scores_by_module=scores))
    plain = _stage2_keep(build({"tie_break": "torch"}), make_context(layout, scores_by_module=scores))
    assert stable.sum() == plain.sum()
    assert not torch.equal(stable, plain)
    # Stable order keeps, among equal scores, the earliest tokens.
    video_scores = tied[torch.tensor(layout) == VIDEO]
    kept_video = stable[torch.tensor(layout) == VIDEO]
    threshold = video_scores[kept_video].min()
    boundary = (video_scores == threshold).nonzero().flatten()
    kept_at_boundary = kept_video[boundary]
    assert torch.equal(kept_at_boundary, torch.sort(kept_at_boundary, descending=True, stable=True).values)


def test_flag_score_dtype():
    layout = interleaved_layout()
    # Scores that collide in bf16 but not in float32.
    scores = {m: 0.02 + torch.arange(len(layout)).float() * 1e-6 for m in range(8)}
    faithful_selector, fp32_selector = build({}), build({"score_dtype": "float32"})
    assert faithful_selector.stats_request.dtype == "model" and fp32_selector.stats_request.dtype == "float32"
    faithful_ctx = make_context(layout, scores_by_module=scores, score_dtype_kw=True)
    fp32_ctx = make_context(layout, scores_by_module=scores, score_dtype_kw=True)
    faithful = _stage2_keep(faithful_selector, faithful_ctx)
    fp32 = _stage2_keep(fp32_selector, fp32_ctx)
    assert faithful_ctx.scratch["calls"][0][1] is None and fp32_ctx.scratch["calls"][0][1] == torch.float32
    assert not torch.equal(faithful, fp32)
    # An engine scorer without a dtype argument cannot serve float32 scores: say so.
    with pytest.raises(RuntimeError, match="score_dtype"):
        _stage2_keep(fp32_selector, make_context(layout, scores_by_module=scores))


def test_flag_temperature_auto_and_explicit():
    assert build({}, model=TINY_QWEN2_5).settings.temperature == 0.1
    assert build({}, (0.32, 0.7), TINY_QWEN3).settings.temperature == 0.3
    modality, scores = g3_inputs()
    assert stage2_keep_mask(modality, scores, 0.5, 0.5, temperature=0.1).budget.tolist() == [3, 3, 6]
    assert stage2_keep_mask(modality, scores, 0.5, 0.5, temperature=10.0).budget.tolist() == [4, 4, 4]


def test_schedule_scales_with_encoder_ratio_scale_and_layers():
    # scale x r <= L: no inner drop needed, keep ratios 1.0 (section 8.3).
    schedule = solve_schedule(0.3, 0.65, 28, [16, 18, 20], 24, encoder_ratio_scale=1.2)
    assert schedule["video_keep"] == [1.0, 1.0, 1.0]
    assert build({"encoder_ratio_scale": 1.2}, model=QWEN2_5_7B).video_keep == [1.0, 1.0, 1.0]
