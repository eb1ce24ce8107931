"""SEATS: stage-adaptive token selection for omni-modal LLMs (seats-reference sections 7-10).

The whole method lives in this file.  Reading order:

1. **Schedule** (section 8) -- ``solve_schedule``: the Stage-I encoder ratio ``e = scale * rho`` and
   the per-drop keep ratios of a block-wise exponential decay, solved by bisection so the
   all-layer average retention equals the target ``rho``.
2. **Stage I** (section 7), before the LLM -- ``stage1_keep_mask``: per local window (video:
   ``grid_in_window`` temporal grids; audio: ``sec_in_audio_window`` x 25 tokens), keep
   ``round(e * n)`` tokens by attention-weighted farthest-point (max-min) selection on the cosine
   distance of the LLM input embeddings (``stage1_window_keep``; the loop is the kernel
   ``methods.diversity.farthest_point_keep`` that DivPrune shares).
3. **Stage II** (section 9), after each drop layer -- ``stage2_keep_mask``: relevance = head-mean
   attention of the last text token; the combined budget is split across temporal windows
   (softmax of mean relevance, ``inter_window_budget``), then between video and audio inside each
   window (``intra_window_split``), then per-window top-k (``windowed_topk``).  One window or a
   missing modality: global top-k per modality.
4. **Stage III** (section 10), after layer ``late_block_layer - 1`` -- keep only text.

The ``Seats`` selector wires these into the engine's hooks; ``build`` (registered as ``seats``)
resolves per-model defaults and validates the settings.  The engine does all tensor surgery.

Settings (``conf/method/seats.yaml``; faithful default first):

* ``encoder_ratio_scale`` (1.4): Stage-I ratio = scale * rho.
* ``grid_in_window`` (2): temporal grids per Stage-I video window (also the encoder-stat window).
* ``sec_in_audio_window`` (2): seconds per Stage-I audio window (also the encoder-stat window).
* ``drop_layers`` (auto): 1-based Stage-II layers; a list or "16-18-20" / "16,18,20".
* ``late_block_layer`` (auto): Stage III runs after layer ``late_block_layer - 1``; null = never.
* ``temperature`` (auto): inter-window softmax temperature (0.1 Qwen2.5, 0.3 Qwen3).
* ``score_layer``: ``self`` (faithful: the drop layer's own projections on its own output,
  section 2 item 1) | ``next`` (the next layer's projections, i.e. the layer that consumes the
  pruned sequence).
* ``window_weighting``: ``softmax_mean`` (faithful, section 9.4; nearly uniform in practice,
  section 2 item 2) | ``size_proportional`` (window budget proportional to its size ``cap_i``;
  the video/audio split inside a window uses each modality's size share; same rounding/fix-up).
* ``windows``: ``contiguity`` (faithful: i-th video run paired with i-th audio run, section 9.3)
  | ``time`` (windows = blocks of ``window_seconds`` of token start time, section 2 item 3).
* ``window_seconds`` (2.0): block length for ``windows: time``.
* ``stage1_audio_tokens_per_second``: 25 (faithful, hard-coded for both models, section 2 item 4)
  | ``model`` (the model's real audio token rate, 13 on Qwen3) | a positive number.
* ``clamp_encoder_ratio``: false (faithful: an encoder ratio above 1 is a config error, section 2
  item 6) | true (clamp it to 1; the schedule is then solved with the clamped ratio).
* ``tie_break``: ``stable`` (reference: ties -> lower index, section 9.6) | ``torch`` (plain
  non-stable ``torch.sort``/``torch.topk``).
* ``score_dtype``: ``model`` (faithful: encoder statistics and Stage-II relevance in the model
  dtype, section 2 item 12) | ``float32``.  Stage-I distances are float32 in both settings
  (section 7.3); Stage-II window means and softmax are float32 in both (section 9.4).

Faithful quirk kept on purpose: when both encoder ratios are >= 1 upstream never installs its
inner hooks, so Stages II and III do not run either (section 5.1 step 6).
"""

from __future__ import annotations

import heapq
import inspect
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from methods import MethodConfigError, ModelInfo, register
from methods.diversity import NORM_EPS, SELECTED_SENTINEL, farthest_point_keep, windowed_keep_mask
from seats_exp.selection import (
    AUDIO,
    AUDIO_ATTN,
    PLAN_APPROX,
    PLAN_EXACT,
    PLAN_TOTAL,
    VIDEO,
    VIDEO_ATTN,
    BaseSelector,
    PlanCounts,
    PlanInput,
    Selection,
    SelectionContext,
    StatsRequest,
)

# Stage I multiplies every distance column by 1e6 x the token's encoder score.  The scale is a
# no-op for argmax/min (section 2 item 13) but keeps the -1 "already selected" sentinel below
# every real value, so it is kept for faithfulness.
STAGE1_WEIGHT_SCALE = 1e6
STAGE1_NORM_EPS = NORM_EPS  # the shared kernel's constants (methods.diversity)
STAGE1_SELECTED_SENTINEL = SELECTED_SENTINEL
# Upstream hard-codes 25 audio tokens per second for the Stage-I window on both models.
FAITHFUL_STAGE1_AUDIO_TOKENS_PER_SECOND = 25
# Schedule solver constants (section 8.2).
SCHEDULE_BISECTION_ITERATIONS = 50
SCHEDULE_LEVEL_FLOOR = 1e-12
SCHEDULE_DECIMALS = 4
# Intra-window split denominator guard (section 9.5).
SPLIT_EPS = 1e-12


# =============================================================================================
# 1. Schedule (section 8)
# =============================================================================================


