"""OmniZip (baselines-reference section 6): hand-worked cases, a spec-text reference on random inputs,
the budget mapping (6.5), plan mode against real runs on the tiny Thinkers, and the skip note.

Hand-worked numbers are derived in the comments from the spec's formulas; nothing here calls the
module to produce an expected value.
"""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import load_tiny, tiny_inputs
from methods import MethodConfigError, ModelInfo, build_selector
from methods.omnizip import (
    NOTE_AUDIO_ALONE,
    NOTE_KEY,
    NOTE_NO_AUDIO,
    NOTE_NO_VIDEO,
    NOTE_VIDEO_ALONE,
    audio_keep_count,
    dpc_knn_scores,
    istc_keep_mask,
    merge_anchors,
    plan_layout,
    select_audio,
    temporal_similarity,
    token_runs,
    window_video_ratios,
)
from seats_exp.runner import attach_engine, note_counts
from seats_exp.stats import window_attention_received
from seats_exp.selection import (
    AUDIO,
    PLAN_APPROX,
    PLAN_EXACT,
    TEXT,
    VIDEO,
    EncoderStats,
    PlanInput,
    SelectionContext,
)

REPO = Path(__file__).resolve().parent.parent
INFO = {
    "qwen2_5_omni": ModelInfo("tiny_qwen2_5_omni", "qwen2_5_omni", 8, 25.0),
    "qwen3_omni": ModelInfo("tiny_qwen3_omni", "qwen3_omni", 8, 13.0),
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# =============================================================================================
# A-B. Dominant tokens and anchors
# =============================================================================================


def test_dominant_and_anchor_positions_for_a_score_vector():
    # N=20, scores high on even indices (descending from index 0), low on odd ones.
    scores = torch.tensor([10.0 - i / 2 if i % 2 == 0 else -float(i) for i in range(20)])
    chosen = select_audio(scores, rho_audio=0.5, contextual_ratio=0.1, g=3)
    # n_dom = round(0.5 * 20) = 10 -> the ten even indices
    assert sorted(chosen.dominant.tolist()) == list(range(0, 20, 2))
    # remaining (index order) = 1, 3, ..., 19 (R = 10); n_anc = min(round(0.1 * 20), 10) = 2;
    # step = 10 // 2 = 5 -> local positions 0 and 5 -> tokens 1 and 11
    assert chosen.anchors.tolist() == [1, 11]
    assert chosen.pool.tolist() == [3, 5, 7, 9, 13, 15, 17, 19]
    assert torch.nonzero(chosen.keep).flatten().tolist() == [0, 1, 2, 4, 6, 8, 10, 11, 12, 14, 16, 18]


def test_anchor_counts_round_like_python_and_need_g():
    scores = torch.arange(23, 0, -1).float()  # token i has rank i
    # N=23: n_dom = round(0.5 * 23) = round(11.5) = 12 (half to even); R = 11;
    # n_anc = round(0.1 * 23) = round(2.3) = 2; step = 11 // 2 = 5 -> remaining[0], remaining[5] = 12, 17
    chosen = select_audio(scores, rho_audio=0.5, contextual_ratio=0.1, g=3)
    assert chosen.dominant.tolist() == list(range(12)) and chosen.anchors.tolist() == [12, 17]
    # N=10, rho 0.25: round(7.5) = 8 dominant; round(0.05 * 10) = round(0.5) = 0 anchors
    chosen = select_audio(torch.arange(10, 0, -1).float(), rho_audio=0.25, contextual_ratio=0.05, g=3)
    assert chosen.dominant.tolist() == list(range(8)) and chosen.anchors.numel() == 0 and int(chosen.keep.sum()) == 8
    # g = 0 (newest version): no anchors at all
    chosen = select_audio(scores, rho_audio=0.5, contextual_ratio=0.1, g=0)
    assert chosen.anchors.numel() == 0 and int(chosen.keep.sum()) == 12


# =============================================================================================
# C. Anchor merging
# =============================================================================================


def test_merged_anchor_values_for_a_small_example():
    # audio tokens: a1=(1,0), p1=(0.9,0.1), p2=(0.8,0.6), a2=(0,1), p3=(0.2,0.9); anchors 0 and 3.
    audio = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.8, 0.6], [0.0, 1.0], [0.2, 0.9]], dtype=torch.float64)
    video = torch.tensor([[0.0, 1.0]], dtype=torch.float64)  # cross score = y / |x|
    anchors, pool = torch.tensor([0, 3]), torch.tensor([1, 2, 4])
    # assignment by cosine: p1 -> a1 (0.994 vs 0.110), p2 -> a1 (0.8 vs 0.6), p3 -> a2 (0.976 vs 0.217)
    # cross scores: p1 0.1/sqrt(0.82) = 0.110432, p2 0.6, p3 0.9/sqrt(0.85) = 0.976187
    s1, s2 = 0.1 / math.sqrt(0.82), 0.6
    # g = 1: a1 takes p2 alone (w = 1) -> (a1 + p2) / 2; a2 takes p3 -> (a2 + p3) / 2
    idx, rows = merge_anchors(audio, video, anchors, pool, g=1)
    assert idx.tolist() == [0, 3]
    torch.testing.assert_close(rows, torch.tensor([[0.9, 0.3], [0.1, 0.95]], dtype=torch.float64), atol=1e-5, rtol=0)
    # g = 3: a1 merges p1 and p2 with w = softmax(s1, s2); sum w = 1 -> midpoint of a1 and the weighted mean
    w1 = math.exp(s1) / (math.exp(s1) + math.exp(s2))
    w2 = 1 - w1  # 0.620013
    expected_a1 = [(1 + w1 * 0.9 + w2 * 0.8) / 2, (w1 * 0.1 + w2 * 0.6) / 2]  # (0.919000, 0.204999)
    idx, rows = merge_anchors(audio, video, anchors, pool, g=3)
    torch.testing.assert_close(rows, torch.tensor([expected_a1, [0.1, 0.95]], dtype=torch.float64), atol=1e-5, rtol=0)


