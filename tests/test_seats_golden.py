"""SEATS golden vectors from seats-reference sections 7.2, 8.3 and 16 (G1-G4), matched exactly."""

from __future__ import annotations

import pytest
import torch

from methods.seats import (
    contiguity_windows,
    solve_schedule,
    stage1_keep_count,
    stage1_keep_mask,
    stage1_window_keep,
    stage2_keep_mask,
)
from seats_exp.selection import AUDIO, VIDEO

QWEN2_5_KEEP = [0.9298, 0.7949, 0.2986]
QWEN3_KEEP = [0.9255, 0.7813, 0.239]

# (rho_v, rho_a, video_encoder_ratio, audio_encoder_ratio): section 8.3, float64 values as printed.
QWEN2_5_PAIRS = [
    (0.30, 0.65, 0.42, 0.9099999999999999),
    (0.20, 0.55, 0.27999999999999997, 0.77),
    (0.10, 0.45, 0.13999999999999999, 0.63),
    (0.06, 0.35, 0.08399999999999999, 0.48999999999999994),
]
QWEN3_PAIRS = [
    (0.32, 0.70, 0.44799999999999995, 0.9799999999999999),
    (0.22, 0.60, 0.308, 0.84),
    (0.12, 0.50, 0.16799999999999998, 0.7),
    (0.07, 0.45, 0.098, 0.63),
]


@pytest.mark.parametrize("rho_v, rho_a, video_encoder, audio_encoder", QWEN2_5_PAIRS)
def test_schedule_qwen2_5_7b(rho_v, rho_a, video_encoder, audio_encoder):
    schedule = solve_schedule(rho_v, rho_a, 28, [16, 18, 20], 24, 1.4)
    assert schedule["video_encoder_ratio"] == video_encoder
    assert schedule["audio_encoder_ratio"] == audio_encoder
    assert schedule["video_keep"] == QWEN2_5_KEEP
    assert schedule["audio_keep"] == QWEN2_5_KEEP
    assert schedule["drop_layers"] == [16, 18, 20]
    assert schedule["remove_layer"] == 23
    assert schedule["f"] == {"video": 0.7793, "audio": 0.7793}


@pytest.mark.parametrize("rho_v, rho_a, video_encoder, audio_encoder", QWEN3_PAIRS)
def test_schedule_qwen3_30b(rho_v, rho_a, video_encoder, audio_encoder):
    schedule = solve_schedule(rho_v, rho_a, 48, [27, 31, 35], 40, 1.4)
    assert schedule["video_encoder_ratio"] == video_encoder
    assert schedule["audio_encoder_ratio"] == audio_encoder
    assert schedule["video_keep"] == QWEN3_KEEP
    assert schedule["audio_keep"] == QWEN3_KEEP
    assert schedule["drop_layers"] == [27, 31, 35]
    assert schedule["remove_layer"] == 39
    assert schedule["f"] == {"video": 0.8272, "audio": 0.8272}


def test_schedule_qwen2_5_pairs_through_qwen3_config_give_qwen3_lists():
    for rho_v, rho_a, _, _ in QWEN2_5_PAIRS:
        schedule = solve_schedule(rho_v, rho_a, 48, [27, 31, 35], 40)
        assert schedule["video_keep"] == QWEN3_KEEP == schedule["audio_keep"]


def test_schedule_edge_cases():
    # Unsorted input is sorted; drops at/after remove_layer are not effective (section 8.1).
    schedule = solve_schedule(0.3, 0.65, 28, [20, 16, 18, 23], 24)
    assert schedule["drop_layers"] == [16, 18, 20]
    assert schedule["video_keep"] == QWEN2_5_KEEP
    # No drops: empty lists.  No late layer: remove_layer = L.
    schedule = solve_schedule(0.3, 0.65, 28, [], None)
    assert schedule["video_keep"] == [] and schedule["remove_layer"] == 28


# Section 7.2 (G4): per-window Stage-I counts for n = 288 / 144 video and 50 audio tokens.
G4 = [
    (0.30, 0.65, 121, 60, 45),
    (0.20, 0.55, 81, 40, 38),
    (0.10, 0.45, 40, 20, 32),
    (0.06, 0.35, 24, 12, 24),
    (0.32, 0.70, 129, 65, 49),
    (0.22, 0.60, 89, 44, 42),
    (0.12, 0.50, 48, 24, 35),
    (0.07, 0.45, 28, 14, 32),
]


@pytest.mark.parametrize("rho_v, rho_a, video_288, video_144, audio_50", G4)
def test_g4_stage1_window_counts(rho_v, rho_a, video_288, video_144, audio_50):
    video_encoder, audio_encoder = rho_v * 1.4, rho_a * 1.4
    assert stage1_keep_count(288, video_encoder) == video_288
    assert stage1_keep_count(144, video_encoder) == video_144
    assert stage1_keep_count(50, audio_encoder) == audio_50


def test_g4_counts_realised_by_the_mask():
    # The masks keep exactly the table's counts: two full 288-windows plus a shorter 144-window.
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(288 * 2 + 144, 16, generator=generator)
    scores = torch.rand(288 * 2 + 144, generator=generator)
    keep = stage1_keep_mask(features, scores, 288, 0.30 * 1.4)
    assert keep[:288].sum() == 121 and keep[288:576].sum() == 121 and keep[576:].sum() == 60