def _solve_keep_ratios(
    rho: float, encoder_ratio: float, num_layers: int, drop_layers: list[int], remove_layer: int
) -> tuple[list[float], float]:
    """Per-drop keep ratios for one modality and the solved decay fraction ``f`` (section 8.2)."""
    num_drops = len(drop_layers)
    if num_drops == 0:
        return [], 0.0
    boundaries = [0, *drop_layers, remove_layer]
    segment_lengths = [boundaries[i + 1] - boundaries[i] for i in range(num_drops + 1)]
    drop_weights = [math.exp(k) for k in range(num_drops)]
    weight_sum = sum(drop_weights)
    drop_shares = [w / weight_sum for w in drop_weights]

    def layer_sum(fraction: float) -> float:
        # Normalised token count entering each segment, times the segment length.
        count = encoder_ratio
        total = segment_lengths[0] * count
        for k in range(num_drops):
            count = max(count - fraction * encoder_ratio * drop_shares[k], 0.0)
            total += segment_lengths[k + 1] * count
        return total

    target = rho * num_layers
    if target >= layer_sum(0.0):
        fraction = 0.0
    elif target <= layer_sum(1.0):
        fraction = 1.0
    else:
        low, high = 0.0, 1.0
        for _ in range(SCHEDULE_BISECTION_ITERATIONS):
            mid = (low + high) / 2
            if layer_sum(mid) > target:
                low = mid
            else:
                high = mid
        fraction = (low + high) / 2

    levels = [encoder_ratio]
    for k in range(num_drops):
        levels.append(max(levels[-1] - fraction * encoder_ratio * drop_shares[k], SCHEDULE_LEVEL_FLOOR))
    keep = [
        round(levels[k + 1] / levels[k], SCHEDULE_DECIMALS) if levels[k] > SCHEDULE_LEVEL_FLOOR else 0.0
        for k in range(num_drops)
    ]
    return keep, round(fraction, SCHEDULE_DECIMALS)


def solve_schedule(
    rho_video: float,
    rho_audio: float,
    num_layers: int,
    drop_layers: list[int],
    late_block_layer: int | None,
    encoder_ratio_scale: float = 1.4,
    clamp_encoder_ratio: bool = False,
) -> dict[str, Any]:
    """Block-wise exponential-decay schedule (section 8), solved independently per modality.

    Returns ``video_encoder_ratio``/``audio_encoder_ratio`` (Stage-I ratios, ``rho * scale``;
    clamped to 1 only with ``clamp_encoder_ratio``), ``video_keep``/``audio_keep`` (keep ratio of
    each effective drop, 4-decimal rounded), ``drop_layers`` (the effective ones: < remove_layer),
    ``remove_layer`` and ``f`` (the solved decay fraction per modality, unused downstream).
    """
    remove_layer = min(late_block_layer - 1, num_layers) if late_block_layer is not None else num_layers
    effective_drops = [d for d in sorted(drop_layers) if d < remove_layer]
    result: dict[str, Any] = {"f": {}}
    for modality, rho in (("video", rho_video), ("audio", rho_audio)):
        encoder_ratio = rho * encoder_ratio_scale
        if clamp_encoder_ratio:
            encoder_ratio = min(encoder_ratio, 1.0)
        keep, fraction = _solve_keep_ratios(rho, encoder_ratio, num_layers, effective_drops, remove_layer)
        result[f"{modality}_encoder_ratio"] = encoder_ratio
        result[f"{modality}_keep"] = keep
        result["f"][modality] = fraction
    result["drop_layers"] = effective_drops
    result["remove_layer"] = remove_layer
    return result


# =============================================================================================
# 2. Stage I: windowed, attention-weighted max-min diversity (section 7)
# =============================================================================================


def stage1_keep_count(window_length: int, encoder_ratio: float) -> int:
    """Tokens kept in a Stage-I window: max(1, min(n, round(e * n))), Python rounding (7.2)."""
    return max(1, min(window_length, round(encoder_ratio * window_length)))


def stage1_window_keep(features: torch.Tensor, scores: torch.Tensor | None, k: int) -> torch.Tensor:
    """Weighted farthest-point selection of ``k`` tokens in each of W equal-size windows (7.3).

    features: [W, n, D] LLM input embeddings; scores: [W, n] encoder attention (None = every column
    weighted by the same 1e6).  Returns a bool keep mask [W, n]; the loop is ``methods.diversity``'s.
    """
    num_windows, n, _ = features.shape
    if scores is None:
        column_weight = torch.full((num_windows, n), STAGE1_WEIGHT_SCALE, device=features.device)
    else:
        column_weight = scores.float() * STAGE1_WEIGHT_SCALE  # [W, n]
    return farthest_point_keep(features, k, column_weight)


def stage1_keep_mask(
    features: torch.Tensor, scores: torch.Tensor | None, window_size: int, encoder_ratio: float
) -> torch.Tensor:
    """Stage-I keep mask over one modality's tokens (section 7.1-7.3).

    features: [N, D] (the modality's rows of the LLM input, sequence order); scores: [N] or None.
    Windows are consecutive blocks of ``window_size`` tokens; the last, shorter window is its own
    batch.  Returns a bool mask [N].
    """
    weights = None
    if scores is None:
        weights = torch.full((features.shape[0],), STAGE1_WEIGHT_SCALE, device=features.device)
    else:
        weights = scores.float() * STAGE1_WEIGHT_SCALE
    return windowed_keep_mask(features, weights, window_size, lambda n: stage1_keep_count(n, encoder_ratio))


# =============================================================================================
# 3. Stage II: top-down selection with temporal windows (section 9)
# =============================================================================================


def stage2_totals(num_video: int, num_audio: int, video_keep_ratio: float, audio_keep_ratio: float) -> tuple[int, int]:
    """Kv, Ka = max(1, round(rho_s * count)) per present modality, Python rounding (9.2)."""
    video_total = max(1, round(video_keep_ratio * num_video)) if num_video > 0 else 0
    audio_total = max(1, round(audio_keep_ratio * num_audio)) if num_audio > 0 else 0
    return video_total, audio_total


@dataclass
class Stage2Windows:
    """Assignment of every video/audio token (ordinal order) to a Stage-II temporal window."""

    video_window: torch.Tensor  # long [V]
    audio_window: torch.Tensor  # long [A]
    num_windows: int