def test_merge_without_video_scores_by_similarity_to_the_anchor():
    # same tokens as above, no video: scores = cosine to the assigned anchor: p1 0.993884, p2 0.8, p3 0.976187
    audio = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.8, 0.6], [0.0, 1.0], [0.2, 0.9]], dtype=torch.float64)
    idx, rows = merge_anchors(audio, None, torch.tensor([0, 3]), torch.tensor([1, 2, 4]), g=1)
    # g = 1: a1 takes p1 (0.994 > 0.8) -> (a1 + p1) / 2; a2 takes p3 -> (a2 + p3) / 2
    torch.testing.assert_close(rows, torch.tensor([[0.95, 0.05], [0.1, 0.95]], dtype=torch.float64), atol=1e-5, rtol=0)


# =============================================================================================
# D-E. Windows and per-window ratios
# =============================================================================================


def test_token_runs():
    assert token_runs(torch.tensor([3, 4, 5, 9, 10, 12])) == [3, 2, 1]
    assert token_runs(torch.tensor([], dtype=torch.long)) == []


def test_window_ratios_without_normalisation():
    # G = 2 (normalisation needs G > 2): base = clamp(0.75 - 0.40 S): S 0.5 -> 0.55, S 1 -> 0.35, S 0 -> 0.75
    ratios = window_video_ratios([0.5, 1.0], [288, 288], rho_video=0.7, num_video_tokens=576)
    assert ratios == pytest.approx([0.55, 0.35], abs=1e-12)
    # an extra (unguided) video run uses rho_video directly
    ratios = window_video_ratios([0.0, 0.5], [288, 288, 288], rho_video=0.6, num_video_tokens=864)
    assert ratios == pytest.approx([0.75, 0.55, 0.6], abs=1e-12)
    # equal base ratios with G = 2 stay as they are (a G >= 2 rule would rescale window 1)
    ratios = window_video_ratios([0.5, 0.5], [288, 288], rho_video=0.7, num_video_tokens=576)
    assert ratios == pytest.approx([0.55, 0.55], abs=1e-12)


def test_window_ratios_normalised_to_the_budget():
    # S = (0, 0.5, 0.25, 1) -> base (0.75, 0.55, 0.65, 0.35); sizes 100 each; rho 0.5 -> target 200.
    # base discard 230; fix min (window 3, 0.35) and max (window 0, 0.75): fixed 110;
    # others 1, 2 (discard 120) scale by (200 - 110) / 120 = 0.75 -> 0.4125, 0.4875; total 200: done.
    ratios = window_video_ratios([0.0, 0.5, 0.25, 1.0], [100] * 4, rho_video=0.5, num_video_tokens=400)
    assert ratios == pytest.approx([0.75, 0.4125, 0.4875, 0.35], abs=1e-12)


def test_window_ratios_normalisation_hits_the_clamp():
    # Same windows, rho 0.45 -> target 180: scale 70/120 -> 0.320833 (clamped to 0.35), 0.379167;
    # total 182.9167 misses by -2.9167 -> -2.9167/200 = -0.0145833 per window: 0.3354 -> 0.35, 0.364583.
    ratios = window_video_ratios([0.0, 0.5, 0.25, 1.0], [100] * 4, rho_video=0.45, num_video_tokens=400)
    scaled = 0.65 * 70 / 120  # 0.379167
    third = scaled - (75 + 35 + scaled * 100 + 35 - 180) / 200  # residual step: 0.379167 - 0.0145833
    assert ratios == pytest.approx([0.75, 0.35, third, 0.35], abs=1e-12)
    assert third == pytest.approx(0.364583, abs=1e-6)
    # realised discard 181.46 != 180: the clamps make the budget unreachable (spec 6.3 E)
    assert sum(r * 100 for r in ratios) == pytest.approx(181.458333, abs=1e-5)
    # rho 0.4 -> target 160: both others clamp at 0.35 and stay there after the residual step
    ratios = window_video_ratios([0.0, 0.5, 0.25, 1.0], [100] * 4, rho_video=0.4, num_video_tokens=400)
    assert ratios == pytest.approx([0.75, 0.35, 0.35, 0.35], abs=1e-12)