G1_FEATURES = [
    [3, 1, 1, 3], [1, 2, 2, -2], [-3, -1, -2, 3], [3, -3, 0, 2], [-3, 2, -3, 0], [2, -1, -1, -2],
    [2, -2, 3, 0], [0, 0, 1, 0], [0, 3, 2, 2], [1, 1, -1, 3], [0, -2, 2, -2], [3, 1, -3, -3],
]  # fmt: skip
G1_ATTENTION = [0.009, 0.001, 0.003, 0.010, 0.019, 0.009, 0.016, 0.018, 0.016, 0.012, 0.009, 0.010]


def test_g1_stage1_one_window():
    features = torch.tensor(G1_FEATURES, dtype=torch.float32)
    attention = torch.tensor(G1_ATTENTION, dtype=torch.float32)
    k = stage1_keep_count(12, 0.42)
    assert k == 5
    weighted = stage1_window_keep(features[None], attention[None], k)[0]
    assert weighted.nonzero().flatten().tolist() == [4, 6, 8, 9, 11]
    unweighted = stage1_window_keep(features[None], None, k)[0]
    assert unweighted.nonzero().flatten().tolist() == [1, 2, 3, 10, 11]
    # Through the modality-level entry point (one window of 12) and in bf16 embeddings.
    assert stage1_keep_mask(features.bfloat16(), attention, 50, 0.42).nonzero().flatten().tolist() == [4, 6, 8, 9, 11]


def test_g1_batched_windows_match_single_windows():
    # Batching equal windows (and a shorter last one) changes nothing.
    features = torch.tensor(G1_FEATURES, dtype=torch.float32)
    attention = torch.tensor(G1_ATTENTION, dtype=torch.float32)
    stacked = torch.cat([features, features.flip(0), features[:7]])
    stacked_attention = torch.cat([attention, attention.flip(0), attention[:7]])
    keep = stage1_keep_mask(stacked, stacked_attention, 12, 0.42)
    assert keep[:12].nonzero().flatten().tolist() == [4, 6, 8, 9, 11]
    assert keep[12:24].nonzero().flatten().tolist() == sorted(11 - i for i in [4, 6, 8, 9, 11])
    assert keep[24:].sum() == stage1_keep_count(7, 0.42)
    assert torch.equal(keep[24:], stage1_window_keep(features[None, :7], attention[None, :7], 3)[0])


G2_LAYOUT = [int(c) for c in "00011111122211111222211112200"]  # 0 text, 1 video, 2 audio
G2_VIDEO = [0.010, 0.002, 0.030, 0.004, 0.005, 0.001, 0.020, 0.003, 0.007, 0.006, 0.009, 0.040, 0.008, 0.011, 0.012]
G2_AUDIO = [0.015, 0.013, 0.014, 0.016, 0.017, 0.018, 0.019, 0.021, 0.022]


def _g2_inputs(scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    modality = torch.tensor(G2_LAYOUT)
    scores = torch.zeros(len(G2_LAYOUT), dtype=torch.float32)
    scores[modality == VIDEO] = torch.tensor(G2_VIDEO, dtype=torch.float32) * scale
    scores[modality == AUDIO] = torch.tensor(G2_AUDIO, dtype=torch.float32) * scale
    return modality, scores


def _mask(text: str) -> list[bool]:
    return [c == "1" for c in text.split()]


@pytest.mark.parametrize(
    "scale, wv, wa, budget, video_budget, audio_budget, keep",
    [
        (
            1.0,
            [0.322745, 0.323822, 0.353433],
            [0.321182, 0.332622, 0.346196],
            [4, 4, 4],
            [3, 3, 3],
            [1, 1, 1],
            "1 1 1 1 0 1 0 1 0 1 0 0 1 0 1 0 1 0 0 0 1 1 0 1 1 0 1 1 1",
        ),
        (
            20.0,
            [0.121651, 0.130037, 0.748312],
            [0.133414, 0.268664, 0.597922],
            [3, 3, 6],
            [2, 1, 4],
            [1, 2, 2],
            "1 1 1 1 0 1 0 0 0 1 0 0 1 0 0 0 0 0 0 1 1 1 1 1 1 1 1 1 1",
        ),
    ],
    ids=["G2", "G3"],
)
def test_g2_g3_stage2_windowed(scale, wv, wa, budget, video_budget, audio_budget, keep):
    modality, scores = _g2_inputs(scale)
    windows = contiguity_windows(modality)
    assert windows.num_windows == 3
    result = stage2_keep_mask(modality, scores, 0.5, 0.5, temperature=0.1, windows=windows)
    assert (result.video_total, result.audio_total) == (8, 4)
    assert result.windowed
    assert result.video_weight.tolist() == pytest.approx(wv, abs=1e-6)
    assert result.audio_weight.tolist() == pytest.approx(wa, abs=1e-6)
    assert result.budget.tolist() == budget
    assert result.video_budget.tolist() == video_budget
    assert result.audio_budget.tolist() == audio_budget
    assert result.keep.tolist() == _mask(keep)