@dataclass
class MediaLayout:
    """Where the video and audio tokens of the current sequence are, read to the host once.

    One host read gives the token counts and the number of contiguous runs of each modality; the
    positions then come from ``nonzero_static`` (sized, so no further device-to-host wait), and
    every gather/scatter below uses these index tensors instead of boolean masks.
    """

    video_mask: torch.Tensor  # bool [S]
    audio_mask: torch.Tensor  # bool [S]
    video_start: torch.Tensor  # bool [S]: first token of a video run
    audio_start: torch.Tensor  # bool [S]
    num_video: int
    num_audio: int
    num_video_runs: int
    num_audio_runs: int
    video_index: torch.Tensor  # long [V] positions, ascending
    audio_index: torch.Tensor  # long [A]

    @classmethod
    def of(cls, modality: torch.Tensor) -> "MediaLayout":
        video, audio = modality == VIDEO, modality == AUDIO  # [S]
        video_start = video & ~torch.cat([video.new_zeros(1), video[:-1]])
        audio_start = audio & ~torch.cat([audio.new_zeros(1), audio[:-1]])
        counts = torch.stack([video.sum(), audio.sum(), video_start.sum(), audio_start.sum()]).tolist()  # one read
        num_video, num_audio, video_runs, audio_runs = (int(c) for c in counts)
        return cls(video, audio, video_start, audio_start, num_video, num_audio, video_runs, audio_runs,
                   torch.nonzero_static(video, size=num_video).flatten(),
                   torch.nonzero_static(audio, size=num_audio).flatten())


def _window_sizes(window: torch.Tensor, num_windows: int) -> torch.Tensor:
    """Tokens per window, long [nw] (``bincount`` with a known length: no device-to-host wait)."""
    return torch.zeros(num_windows, dtype=torch.long, device=window.device).index_add_(
        0, window, torch.ones_like(window))


def contiguity_windows(modality: torch.Tensor, layout: MediaLayout | None = None) -> Stage2Windows:
    """Faithful windows (9.3): i-th video run with i-th audio run, then leftover runs.

    modality: long [S].  Upstream appends leftover video runs, then leftover audio runs, as
    single-modality windows; only one modality can have leftovers, so in every case window i is
    simply "run i of each modality" and there are max(#video runs, #audio runs) windows.
    """
    layout = layout or MediaLayout.of(modality)
    video_run = (torch.cumsum(layout.video_start, 0) - 1).index_select(0, layout.video_index)  # [V]
    audio_run = (torch.cumsum(layout.audio_start, 0) - 1).index_select(0, layout.audio_index)  # [A]
    return Stage2Windows(video_run, audio_run, max(layout.num_video_runs, layout.num_audio_runs))


def time_windows(modality: torch.Tensor, token_time: torch.Tensor, window_seconds: float) -> Stage2Windows:
    """Windows by start time (fix for section 2 item 3): blocks of ``window_seconds``.

    Video and audio tokens starting in the same block share a window; empty blocks are skipped.
    A media token without a time (NaN) makes the timing unusable: fall back to contiguity runs.
    """
    video_time = token_time[modality == VIDEO]  # [V]
    audio_time = token_time[modality == AUDIO]  # [A]
    if torch.isnan(video_time).any() or torch.isnan(audio_time).any():
        return contiguity_windows(modality)
    blocks = torch.floor(torch.cat([video_time, audio_time]).double() / window_seconds).long()  # [V+A]
    unique_blocks, window = torch.unique(blocks, sorted=True, return_inverse=True)
    num_video = video_time.numel()
    return Stage2Windows(window[:num_video], window[num_video:], int(unique_blocks.numel()))


def _balance_budgets(budget: list[int], cap: list[int], total: int) -> list[int]:
    """Fix-up loop of section 9.4 step 5, one unit at a time until sum(budget) == total.

    Too many: take one from the largest budget > 1 (lowest index on ties).  Too few: give one to
    the smallest budget < cap (lowest index on ties).  A heap keyed (size, index) reproduces the
    one-at-a-time choice exactly without rescanning every window per unit.
    """
    budget = list(budget)
    excess = sum(budget) - total
    if excess > 0:
        heap = [(-b, i) for i, b in enumerate(budget) if b > 1]
        heapq.heapify(heap)
        while excess > 0 and heap:
            _, i = heapq.heappop(heap)
            budget[i] -= 1
            excess -= 1
            if budget[i] > 1:
                heapq.heappush(heap, (-budget[i], i))
    elif excess < 0:
        heap = [(b, i) for i, b in enumerate(budget) if b < cap[i]]
        heapq.heapify(heap)
        while excess < 0 and heap:
            _, i = heapq.heappop(heap)
            budget[i] += 1
            excess += 1
            if budget[i] < cap[i]:
                heapq.heappush(heap, (budget[i], i))
    return budget