def test_window_ratios_all_base_ratios_equal_counts_one_window_twice():
    # S = 0.5 everywhere -> base 0.55 x 3, sizes 100, rho 0.7 -> target 210; min and max are both
    # window 0 [quirk]: fixed = 2 x 55 = 110; others 1, 2 (110): scale 100/110 -> 0.5 each;
    # total 55 + 50 + 50 = 155, residual 55/200 = 0.275 -> 0.775 -> clamped to 0.75. Window 0 stays 0.55.
    ratios = window_video_ratios([0.5, 0.5, 0.5], [100] * 3, rho_video=0.7, num_video_tokens=300)
    assert ratios == pytest.approx([0.55, 0.75, 0.75], abs=1e-12)
    # rho 0.6 -> target 180: scale 70/110 -> 0.35; total 125, residual 55/200 -> 0.625 each
    ratios = window_video_ratios([0.5, 0.5, 0.5], [100] * 3, rho_video=0.6, num_video_tokens=300)
    assert ratios == pytest.approx([0.55, 0.625, 0.625], abs=1e-12)


# =============================================================================================
# F. ISTC
# =============================================================================================

# Six tokens: t0=(1,0,0) t1=(1,1,0)/sqrt2 t2=(0,2,1)/sqrt5 t3=(0,0,1) t4=(1,0,1)/sqrt2 t5=(-1,0,0).
# Cosine distances 1 - cos (a = 1 - 1/sqrt2 = 0.292893, b = 1 - 2/sqrt10 = 0.367544,
# c = 1 - 1/sqrt5 = 0.552786, e = 1 - 1/sqrt10 = 0.683772, h = 1 + 1/sqrt2 = 1.707107):
#        t0   t1   t2   t3   t4   t5
#   t0    -    a    1    1    a    2
#   t1    a    -    b    1   0.5   h
#   t2    1    b    -    c    e    1
#   t3    1    1    c    -    a    1
#   t4    a   0.5   e    a    -    h
#   t5    2    h    1    1    h    -
# k' = min(5, 6 - 1) = 5: density = exp(-row mean): means 0.917157, 0.773509, 0.720821, 0.769136,
# 0.695333, 1.482843 -> t4 is the density peak.  delta = distance to the nearest denser token:
# t0 -> t1 (a), t1 -> t2 (b), t2 -> t4 (e), t3 -> t4 (a), t5 -> t2/t3 (1); the peak t4 takes its
# largest distance h.  score = density x delta.
DPC_TOKENS = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 2, 1], [0, 0, 1], [1, 0, 1], [-1, 0, 0]], dtype=torch.float64)
DPC_MEANS = [0.917157, 0.773509, 0.720821, 0.769136, 0.695333, 1.482843]
DPC_DELTAS = [0.292893, 0.367544, 0.683772, 0.292893, 1.707107, 1.0]


def test_dpc_knn_scores_on_a_six_token_frame():
    scores = dpc_knn_scores(DPC_TOKENS[None], k=5)[0]
    expected = [math.exp(-m) * d for m, d in zip(DPC_MEANS, DPC_DELTAS)]
    # = 0.117056, 0.169582, 0.332555, 0.135731, 0.851690, 0.226991
    torch.testing.assert_close(scores, torch.tensor(expected, dtype=torch.float64), atol=2e-6, rtol=0)
    # ratio 0.5 -> keep int(6 x 0.5) = 3: t4, t2, t5 (a one-frame run is an even frame)
    keep = istc_keep_mask(DPC_TOKENS, [6], [0.5], tokens_per_frame=6)
    assert torch.nonzero(keep).flatten().tolist() == [2, 4, 5]


def test_temporal_selection_on_a_pair_of_frames():
    # frame 0 (even, DPC-KNN with k' = 3): (1,0) (0,1) (1,1) (1,-1): tokens 0 and 1 are orthogonal, 2
    # and 3 sit 45 degrees from token 0; densities exp(-mean of 3) = 0.589 (t0, t2), 0.368 (t1, t3);
    # t0 and t2 are co-peaks (delta 1) -> scores 0.589, 0.108, 0.589, 0.108 -> keep t0, t2.
    # frame 1 (odd): cosine with the *unpruned* frame 0 at each position: 1, 0, 0.996, -1
    # -> keep the two lowest: positions 3 and 1 (tokens 7 and 5) -- positions 1 and 3 of frame 0
    # were themselves dropped, the comparison still uses them.
    frame0 = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, -1.0]])
    frame1 = torch.tensor([[2.0, 0.0], [1.0, 0.0], [1.0, 1.2], [-1.0, 1.0]])
    sims = temporal_similarity(frame1[None], frame0[None])[0]
    torch.testing.assert_close(sims, torch.tensor([1.0, 0.0, 2.2 / math.sqrt(2 * 2.44), -1.0]), atol=1e-6, rtol=0)
    keep = istc_keep_mask(torch.cat([frame0, frame1]), [8], [0.5], tokens_per_frame=4)
    assert torch.nonzero(keep).flatten().tolist() == [0, 2, 5, 7]
    # keep count int(4 x (1 - 0.3)) = int(2.8) = 2 as well; ratio 0 keeps everything; an incomplete
    # frame (run of 6 with P = 4) keeps its full frame's share and drops the 2 leftover tokens
    assert int(istc_keep_mask(torch.cat([frame0, frame1]), [8], [0.3], 4).sum()) == 4
    assert bool(istc_keep_mask(torch.cat([frame0, frame1]), [8], [0.0], 4).all())
    assert istc_keep_mask(torch.cat([frame0, frame1])[:6], [6], [0.5], 4).tolist() == [True, False, True, False, False, False]
    assert istc_keep_mask(torch.cat([frame0, frame1])[:6], [6], [0.0], 4).tolist() == [True] * 4 + [False] * 2


# =============================================================================================
# An independent reference of windows + ratios + per-window counts from the spec text
# =============================================================================================


def _spec_reference_ratios(modality: list[int], audio_kept: list[bool], rho_v: float, num_video: int):
    """Section 6.3 D-E, written from the text with plain loops (independent of methods/omnizip.py)."""
    video_runs, audio_runs = [], []
    prev = None
    for m in modality:
        if m in (VIDEO, AUDIO):
            runs = video_runs if m == VIDEO else audio_runs
            if m == prev:
                runs[-1] += 1
            else:
                runs.append(1)
        prev = m
    guided = min(len(video_runs), len(audio_runs))
    s_a, start = [], 0
    for i, size in enumerate(audio_runs):
        if i < guided:
            s_a.append(sum(audio_kept[start : start + size]) / size)
        start += size
    base = [min(max(0.75 - 0.40 * s, 0.35), 0.75) for s in s_a]
    ratios = list(base)
    sizes = video_runs[:guided]
    target = rho_v * num_video - rho_v * sum(video_runs[guided:])
    if guided > 2 and sum(sizes) > 0:
        discard = sum(r * n for r, n in zip(base, sizes))
        if abs(discard - target) > 1e-3 and discard > 0:
            lo = min(range(guided), key=lambda i: (base[i], i))
            hi = min(range(guided), key=lambda i: (-base[i], i))
            other = [i for i in range(guided) if i not in (lo, hi)]
            if other and sum(base[i] * sizes[i] for i in other) > 0:
                fixed = base[lo] * sizes[lo] + base[hi] * sizes[hi]
                factor = (target - fixed) / sum(base[i] * sizes[i] for i in other)
                for i in other:
                    ratios[i] = min(max(base[i] * factor, 0.35), 0.75)
                miss = target - sum(r * n for r, n in zip(ratios, sizes))
                if abs(miss) > 1e-3:
                    for i in other:
                        ratios[i] = min(max(ratios[i] + miss / sum(sizes[j] for j in other), 0.35), 0.75)
    return video_runs, ratios + [rho_v] * (len(video_runs) - guided)


def _random_layout(rng: random.Random, p: int):
    """A prompt: text, then windows of [video grids][audio tokens], a tail of one modality, text."""
    modality = [TEXT] * rng.randint(1, 5)
    windows = rng.randint(1, 7)
    for _ in range(windows):
        modality += [VIDEO] * (p * rng.choice([1, 2, 2, 2, 3]))
        if rng.random() < 0.9:
            modality += [AUDIO] * rng.randint(1, 12)
    tail = rng.choice(["none", "video", "audio"])
    modality += {"none": [], "video": [VIDEO] * (p * rng.randint(1, 4)), "audio": [AUDIO] * rng.randint(1, 9)}[tail]
    modality += [TEXT] * rng.randint(1, 4)
    return modality