def inter_window_budget(
    video_scores: torch.Tensor,
    audio_scores: torch.Tensor,
    windows: Stage2Windows,
    video_total: int,
    audio_total: int,
    temperature: float,
    window_weighting: str = "softmax_mean",
    sizes: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Combined budget per window (section 9.4).  Returns wv, wa (float32 [nw]) and b (long [nw]).

    ``softmax_mean`` (faithful): wv = softmax(mean video relevance / T) over windows, wa likewise,
    w = (wv + wa) / 2.  ``size_proportional``: w = cap / sum(cap), and wv, wa = each modality's
    size share (used by the intra-window split).  Then b = clamp(round32(w * K), 1, cap) and the
    fix-up loop makes sum(b) == K where caps allow.  ``sizes``: the (video, audio) tokens per window
    when the caller has them already.
    """
    num_windows = windows.num_windows
    if sizes is None:
        sizes = _window_sizes(windows.video_window, num_windows), _window_sizes(windows.audio_window, num_windows)
    video_size, audio_size = sizes  # [nw] each
    cap = video_size + audio_size  # [nw]
    if window_weighting == "softmax_mean":
        video_sum = torch.zeros(num_windows, dtype=torch.float32, device=cap.device).index_add_(
            0, windows.video_window, video_scores.float()
        )
        audio_sum = torch.zeros(num_windows, dtype=torch.float32, device=cap.device).index_add_(
            0, windows.audio_window, audio_scores.float()
        )
        video_importance = video_sum / video_size.clamp(min=1)  # [nw] fp32
        audio_importance = audio_sum / audio_size.clamp(min=1)
        video_weight = torch.softmax(video_importance / temperature, dim=0)
        audio_weight = torch.softmax(audio_importance / temperature, dim=0)
        window_weight = (video_weight + audio_weight) / 2
    elif window_weighting == "size_proportional":
        video_weight = video_size.float() / max(int(video_size.sum()), 1)
        audio_weight = audio_size.float() / max(int(audio_size.sum()), 1)
        window_weight = cap.float() / max(int(cap.sum()), 1)
    else:
        raise ValueError(f"unknown window_weighting {window_weighting!r}")
    combined_total = video_total + audio_total
    budget = torch.minimum(torch.round(window_weight * combined_total).long().clamp(min=1), cap)
    budget_list, cap_list = torch.stack([budget, cap]).tolist()  # the fix-up loop runs on the host: one read
    balanced = _balance_budgets(budget_list, cap_list, combined_total)
    budget = torch.tensor(balanced, dtype=torch.long, device=cap.device)
    return video_weight, audio_weight, budget


def intra_window_split(
    budget: torch.Tensor,
    video_weight: torch.Tensor,
    audio_weight: torch.Tensor,
    video_size: torch.Tensor,
    audio_size: torch.Tensor,
    video_total: int,
    audio_total: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split each window's budget between video and audio (section 9.5).  All [nw] -> vb, ab (long).

    After the proportional split and the top-up of leftovers, every window keeps at least one
    token of each modality it contains (the floors may break sum(vb + ab) == b).
    """
    video_share = video_weight * video_total  # fp32 [nw]
    audio_share = audio_weight * audio_total
    video_fraction = video_share / (video_share + audio_share + SPLIT_EPS)
    video_budget = torch.minimum(torch.round(budget * video_fraction).long().clamp(min=0), video_size)
    audio_budget = torch.minimum((budget - video_budget).clamp(min=0), audio_size)
    # Hand any remainder to whichever modality still has room, video first.
    remainder = budget - video_budget - audio_budget
    extra_video = torch.minimum(remainder.clamp(min=0), (video_size - video_budget).clamp(min=0))
    video_budget = video_budget + extra_video
    remainder = remainder - extra_video
    extra_audio = torch.minimum(remainder.clamp(min=0), (audio_size - audio_budget).clamp(min=0))
    audio_budget = audio_budget + extra_audio
    # Video floor, then audio floor; each shrinks the other modality to fit b where it can.
    needs_video = (video_size > 0) & (video_budget < 1)
    video_budget = torch.where(needs_video, torch.ones_like(video_budget), video_budget)
    refit_audio = torch.minimum(audio_size, (budget - video_budget).clamp(min=0)).clamp(min=1)
    audio_budget = torch.where(needs_video & (audio_budget > 1), refit_audio, audio_budget)
    needs_audio = (audio_size > 0) & (audio_budget < 1)
    audio_budget = torch.where(needs_audio, torch.ones_like(audio_budget), audio_budget)
    refit_video = torch.minimum(video_size, (budget - audio_budget).clamp(min=0)).clamp(min=1)
    video_budget = torch.where(needs_audio & (video_budget > 1), refit_video, video_budget)
    return video_budget, audio_budget


def descending_order(scores: torch.Tensor, tie_break: str = "stable") -> torch.Tensor:
    """Indices by descending score; ``stable`` breaks ties by lower index, ``torch`` does not care."""
    return torch.argsort(scores, descending=True, stable=(tie_break == "stable"))


def windowed_topk(
    scores: torch.Tensor, window: torch.Tensor, window_budget: torch.Tensor, tie_break: str = "stable",
    window_count: torch.Tensor | None = None,
) -> torch.Tensor:
    """Keep each window's ``window_budget`` best tokens (section 9.6).

    scores: [N]; window: long [N]; window_budget: long [nw].  Equivalent to walking the global
    descending order with a per-window counter.  Returns a bool keep mask [N].
    """
    num_tokens = scores.numel()
    keep = torch.zeros(num_tokens, dtype=torch.bool, device=scores.device)
    if num_tokens == 0:
        return keep
    by_score = descending_order(scores, tie_break)  # [N]
    # Group by window while preserving the score order inside each window (always stable).
    grouped = by_score[torch.argsort(window[by_score], stable=True)]  # [N]
    grouped_window = window[grouped]
    if window_count is None:
        window_count = _window_sizes(window, window_budget.numel())  # [nw]
    window_start = window_count.cumsum(0) - window_count
    rank_in_window = torch.arange(num_tokens, device=scores.device) - window_start[grouped_window]  # [N]
    keep[grouped] = rank_in_window < window_budget[grouped_window]
    return keep


def global_topk(scores: torch.Tensor, k: int, tie_break: str = "stable") -> torch.Tensor:
    """Keep the ``k`` best of [N] tokens (section 9.7): stable order, or plain ``torch.topk``."""
    keep = torch.zeros(scores.numel(), dtype=torch.bool, device=scores.device)
    k = min(k, scores.numel())
    if k <= 0:
        return keep
    if tie_break == "stable":
        keep[descending_order(scores, "stable")[:k]] = True
    else:
        keep[torch.topk(scores, k).indices] = True
    return keep


@dataclass
class Stage2Result:
    """Stage-II keep mask over the current sequence plus the intermediates (for tests/logging)."""

    keep: torch.Tensor  # bool [S]
    video_total: int
    audio_total: int
    windowed: bool
    video_weight: torch.Tensor | None = None  # wv [nw]
    audio_weight: torch.Tensor | None = None  # wa [nw]
    budget: torch.Tensor | None = None  # b [nw]
    video_budget: torch.Tensor | None = None  # vb [nw]
    audio_budget: torch.Tensor | None = None  # ab [nw]


def stage2_keep_mask(
    modality: torch.Tensor,
    scores: torch.Tensor,
    video_keep_ratio: float,
    audio_keep_ratio: float,
    *,
    temperature: float,
    windows: Stage2Windows | None = None,
    window_weighting: str = "softmax_mean",
    tie_break: str = "stable",
    layout: MediaLayout | None = None,
) -> Stage2Result:
    """One Stage-II step (sections 9.2-9.7) over the current sequence.

    modality: long [S]; scores: [S] relevance of every position (model dtype in the faithful mode).
    ``windows`` defaults to the faithful contiguity windows.  Text is always kept.  ``layout``: the
    sequence's ``MediaLayout`` when the caller has it (host reads: the layout's one, the budget
    fix-up's one).
    """
    layout = layout or MediaLayout.of(modality)
    video_index, audio_index = layout.video_index, layout.audio_index  # [V], [A]
    video_scores = scores.index_select(0, video_index)  # [V]
    audio_scores = scores.index_select(0, audio_index)  # [A]
    num_video, num_audio = layout.num_video, layout.num_audio
    video_total, audio_total = stage2_totals(num_video, num_audio, video_keep_ratio, audio_keep_ratio)
    keep = torch.ones(modality.numel(), dtype=torch.bool, device=modality.device)
    if windows is None:
        windows = contiguity_windows(modality, layout)
    if windows.num_windows <= 1 or num_video == 0 or num_audio == 0:
        keep[video_index] = global_topk(video_scores, video_total, tie_break)
        keep[audio_index] = global_topk(audio_scores, audio_total, tie_break)
        return Stage2Result(keep, video_total, audio_total, windowed=False)

    video_size = _window_sizes(windows.video_window, windows.num_windows)  # [nw], computed once
    audio_size = _window_sizes(windows.audio_window, windows.num_windows)
    video_weight, audio_weight, budget = inter_window_budget(
        video_scores, audio_scores, windows, video_total, audio_total, temperature, window_weighting,
        sizes=(video_size, audio_size),
    )
    video_budget, audio_budget = intra_window_split(
        budget, video_weight, audio_weight, video_size, audio_size, video_total, audio_total
    )
    keep[video_index] = windowed_topk(video_scores, windows.video_window, video_budget, tie_break, video_size)
    keep[audio_index] = windowed_topk(audio_scores, windows.audio_window, audio_budget, tie_break, audio_size)
    return Stage2Result(
        keep, video_total, audio_total, True, video_weight, audio_weight, budget, video_budget, audio_budget
    )


# =============================================================================================
# 4. Settings, per-model defaults and validation
# =============================================================================================

# Reference models: (decoder layers, drop layers, late_block_layer, temperature).
_MODEL_DEFAULTS: dict[str, tuple[int, tuple[int, ...], int, float]] = {
    "qwen2_5_omni_7b": (28, (16, 18, 20), 24, 0.1),
    "qwen3_omni_30b_a3b": (48, (27, 31, 35), 40, 0.3),
    "tiny_qwen2_5_omni": (8, (3, 4, 5), 7, 0.1),
    "tiny_qwen3_omni": (8, (3, 4, 5), 7, 0.3),
}
# Any other variant (e.g. qwen2_5_omni_3b, 36 layers -> [21, 23, 26] / 31) scales its family's
# reference layer indices by depth: round(layer * num_layers / reference_layers).
_FAMILY_REFERENCE = {"qwen2_5_omni": "qwen2_5_omni_7b", "qwen3_omni": "qwen3_omni_30b_a3b"}

_CHOICES = {
    "score_layer": ("self", "next"),
    "window_weighting": ("softmax_mean", "size_proportional"),
    "windows": ("contiguity", "time"),
    "tie_break": ("stable", "torch"),
    "score_dtype": ("model", "float32"),
}

DEFAULT_PARAMS: dict[str, Any] = {
    "encoder_ratio_scale": 1.4,
    "grid_in_window": 2,
    "sec_in_audio_window": 2,
    "drop_layers": "auto",
    "late_block_layer": "auto",
    "temperature": "auto",
    "score_layer": "self",
    "window_weighting": "softmax_mean",
    "windows": "contiguity",
    "window_seconds": 2.0,
    "stage1_audio_tokens_per_second": FAITHFUL_STAGE1_AUDIO_TOKENS_PER_SECOND,
    "clamp_encoder_ratio": False,
    "tie_break": "stable",
    "score_dtype": "model",
}


@dataclass(frozen=True)
class SeatsSettings:
    """Resolved SEATS settings (no ``auto`` left)."""

    video_ratio: float
    audio_ratio: float
    encoder_ratio_scale: float
    grid_in_window: int
    sec_in_audio_window: float
    drop_layers: tuple[int, ...]
    late_block_layer: int | None
    temperature: float
    score_layer: str
    window_weighting: str
    windows: str
    window_seconds: float
    stage1_audio_tokens_per_second: float
    clamp_encoder_ratio: bool
    tie_break: str
    score_dtype: str
    num_layers: int
    schedule: dict = field(default_factory=dict)


def _error(key: str, message: str) -> MethodConfigError:
    return MethodConfigError(f"method.{key}: {message}")


def _parse_layers(key: str, value: Any) -> tuple[int, ...]:
    """Drop layers as a list of ints or a string "16-18-20" / "16,18,20"; sorted ascending."""
    if value is None:
        return ()
    if isinstance(value, str):
        parts = [p for p in re.split(r"[,\-\s]+", value.strip()) if p]
    elif isinstance(value, int) and not isinstance(value, bool):
        parts = [value]
    else:
        try:
            parts = list(value)
        except TypeError:
            raise _error(key, f"expected a list of layer numbers or a string like '16-18-20', got {value!r}") from None
    layers = []
    for part in parts:
        try:
            if isinstance(part, bool) or float(part) != int(float(part)):
                raise ValueError
            layers.append(int(float(part)))
        except (TypeError, ValueError):
            raise _error(key, f"expected integer layer numbers (e.g. '16-18-20'), got {value!r}") from None
    return tuple(sorted(layers))


def _positive_number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise _error(key, f"must be a positive number, got {value!r}")
    return float(value)


def _reference_defaults(model: ModelInfo) -> tuple[tuple[int, ...], int, float]:
    """Drop layers, late_block_layer and temperature for ``model`` (see ``_MODEL_DEFAULTS``)."""
    if model.variant in _MODEL_DEFAULTS:
        _, drops, late, temperature = _MODEL_DEFAULTS[model.variant]
        return drops, late, temperature
    if model.family not in _FAMILY_REFERENCE:
        raise _error(
            "drop_layers",
            f"no SEATS defaults for model family {model.family!r} (known: {sorted(_FAMILY_REFERENCE)}); "
            "set method.drop_layers, method.late_block_layer and method.temperature explicitly",
        )
    reference_layers, drops, late, temperature = _MODEL_DEFAULTS[_FAMILY_REFERENCE[model.family]]
    scale = model.num_layers / reference_layers
    return (*scaled_drop_layers(drops, late, scale), temperature)


def scaled_drop_layers(drops: tuple[int, ...], late: int, scale: float) -> tuple[tuple[int, ...] | None, int]:
    """Reference drop layers and late layer scaled by depth: strictly increasing, below late - 1.

    Each layer becomes round(layer * scale).  Rounding can repeat a layer or reach the late-removal
    layer (8 layers from the 7B: [5, 5, 6] with late 7, where 6 = late - 1; 12 layers: [7, 8, 9]
    with late 10): repeats are pushed up to the next free layer, then the list is pushed down
    from the top so the last drop is at most late - 2 (Stage III runs after late - 1, and a drop
    there collides with it, seats-reference section 2 item 10).  Drop layers ``None``: the model
    is too shallow to hold them below the late layer (``resolve_settings`` refuses ``auto`` then).
    """
    late_scaled = round(late * scale)
    layers = [round(d * scale) for d in drops]
    for i in range(1, len(layers)):  # strictly increasing
        layers[i] = max(layers[i], layers[i - 1] + 1)
    ceiling = late_scaled - 2  # highest layer a drop may use
    for i in range(len(layers) - 1, -1, -1):  # below late - 1, keeping the gaps where there is room
        layers[i] = min(layers[i], ceiling)
        ceiling = layers[i] - 1
    if layers and layers[0] < 1:
        return None, late_scaled
    return tuple(layers), late_scaled


def resolve_settings(params: dict[str, Any], video_ratio: float, audio_ratio: float, model: ModelInfo) -> SeatsSettings:
    """Fill ``auto`` values from the model, validate everything, solve the schedule."""
    unknown = sorted(set(params) - set(DEFAULT_PARAMS))
    if unknown:
        raise MethodConfigError(f"method seats does not take {unknown}; allowed keys: {sorted(DEFAULT_PARAMS)}")
    p = {**DEFAULT_PARAMS, **params}

    for key, choices in _CHOICES.items():
        if p[key] not in choices:
            raise _error(key, f"must be one of {list(choices)}, got {p[key]!r}")
    if not isinstance(p["clamp_encoder_ratio"], bool):
        raise _error("clamp_encoder_ratio", f"must be true or false, got {p['clamp_encoder_ratio']!r}")
    for key, value in (("video", video_ratio), ("audio", audio_ratio)):
        if not 0.0 < float(value) <= 1.0:
            raise MethodConfigError(f"schedule.{key}={value} is outside (0, 1]")

    encoder_ratio_scale = _positive_number("encoder_ratio_scale", p["encoder_ratio_scale"])
    grid_in_window = p["grid_in_window"]
    if isinstance(grid_in_window, bool) or not isinstance(grid_in_window, int) or grid_in_window < 1:
        raise _error("grid_in_window", f"must be a positive integer, got {grid_in_window!r}")
    sec_in_audio_window = _positive_number("sec_in_audio_window", p["sec_in_audio_window"])
    window_seconds = _positive_number("window_seconds", p["window_seconds"])
    if p["stage1_audio_tokens_per_second"] == "model":
        stage1_rate = float(model.audio_tokens_per_second)
    else:
        stage1_rate = _positive_number("stage1_audio_tokens_per_second", p["stage1_audio_tokens_per_second"])

    auto_drops, auto_late, auto_temperature = (None, None, None)
    if "auto" in (p["drop_layers"], p["late_block_layer"], p["temperature"]):
        auto_drops, auto_late, auto_temperature = _reference_defaults(model)
    if p["drop_layers"] == "auto" and auto_drops is None:
        raise _error(
            "drop_layers",
            f"the reference drop layers of {_FAMILY_REFERENCE[model.family]} do not fit below the scaled late "
            f"layer {auto_late} of the {model.num_layers}-layer model {model.variant!r} (they must increase "
            "strictly and stay below late_block_layer - 1); set method.drop_layers (and method.late_block_layer)",
        )
    drop_layers = auto_drops if p["drop_layers"] == "auto" else _parse_layers("drop_layers", p["drop_layers"])
    late = auto_late if p["late_block_layer"] == "auto" else p["late_block_layer"]
    temperature = auto_temperature if p["temperature"] == "auto" else _positive_number("temperature", p["temperature"])

    num_layers = model.num_layers
    if late is not None and (isinstance(late, bool) or not isinstance(late, int) or not 2 <= late <= num_layers + 1):
        raise _error(
            "late_block_layer",
            f"must be 'auto', null or an integer in [2, {num_layers + 1}] for a {num_layers}-layer model, got {late!r}",
        )
    if len(set(drop_layers)) != len(drop_layers):
        raise _error("drop_layers", f"must not repeat a layer, got {list(drop_layers)}")
    for layer in drop_layers:
        if not 1 <= layer <= num_layers:
            raise _error("drop_layers", f"layer {layer} is outside [1, {num_layers}] for a {num_layers}-layer model")
        if late is not None and layer >= late - 1:
            raise _error(
                "drop_layers",
                f"layer {layer} must be below late_block_layer - 1 = {late - 1} (a drop at or after the "
                "late-removal layer corrupts the masks, seats-reference section 2 item 10)",
            )
        if late is None and layer >= num_layers:
            raise _error("drop_layers", f"layer {layer} must be below the last layer {num_layers}")

    schedule = solve_schedule(
        video_ratio, audio_ratio, num_layers, list(drop_layers), late, encoder_ratio_scale, p["clamp_encoder_ratio"]
    )
    for key in ("video", "audio"):
        encoder_ratio = schedule[f"{key}_encoder_ratio"]
        if encoder_ratio > 1.0:
            raise MethodConfigError(
                f"method.encoder_ratio_scale x schedule.{key} = {encoder_ratio:.4g} exceeds 1 (Stage I cannot keep "
                f"more than every token); lower method.encoder_ratio_scale or schedule.{key}, "
                "or set method.clamp_encoder_ratio=true"
            )
    return SeatsSettings(
        video_ratio=float(video_ratio),
        audio_ratio=float(audio_ratio),
        encoder_ratio_scale=encoder_ratio_scale,
        grid_in_window=grid_in_window,
        sec_in_audio_window=sec_in_audio_window,
        drop_layers=tuple(drop_layers),
        late_block_layer=late,
        temperature=float(temperature),
        score_layer=p["score_layer"],
        window_weighting=p["window_weighting"],
        windows=p["windows"],
        window_seconds=window_seconds,
        stage1_audio_tokens_per_second=stage1_rate,
        clamp_encoder_ratio=p["clamp_encoder_ratio"],
        tie_break=p["tie_break"],
        score_dtype=p["score_dtype"],
        num_layers=num_layers,
        schedule=schedule,
    )


# =============================================================================================
# 5. The selector
# =============================================================================================


class Seats(BaseSelector):
    """SEATS as engine hooks: Stage I before the LLM, Stage II at drop layers, Stage III late."""

    name = "seats"
    needs = frozenset({VIDEO_ATTN, AUDIO_ATTN})

    def __init__(self, settings: SeatsSettings):
        self.settings = settings
        self.stats_request = StatsRequest(
            video_window_grids=settings.grid_in_window,
            audio_window_seconds=settings.sec_in_audio_window,
            dtype=settings.score_dtype,
        )
        schedule = settings.schedule
        self.video_encoder_ratio: float = schedule["video_encoder_ratio"]
        self.audio_encoder_ratio: float = schedule["audio_encoder_ratio"]
        self.video_keep: list[float] = schedule["video_keep"]
        self.audio_keep: list[float] = schedule["audio_keep"]
        # Upstream installs its inner hooks only when Stage I runs (some encoder ratio < 1).
        self.inert = self.video_encoder_ratio >= 1.0 and self.audio_encoder_ratio >= 1.0
        self.audio_window_tokens = max(1, round(settings.sec_in_audio_window * settings.stage1_audio_tokens_per_second))

    @property
    def stage3_layer(self) -> int | None:
        """1-based layer after which only text is kept (None: never)."""
        late = self.settings.late_block_layer
        return None if late is None else late - 1

    # -- hooks ------------------------------------------------------------------------------
    def hook_layers(self, num_layers: int) -> set[int]:
        if self.inert:
            return set()
        layers = set(self.settings.drop_layers)
        if self.stage3_layer is not None:
            layers.add(self.stage3_layer)
        return {layer for layer in layers if 1 <= layer <= num_layers}

    def _video_window_tokens(self, ctx: SelectionContext) -> int:
        tokens_per_grid = ctx.video_tokens_per_grid
        if tokens_per_grid <= 0 and ctx.video_grid_thw is not None and len(ctx.video_grid_thw):
            _, grid_h, grid_w = (int(x) for x in ctx.video_grid_thw[0])
            tokens_per_grid = grid_h * grid_w // 4  # 2x2 spatial merge
        return self.settings.grid_in_window * tokens_per_grid

    def before_llm(self, ctx: SelectionContext) -> Selection | None:
        """Stage I on ``ctx.embeds``; a modality without tokens or statistics is left untouched."""
        if self.inert or ctx.embeds is None:
            return None
        keep = torch.ones(ctx.length, dtype=torch.bool, device=ctx.modality.device)  # [S]
        masks = (ctx.modality == VIDEO, ctx.modality == AUDIO)  # [S] each
        counts = torch.stack([m.sum() for m in masks]).tolist()  # one host read for both modalities
        dropped = False
        for code, mask, count, attention, encoder_ratio, window_tokens in (
            (VIDEO, masks[0], counts[0], ctx.stats.video_attn, self.video_encoder_ratio, self._video_window_tokens(ctx)),
            (AUDIO, masks[1], counts[1], ctx.stats.audio_attn, self.audio_encoder_ratio, self.audio_window_tokens),
        ):
            if count == 0 or attention is None or encoder_ratio >= 1.0 or window_tokens <= 0:
                continue
            if attention.numel() != count:
                raise ValueError(
                    f"SEATS Stage I: {attention.numel()} encoder scores for {count} tokens of modality {code}"
                )
            positions = torch.nonzero_static(mask, size=count).flatten()  # [N], sized: no host wait
            keep[positions] = stage1_keep_mask(
                ctx.embeds.index_select(0, positions), attention.reshape(-1), window_tokens, encoder_ratio
            )
            # Stage I keeps exactly the planned count (every window keeps its k distinct tokens)
            dropped |= _stage1_planned_count(count, window_tokens, encoder_ratio) < count
        return Selection(keep, label="stage1") if dropped else None

    def _relevance(self, ctx: SelectionContext, layer: int, hidden: torch.Tensor) -> torch.Tensor:
        """Last-text-token attention over the current sequence, [S_cur] (section 9.1)."""
        if ctx.score_last_text is None:
            raise RuntimeError("SEATS Stage II needs ctx.score_last_text from the engine")
        module_index = layer - 1 if self.settings.score_layer == "self" else layer
        if self.settings.score_dtype == "float32":
            if "score_dtype" not in inspect.signature(ctx.score_last_text).parameters:
                raise RuntimeError(
                    "method.score_dtype=float32 needs an engine whose score_last_text accepts score_dtype=; "
                    "use method.score_dtype=model"
                )
            return ctx.score_last_text(module_index, hidden, score_dtype=torch.float32).reshape(-1)
        return ctx.score_last_text(module_index, hidden).reshape(-1)

    def _stage2_windows(self, ctx: SelectionContext, layout: MediaLayout | None = None) -> Stage2Windows:
        if self.settings.windows == "time":
            return time_windows(ctx.modality, ctx.token_time, self.settings.window_seconds)
        return contiguity_windows(ctx.modality, layout)

    def after_layer(self, layer: int, hidden: torch.Tensor, ctx: SelectionContext) -> Selection | None:
        """Stage II at a drop layer, then Stage III at late_block_layer - 1, as one keep mask."""
        if self.inert:
            return None
        if layer in self.settings.drop_layers:
            # Stage II (a drop layer is never the Stage-III layer: validated in resolve_settings)
            layout = MediaLayout.of(ctx.modality)  # one host read: counts and runs
            if layout.num_video + layout.num_audio == 0:
                return None
            step = self.settings.drop_layers.index(layer)
            scores = self._relevance(ctx, layer, hidden)  # [S_cur]
            result = stage2_keep_mask(
                ctx.modality,
                scores.to(ctx.modality.device),
                self.video_keep[step],
                self.audio_keep[step],
                temperature=self.settings.temperature,
                windows=self._stage2_windows(ctx, layout),
                window_weighting=self.settings.window_weighting,
                tie_break=self.settings.tie_break,
                layout=layout,
            )
            return Selection(result.keep, label=f"stage2.{step + 1}")  # the engine skips a keep-all mask
        if layer == self.stage3_layer:
            keep = ctx.text_mask
            return None if bool(keep.all()) else Selection(keep, label="stage3")
        return None

    # -- plan mode --------------------------------------------------------------------------
    def plan(self, inp: PlanInput) -> PlanCounts:
        """(video, audio) tokens entering each 1-based layer for a described input.

        Stage I is exact (window sizes from the layout).  Stage II uses the totals
        Kv = max(1, round(rho_s * V)), Ka likewise; the realised per-modality split depends on the
        relevance scores (only the combined total is targeted), so the layers after the first step
        are marked ``PLAN_TOTAL`` (per-window floors can still move it when a window's budget is a
        single token) and those after later steps ``PLAN_APPROX`` (their totals are taken from the
        realised split): real runs differ by a few tokens there.  Stage III leaves zero (exact).
        """
        video, audio = inp.video_tokens, inp.audio_tokens
        if not self.inert:
            video_window = self.settings.grid_in_window * inp.video_tokens_per_grid
            video = _stage1_planned_count(video, video_window, self.video_encoder_ratio)
            audio = _stage1_planned_count(audio, self.audio_window_tokens, self.audio_encoder_ratio)
        per_layer, exactness = [], []
        exact = PLAN_EXACT
        for index in range(inp.num_layers):
            per_layer.append((video, audio))
            exactness.append(exact)
            layer = index + 1  # the hook after this layer changes what the next one sees
            if self.inert:
                continue
            if layer in self.settings.drop_layers:
                step = self.settings.drop_layers.index(layer)
                video, audio = stage2_totals(video, audio, self.video_keep[step], self.audio_keep[step])
                # the windowed split moves budget between modalities (9.5): the first step's total
                # is exact, later steps take their totals from that score-dependent split
                exact = PLAN_TOTAL if exact == PLAN_EXACT else PLAN_APPROX
            if layer == self.stage3_layer:
                video, audio = 0, 0
                exact = PLAN_EXACT
        return PlanCounts(per_layer=per_layer, details={"schedule": self._schedule_summary()}, exactness=exactness)

    def _schedule_summary(self) -> dict[str, Any]:
        return {
            "video_keep": list(self.video_keep),
            "audio_keep": list(self.audio_keep),
            "video_encoder_ratio": self.video_encoder_ratio,
            "audio_encoder_ratio": self.audio_encoder_ratio,
            "drop_layers": list(self.settings.drop_layers),
            "late_block_layer": self.settings.late_block_layer,
        }

    def describe(self) -> dict:
        described = asdict(self.settings)
        described["drop_layers"] = list(self.settings.drop_layers)
        described["schedule"] = {**self._schedule_summary(), "remove_layer": self.settings.schedule["remove_layer"]}
        described["stage1_audio_window_tokens"] = self.audio_window_tokens
        described["inert"] = self.inert
        return {"name": self.name, **described}


def _stage1_planned_count(num_tokens: int, window_size: int, encoder_ratio: float) -> int:
    """Tokens Stage I keeps from ``num_tokens`` in windows of ``window_size`` (section 7.2)."""
    if num_tokens == 0 or encoder_ratio >= 1.0 or window_size <= 0:
        return num_tokens
    window_size = min(window_size, num_tokens)
    num_full, last = divmod(num_tokens, window_size)
    kept = num_full * stage1_keep_count(window_size, encoder_ratio)
    return kept + (stage1_keep_count(last, encoder_ratio) if last else 0)


@register("seats")
def build(params: dict, video_ratio: float, audio_ratio: float, model: ModelInfo) -> Seats:
    return Seats(resolve_settings(dict(params), video_ratio, audio_ratio, model))