def test_selector_windows_ratios_and_counts_match_a_spec_text_reference_on_random_inputs():
    rng = random.Random(7)
    p = 10
    for trial in range(60):
        modality = _random_layout(rng, p)
        mod = torch.tensor(modality)
        n_v, n_a = int((mod == VIDEO).sum()), int((mod == AUDIO).sum())
        if n_a == 0:
            continue
        g = torch.Generator().manual_seed(trial)
        embeds = torch.randn(len(modality), 8, generator=g)
        rho_v, rho_a = rng.uniform(0.3, 0.8), rng.uniform(0.0, 0.9)
        sel = build_selector("omnizip", {"rho_video": rho_v, "rho_audio": rho_a}, 1.0, 1.0, INFO["qwen2_5_omni"])
        ctx = SelectionContext(
            modality=mod, original_index=torch.arange(len(modality)), position_ids=torch.zeros(3, len(modality)),
            token_time=torch.zeros(len(modality)), video_grid_thw=torch.tensor([[n_v // p, 2, 2]]),
            video_tokens_per_grid=p, seconds_per_grid=1.0, audio_tokens_per_second=25.0, num_layers=8,
            family="qwen2_5_omni", stats=EncoderStats(audio_attn=torch.rand(n_a, generator=g)), embeds=embeds,
        )
        selection = sel.before_llm(ctx)
        keep = selection.keep.tolist()
        audio_kept = [k for k, m in zip(keep, modality) if m == AUDIO]
        video_runs, ratios = _spec_reference_ratios(modality, audio_kept, rho_v, n_v)
        # per video run: F = size // P frames, each keeping int(P (1 - ratio))
        video_kept = [k for k, m in zip(keep, modality) if m == VIDEO]
        start = 0
        for size, ratio in zip(video_runs, ratios):
            per_frame = min(p, int(p * (1.0 - ratio)))
            got = [sum(video_kept[start + t * p : start + (t + 1) * p]) for t in range(size // p)]
            assert got == [per_frame] * (size // p), (trial, video_runs, ratios)
            start += size
        # the module's windows and ratios for the same audio selection equal the reference's
        # (float32 vs float64 densities: 1e-6)
        positions = torch.nonzero(mod == VIDEO).flatten()
        audio_runs = token_runs(torch.nonzero(mod == AUDIO).flatten())
        assert token_runs(positions) == video_runs
        guided = min(len(video_runs), len(audio_runs))
        kept_t = torch.tensor(audio_kept)
        density = [float(r.float().mean()) for r in torch.split(kept_t, audio_runs)][:guided]
        assert window_video_ratios(density, video_runs, rho_v, n_v) == pytest.approx(ratios, abs=1e-6)
        assert all(k for k, m in zip(keep, modality) if m == TEXT)


# =============================================================================================
# Budget mapping (6.5) and configuration errors
# =============================================================================================


def test_budget_mapping_from_the_schedule():
    sel = build_selector("omnizip", {}, 0.30, 0.65, INFO["qwen2_5_omni"])  # SEATS' row (30-65)
    assert sel.settings.rho_video == pytest.approx(0.70) and sel.settings.rho_audio == pytest.approx(0.40)
    sel = build_selector("omnizip", {}, 0.25, 0.25, INFO["qwen2_5_omni"])  # the greyed (25-25) row
    assert sel.settings.rho_video == pytest.approx(0.75) and sel.settings.rho_audio == pytest.approx(0.80)
    sel = build_selector("omnizip", {"g": 0}, 0.30, 0.65, INFO["qwen2_5_omni"])  # no anchors: 1 - r_a
    assert sel.settings.rho_audio == pytest.approx(0.35)
    sel = build_selector("omnizip", {"rho_video": 0.6, "rho_audio": 0.3}, 0.06, 0.35, INFO["qwen2_5_omni"])
    assert (sel.settings.rho_video, sel.settings.rho_audio) == (0.6, 0.3)  # knobs set directly
    assert sel.settings.budget["source"] == {"rho_video": "knob", "rho_audio": "knob"}


@pytest.mark.parametrize("video", [0.20, 0.70])
def test_unreachable_video_retention_is_a_config_error_naming_the_range(video):
    with pytest.raises(MethodConfigError, match=r"reachable video retention \[0\.25, 0\.65\].*method\.clamp=true"):
        build_selector("omnizip", {}, video, 0.55, INFO["qwen2_5_omni"])


def test_clamp_runs_at_the_nearest_reachable_budget_and_records_it():
    sel = build_selector("omnizip", {"clamp": True}, 0.20, 0.55, INFO["qwen2_5_omni"])
    assert sel.settings.rho_video == pytest.approx(0.75)
    budget = sel.describe()["budget"]
    assert budget["requested"] == {"video": 0.20, "audio": 0.55}
    assert budget["reached"]["video"] == pytest.approx(0.25) and budget["reached"]["audio"] == 0.55
    assert budget["clamped"] is True


@pytest.mark.parametrize("params, match", [
    ({"clamp": "yes"}, "method.clamp"), ({"g": -1}, "method.g"), ({"compute_dtype": "fp16"}, "compute_dtype"),
    ({"rho_video": 1.5}, "method.rho_video"), ({"contextual_ratio": -0.1}, "contextual_ratio"),
    ({"window": 2}, "does not take"), ({"missing_modality": "skip"}, "missing_modality"),
])
def test_bad_settings_name_the_key(params, match):
    with pytest.raises(MethodConfigError, match=match):
        build_selector("omnizip", params, 0.30, 0.65, INFO["qwen2_5_omni"])


def _seats_exp(args: list[str], tmp: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HYDRA_"))}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", HOME=str(tmp))
    return subprocess.run([str(Path(sys.executable).parent / "seats-exp"), f"paths.root={tmp}", *args], cwd=tmp,
                          env=env, capture_output=True, text=True, timeout=timeout)


def test_cli_unreachable_schedule_exits_2_and_clamp_plan_records_the_budget(tmp_path):
    proc = _seats_exp(["mode=plan", "model=qwen2_5_omni_7b", "method=omnizip", "schedule=r25"], tmp_path)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if "configuration error" in line]
    assert len(errors) == 1 and "[0.25, 0.65]" in errors[0] and "schedule.video=0.2" in errors[0], proc.stderr
    proc = _seats_exp(["mode=plan", "model=qwen2_5_omni_7b", "method=omnizip", "schedule=r25", "method.clamp=true",
                       "plan.json=true"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout.strip().splitlines()[-1])
    assert plan["omnizip"]["budget"]["reached"]["video"] == pytest.approx(0.25)
    assert plan["omnizip"]["rho_video"] == pytest.approx(0.75)


# =============================================================================================
# Plan mode
# =============================================================================================


def test_plan_on_the_canonical_7b_input():
    # 64 s at 2 fps = 64 grids x 144 tokens = 9216 video tokens, 1600 audio tokens, 28 layers, R=35 pair
    sel = build_selector("omnizip", {}, 0.30, 0.65, ModelInfo("qwen2_5_omni_7b", "qwen2_5_omni", 28, 25.0))
    inp = PlanInput(video_tokens=9216, audio_tokens=1600, text_tokens=100, video_tokens_per_grid=144, num_grids=64,
                    audio_tokens_per_second=25.0, num_layers=28)
    counts = sel.plan(inp)
    # 32 windows of 2 grids + 50 audio tokens.  Audio: round(0.6 x 1600) = 960 + round(0.05 x 1600) = 80
    video_runs, audio_runs = plan_layout(inp)
    assert video_runs == [288] * 32 and audio_runs == [50] * 32
    video, audio = counts.per_layer[0]
    assert audio == 1040 and len(counts.per_layer) == 28
    # S_a = 0.65 everywhere -> base 0.49 for all 32 windows: all equal, so window 0 is both the min
    # and the max [quirk] and the other 31 are scaled: target 0.7 x 9216 = 6451.2, fixed 2 x 141.12,
    # scale (6451.2 - 282.24) / (31 x 141.12) -> 0.690974; the total then misses by 141.12 (window 0
    # counted twice), the residual step adds 141.12 / (31 x 288) -> (6451.2 - 141.12) / 8928 = 0.706774.
    # Keep int(144 x 0.51) = 73 per grid in window 0, int(144 x 0.293226) = 42 on the other 62 grids.
    ratios = counts.details["omnizip"]["window_video_ratios"]
    assert ratios[0] == pytest.approx(0.49) and ratios[1:] == pytest.approx([(6451.2 - 141.12) / 8928] * 31)
    assert video == 2 * 73 + 62 * 42


@pytest.mark.parametrize("grids, audio, expected", [
    (4, 101, ([288, 288], [50, 51])),  # the tiny clip: a third 1-token audio chunk joins the second run
    (5, 100, ([288, 288, 144], [50, 50])),  # a trailing video-only window
    (2, 160, ([288], [160])),  # audio longer than video: chunk 0 audio and the extra chunks form one run
])
def test_plan_layout_qwen2_5(grids, audio, expected):
    inp = PlanInput(video_tokens=grids * 144, audio_tokens=audio, text_tokens=10, video_tokens_per_grid=144,
                    num_grids=grids, audio_tokens_per_second=25.0, num_layers=8)
    assert plan_layout(inp) == expected


# =============================================================================================
# Real runs on the tiny Thinkers: plan prediction = realised retention
# =============================================================================================


class _Spy:
    """Wrap a selector's before_llm (instance attribute) to keep the context and the selection."""

    def __init__(self, selector):
        self.calls = []
        inner = selector.before_llm

        def before_llm(ctx):
            sel = inner(ctx)
            self.calls.append((ctx.modality.clone(), None if sel is None else sel))
            return sel

        selector.before_llm = before_llm


def _run_tiny(request, family, clip, params, video=0.30, audio=0.65):
    path = request.getfixturevalue("tiny_qwen2_5" if family == "qwen2_5_omni" else "tiny_qwen3")
    loaded = load_tiny(path, family)
    inputs, has_audio = tiny_inputs(loaded, request.getfixturevalue("clips")[clip])
    selector = build_selector("omnizip", params, video, audio, INFO[family])
    spy = _Spy(selector)
    engine = attach_engine(loaded, selector, "all_executed")
    try:
        loaded.thinker.model.rope_deltas = None
        loaded.thinker.generate(**inputs, use_audio_in_video=has_audio, max_new_tokens=2)
        record = engine.pop_records()[0]
    finally:
        engine.detach()
    ids = inputs["input_ids"][0]
    grid = inputs["video_grid_thw"]
    per_grid = int(grid[0, 1] * grid[0, 2]) // 4
    inp = PlanInput(video_tokens=int((ids == loaded.adapter.video_token_id).sum()),
                    audio_tokens=int((ids == loaded.adapter.audio_token_id).sum()), text_tokens=0,
                    video_tokens_per_grid=per_grid, num_grids=int(grid[0, 0]),
                    audio_tokens_per_second=loaded.adapter.audio_tokens_per_second, num_layers=loaded.adapter.num_layers)
    return selector, spy, record, inp


FAMILIES = [pytest.param("qwen2_5_omni", id="qwen2_5"), pytest.param("qwen3_omni", id="qwen3")]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("params", [
    pytest.param({"g": 0, "rho_audio": 0.0}, id="all-audio"),  # S_a = 1 in every window
    pytest.param({"g": 0, "rho_audio": 1.0}, id="no-audio"),  # S_a = 0 in every window
])
def test_tiny_run_realises_the_plan_exactly_when_audio_density_is_even(request, family, params):
    selector, spy, record, inp = _run_tiny(request, family, "av", params)
    modality, _ = spy.calls[0]
    # the plan's layout is what the processor produced
    assert plan_layout(inp) == (token_runs(torch.nonzero(modality == VIDEO).flatten()),
                                token_runs(torch.nonzero(modality == AUDIO).flatten()))
    plan = selector.plan(inp)
    realised = [(c["video"], c["audio"]) for c in record.kept_counts]
    assert realised == plan.per_layer and plan.per_layer[0][0] < inp.video_tokens
    assert plan.layer_exactness() == [PLAN_EXACT] * inp.num_layers


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_run_at_r35_realises_the_plans_counts(request, family):
    """Audio is exact; the video count is the plan's count for the realised per-window audio density."""
    selector, spy, record, inp = _run_tiny(request, family, "av", {})
    modality, selection = spy.calls[0]
    keep = selection.keep
    audio_pos = torch.nonzero(modality == AUDIO).flatten()
    video_pos = torch.nonzero(modality == VIDEO).flatten()
    video_runs, audio_runs = plan_layout(inp)
    assert (token_runs(video_pos), token_runs(audio_pos)) == (video_runs, audio_runs)
    plan = selector.plan(inp)
    planned_video, planned_audio = plan.per_layer[0]
    assert plan.layer_exactness() == [PLAN_APPROX] * inp.num_layers  # the video count depends on scores
    realised = [(c["video"], c["audio"]) for c in record.kept_counts]
    assert all(r == realised[0] for r in realised) and realised[0][1] == planned_audio
    # video: F x int(P (1 - ratio_i)) per window, ratios from the realised audio kept per run
    kept_audio = keep[audio_pos].tolist()
    starts = [sum(audio_runs[:i]) for i in range(len(audio_runs))]
    guided = min(len(video_runs), len(audio_runs))
    density = [sum(kept_audio[s : s + n]) / n for s, n in zip(starts[:guided], audio_runs[:guided])]
    ratios = window_video_ratios(density, video_runs, selector.settings.rho_video, inp.video_tokens)
    p = inp.video_tokens_per_grid
    expected_video = sum((n // p) * int(p * (1.0 - r)) for n, r in zip(video_runs, ratios))
    assert realised[0][0] == expected_video
    assert record.events == [(0, record.llm_input_length, "omnizip")]
    # the merged anchors were written: some kept audio rows changed, every pruned position is gone
    assert selection.replace_index is not None and selection.replace_index.numel() > 0
    assert bool(torch.isin(selection.replace_index, audio_pos).all()) and bool(keep[selection.replace_index].all())
    assert "evenly" in plan.details["omnizip"]["video_count_assumes"]


def test_sample_without_audio_runs_full_tokens_with_a_note(request):
    selector, spy, record, inp = _run_tiny(request, "qwen2_5_omni", "silent", {})
    assert record.notes == {NOTE_KEY: NOTE_NO_AUDIO}
    assert record.events == [] and record.kept_counts[0]["video"] == inp.video_tokens > 0
    assert note_counts([{"notes": record.notes}, {"notes": {}}, {"notes": dict(record.notes)}]) == {
        NOTE_KEY: {NOTE_NO_AUDIO: 2}}


def test_sample_without_audio_compress_present_prunes_video_alone(request):
    selector, spy, record, inp = _run_tiny(request, "qwen2_5_omni", "silent", {"missing_modality": "compress_present"})
    assert record.notes == {NOTE_KEY: NOTE_VIDEO_ALONE}
    # every window unguided: rho_video = 0.70 -> int(144 x 0.3) = 43 per grid (floor of 43.2) on all grids
    assert inp.audio_tokens == 0 and inp.video_tokens_per_grid == 144
    assert record.kept_counts[0]["video"] == inp.num_grids * 43 == selector.plan(inp).per_layer[0][0]
    assert selector.plan(inp).layer_exactness()[0] == PLAN_EXACT


@pytest.mark.parametrize("mode, note", [("full_tokens", NOTE_NO_VIDEO), ("compress_present", NOTE_AUDIO_ALONE)])
def test_sample_without_video(mode, note):
    n = 40
    modality = torch.tensor([TEXT] * 3 + [AUDIO] * n + [TEXT] * 2)
    g = torch.Generator().manual_seed(0)
    ctx = SelectionContext(
        modality=modality, original_index=torch.arange(45), position_ids=torch.zeros(3, 45), token_time=torch.zeros(45),
        video_grid_thw=None, video_tokens_per_grid=0, seconds_per_grid=1.0, audio_tokens_per_second=25.0, num_layers=8,
        family="qwen2_5_omni", stats=EncoderStats(audio_attn=torch.rand(n, generator=g)), embeds=torch.randn(45, 6, generator=g),
    )
    selector = build_selector("omnizip", {"missing_modality": mode}, 0.30, 0.65, INFO["qwen2_5_omni"])
    selection = selector.before_llm(ctx)
    assert ctx.notes == {NOTE_KEY: note}
    inp = PlanInput(video_tokens=0, audio_tokens=n, text_tokens=5, video_tokens_per_grid=0, num_grids=0,
                    audio_tokens_per_second=25.0, num_layers=8)
    if mode == "full_tokens":
        assert selection is None and selector.plan(inp).per_layer[0] == (0, n)
    else:  # round(0.6 x 40) = 24 dominant + round(0.05 x 40) = 2 anchors (with merged rows)
        assert int(selection.keep[modality == AUDIO].sum()) == 26 == audio_keep_count(n, 0.4, 0.05, 3)
        assert selector.plan(inp).per_layer[0] == (0, 26) and selection.replace_index.numel() == 2


# =============================================================================================
# End to end: seats-exp on a Daily-Omni-schema set with one silent clip
# =============================================================================================


@pytest.mark.slow
def test_seats_exp_run_notes_and_counts_skipped_samples(tmp_path, tiny_qwen2_5):
    from evaluation.synthetic import generate, video_path, write_clip

    root = tmp_path / "Daily-Omni"
    qa_path = generate(root, num_clips=2, seconds=2.0)
    (root / "synthetic.json").unlink()
    qa = json.loads(qa_path.read_text())
    write_clip(video_path(root, qa[1]["video_id"]), seconds=2.0, audio=False)
    proc = _seats_exp(["benchmark=dailyomni", f"benchmark.tasks.dailyomni.annotations={qa_path}",
                       f"benchmark.tasks.dailyomni.video_root={root}", f"model.checkpoint={tiny_qwen2_5}",
                       "method=omnizip", "schedule=r35", "eval.max_new_tokens_override=2", "eval.progress=false"],
                      tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = Path([l for l in proc.stdout.splitlines() if l.startswith("output folder: ")][0].split(": ", 1)[1])
    result = json.loads((run_dir / "result.json").read_text())
    samples = {r["sample_id"]: r for r in map(json.loads, (run_dir / "samples.jsonl").read_text().splitlines())}
    with_audio, silent = samples[qa[0]["question_id"]], samples[qa[1]["question_id"]]
    assert silent["notes"] == {NOTE_KEY: NOTE_NO_AUDIO} and silent["drop_events"] == []
    assert silent["llm_input_tokens"] == silent["input_tokens"]
    assert with_audio["notes"] == {} and with_audio["llm_input_tokens"] < with_audio["input_tokens"]
    assert result["sample_notes"] == {NOTE_KEY: {NOTE_NO_AUDIO: 1}}
    assert result["tasks"]["dailyomni"]["sample_notes"] == {NOTE_KEY: {NOTE_NO_AUDIO: 1}}
    assert result["method_settings"]["budget"]["reached"] == {"video": 0.30, "audio": 0.65}


# =============================================================================================
# The paper cells
# =============================================================================================

BENCHMARKS = ["dailyomni", "worldsense", "omnivideobench", "videomme", "lvomnibench"]


@pytest.mark.parametrize("model, family", [("qwen2_5_omni_7b", "qwen2_5_omni"), ("qwen3_omni_30b_a3b", "qwen3_omni")])
def test_paper_cells(model, family, tmp_path):
    """R=35 and the greyed R=25 (25-25) row (baselines-reference 9.1/9.2) are cells of the paper sweep."""
    from hydra import compose, initialize_config_dir

    from launchers.list_points import expand
    from seats_exp.config import validate

    info, points = expand([f"experiment=paper_{model}", f"paths.root={tmp_path}",
                           f"+paper_cell/{model}=glob(omnizip_*)"])
    assert info["experiment"] == f"paper_{model}"
    assert sorted(p.run_name for p in points) == sorted(f"{model}.omnizip.{s}.{b}" for s in ("r35", "r25") for b in BENCHMARKS)
    assert all(p.problem is None for p in points), [p.problem for p in points if p.problem]
    r35 = {"qwen2_5_omni": (0.30, 0.65), "qwen3_omni": (0.32, 0.70)}[family]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        for cell, pair, knobs in (("r35", r35, (1 - r35[0], 1 - r35[1] + 0.05)), ("r25", (0.25, 0.25), (0.75, 0.80))):
            cfg = compose("config", overrides=[f"experiment=paper_{model}", f"+paper_cell/{model}=omnizip_{cell}",
                                               "benchmark=worldsense", f"paths.root={tmp_path}"])
            rc = validate(cfg, check_data=False)
            assert (rc.method.name, rc.schedule.name, (rc.schedule.video, rc.schedule.audio)) == ("omnizip", cell, pair)
            sel = build_selector("omnizip", rc.method.params, rc.schedule.video, rc.schedule.audio, INFO[family])
            assert (sel.settings.rho_video, sel.settings.rho_audio) == pytest.approx(knobs)


def test_clip_scope_statistic_in_query_blocks_equals_one_block():
    """A clip-long softmax window is scored in blocks of query rows when it exceeds single_window."""
    g = torch.Generator().manual_seed(3)
    q, k = torch.randn(90, 3, 8, generator=g, dtype=torch.float64), torch.randn(90, 3, 8, generator=g, dtype=torch.float64)
    whole = window_attention_received(q, k, window=90)  # one [1, 3, 90, 90] block
    blocked = window_attention_received(q, k, window=90, single_window=3 * 90 * 7)  # 7 query rows per block
    torch.testing.assert_close(blocked, whole, atol=1e-12, rtol=0)
    assert whole.sum().item() == pytest.approx(90.0)  # every query row's probabilities sum to 1


@pytest.mark.parametrize("compute_dtype, expected", [("model", torch.bfloat16), ("float32", torch.float32)])
def test_compute_dtype(compute_dtype, expected):
    """Similarities, DPC-KNN and the merge run in the embeddings' dtype (faithful) or in float32."""
    p, n_a = 4, 20
    modality = torch.tensor([TEXT] + [VIDEO] * (2 * p) + [AUDIO] * n_a + [TEXT])
    g = torch.Generator().manual_seed(1)
    embeds = torch.randn(modality.numel(), 6, generator=g).to(torch.bfloat16)
    ctx = SelectionContext(
        modality=modality, original_index=torch.arange(modality.numel()), position_ids=torch.zeros(3, modality.numel()),
        token_time=torch.zeros(modality.numel()), video_grid_thw=torch.tensor([[2, 4, 4]]), video_tokens_per_grid=p,
        seconds_per_grid=1.0, audio_tokens_per_second=25.0, num_layers=8, family="qwen2_5_omni",
        stats=EncoderStats(audio_attn=torch.rand(n_a, generator=g)), embeds=embeds,
    )
    selector = build_selector("omnizip", {"compute_dtype": compute_dtype, "contextual_ratio": 0.1}, 0.30, 0.65,
                              INFO["qwen2_5_omni"])
    selection = selector.before_llm(ctx)
    assert selection.replace_embeds.dtype == expected and selection.replace_index.numel() == 2
