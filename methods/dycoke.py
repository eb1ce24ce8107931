"""DyCoke: temporal token pruning before the LLM (TTM) and dynamic KV pruning while decoding (DP)
(baselines-reference 5).

**TTM** (5.2), on the video tokens of the LLM input, temporal grid by temporal grid (``P`` tokens
per grid, "same position" = same index inside the grid), per-position cosine similarity:

* stage A, pairs ``(2m, 2m+1)``: grid ``2m`` stays whole, grid ``2m+1`` keeps its ``int((1-K) P)``
  least similar tokens (most changed) w.r.t. grid ``2m``;
* stage B, ``i = 0, 4, 8, ...`` while ``i < F - 4``: grid ``i + 2`` keeps its ``int((1-K) P)`` least
  similar tokens w.r.t. (original) grid ``i``.

Kept tokens stay in sequence order (a keep-mask: original order and M-RoPE positions stay; the
released code emits them in similarity order, which only LLaVA tolerates).  Ties: lowest index.
Faithful quirks, each behind a flag: stage B's loop bound leaves grid ``4m+2`` whole when
``4m >= F - 4`` (``ttm_last_group: skip``; ``reduce`` reduces every grid ``4m+2``), and an odd
number of grids silently loses the last grid (``ttm_odd_last_grid: drop``; ``keep`` keeps it whole).

Budget: ``K`` (``ttm_k``) is the pruning ratio inside a reduced grid.  ``auto`` derives it from the
target video retention: ``K = 4 (1 - r_v) / 3`` (TTM keeps ``1/4 + 3/4 (1-K)``), reachable only for
``r_v`` in [0.25, 1] -- anything else is an error naming the range, never a silent clamp.  The
target is the schedule's video ratio after SEATS' audio-intact reallocation (DyCoke is visual-only;
audio is kept, rows "35 (24-100)"); with ``dp_in_prefill`` the target is the layer-averaged
retention, ``r_v = r_ttm (L + (N - L)(1 - P)) / N`` on an N-layer model (5.4).

**DP** (5.3), every decoding step with one new token: the head-mean attention of that token in
decoder module ``L - 1`` (0-based; default L = 3), restricted to the video entries of the cache, is
compared with the previous step's (cosine; the first step of a sample counts as 0).  Below
``dp_threshold`` (0.9) modules ``L..`` attend only to the top ``int(N_vis (1 - P))`` video entries
by that attention plus every non-video entry; the cache stays whole (an engine decode view).
At or above the threshold, ``dp_on_stable``: ``full_cache`` (faithful: the released code clears
its selection every step, so a stable step sees the whole cache) or ``reuse_previous`` (the last
selection again).  The reference vector is per sample (the engine gives fresh per-sample state;
the released code leaks it across samples).  The first generated token comes from the prefill, so
single-token answers see TTM only.

``dp_in_prefill`` (inferred SEATS variant, 5.4; default false): also drop video tokens in the
prefill after 1-based layer ``L`` (modules ``L..`` see the kept ones), keeping the top
``int(N_vis (1 - P))`` by the last text token's attention computed with module ``L - 1``'s
projections on its own output (the FastV convention SEATS uses).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch

from methods import MethodConfigError, ModelInfo, register, with_defaults
from methods.budget import audio_intact_reallocate
from methods.random import random_keep_count
from seats_exp.selection import (
    AUDIO,
    VIDEO,
    BaseSelector,
    KVView,
    PlanCounts,
    PlanInput,
    Selection,
    SelectionContext,
)

DEFAULTS = {
    "ttm_k": "auto",
    "ttm_last_group": "skip",
    "ttm_odd_last_grid": "drop",
    "dp": True,
    "dp_layer": 3,
    "dp_p": 0.7,
    "dp_threshold": 0.9,
    "dp_on_stable": "full_cache",
    "dp_in_prefill": False,
}
CHOICES = {
    "ttm_last_group": ("skip", "reduce"),
    "ttm_odd_last_grid": ("drop", "keep"),
    "dp_on_stable": ("full_cache", "reuse_previous"),
}


# =============================================================================================
# TTM
# =============================================================================================


def ttm_reduced_count(k: float, tokens_per_grid: int) -> int:
    """Tokens a reduced grid keeps: ``int((1 - K) * P)``."""
    return int((1.0 - k) * tokens_per_grid)


def ttm_plan(num_grids: int, k: float, tokens_per_grid: int, last_group: str = "skip", odd_last_grid: str = "drop") -> list[int]:
    """Tokens kept in every temporal grid (5.2), without looking at the embeddings."""
    reduced = ttm_reduced_count(k, tokens_per_grid)
    kept = [tokens_per_grid] * num_grids
    for g in range(1, 2 * (num_grids // 2), 2):  # stage A: the odd grid of every pair
        kept[g] = reduced
    if num_grids % 2 and odd_last_grid == "drop":
        kept[num_grids - 1] = 0
    for i in _stage_b_starts(num_grids, last_group):
        if kept[i + 2] == tokens_per_grid:
            kept[i + 2] = reduced
    return kept


def _stage_b_starts(num_grids: int, last_group: str) -> range:
    if last_group == "skip":
        return range(0, num_grids - 4, 4)  # faithful loop bound: i < F - 4
    return range(0, num_grids - 2, 4)  # every grid 4m+2 that exists


def _least_similar(current: torch.Tensor, reference: torch.Tensor, count: int) -> torch.Tensor:
    """Keep-mask [P] of the ``count`` positions of ``current`` least similar to ``reference``."""
    similarity = torch.nn.functional.cosine_similarity(current.float(), reference.float(), dim=-1)  # [P]
    order = torch.sort(similarity, stable=True).indices  # ascending, lowest index on ties
    keep = torch.zeros(current.shape[0], dtype=torch.bool, device=current.device)
    keep[order[:count]] = True
    return keep


def ttm_keep(video: torch.Tensor, tokens_per_grid: int, k: float, last_group: str = "skip",
             odd_last_grid: str = "drop") -> torch.Tensor:
    """TTM keep-mask [V] over the video rows ``video`` [V, D] (temporal-grid order)."""
    total = video.shape[0]
    if tokens_per_grid <= 0 or total % tokens_per_grid:
        raise ValueError(f"dycoke TTM: {total} video tokens are not whole grids of {tokens_per_grid} tokens")
    num_grids = total // tokens_per_grid
    grids = video.reshape(num_grids, tokens_per_grid, -1)  # [F, P, D]
    reduced = ttm_reduced_count(k, tokens_per_grid)
    keep = torch.ones(num_grids, tokens_per_grid, dtype=torch.bool, device=video.device)
    for g in range(1, 2 * (num_grids // 2), 2):
        keep[g] = _least_similar(grids[g], grids[g - 1], reduced)
    if num_grids % 2 and odd_last_grid == "drop":
        keep[num_grids - 1] = False
    for i in _stage_b_starts(num_grids, last_group):
        if num_grids % 2 and odd_last_grid == "drop" and i + 2 == num_grids - 1:
            continue  # already dropped
        keep[i + 2] = _least_similar(grids[i + 2], grids[i], reduced)
    return keep.reshape(-1)


def k_from_target(target: float) -> float:
    """``K = 4 (1 - r) / 3`` for a TTM target retention ``r`` in [0.25, 1]."""
    return 4.0 * (1.0 - target) / 3.0


def _dp_prefill_factor(dp_layer: int, dp_p: float, num_layers: int) -> float:
    """Layer-averaged share of the TTM tokens when prefill DP keeps ``1 - P`` from module ``L`` on."""
    return (dp_layer + (num_layers - dp_layer) * (1.0 - dp_p)) / num_layers


# =============================================================================================
# The selector
# =============================================================================================


@dataclass(frozen=True)
class DyCokeSettings:
    video_ratio: float
    audio_ratio: float
    ttm_k: float | None  # None: derived per sample from the (reallocated) video target
    ttm_last_group: str
    ttm_odd_last_grid: str
    dp: bool
    dp_layer: int
    dp_p: float
    dp_threshold: float
    dp_on_stable: str
    dp_in_prefill: bool
    num_layers: int


class DyCoke(BaseSelector):
    name = "dycoke"

    def __init__(self, settings: DyCokeSettings):
        self.settings = settings

    # -- budget ---------------------------------------------------------------------------------
    def ratios(self, num_video: int, num_audio: int) -> tuple[float, float]:
        """(video target, audio ratio) after audio-intact reallocation."""
        s = self.settings
        if num_video == 0:
            return s.video_ratio, 1.0
        return audio_intact_reallocate(s.video_ratio, s.audio_ratio, num_video, num_audio)

    def reachable(self) -> tuple[float, float]:
        """The video targets ``auto`` can reach."""
        s = self.settings
        factor = _dp_prefill_factor(s.dp_layer, s.dp_p, s.num_layers) if s.dp_in_prefill else 1.0
        return 0.25 * factor, factor

    def ttm_k_for(self, video_target: float) -> float:
        s = self.settings
        if s.ttm_k is not None:
            return s.ttm_k
        low, high = self.reachable()
        if not low - 1e-12 <= video_target <= high + 1e-12:
            raise MethodConfigError(
                f"method dycoke: video retention {video_target:.4g} is outside the range TTM can reach, "
                f"[{low:.4g}, {high:.4g}]" + (" (with dp_in_prefill)" if s.dp_in_prefill else "")
                + "; choose another schedule or set method.ttm_k explicitly")
        ttm_target = video_target / (high if s.dp_in_prefill else 1.0)
        return min(1.0, max(0.0, k_from_target(min(1.0, ttm_target))))

    # -- before the LLM: TTM ------------------------------------------------------------------------
    def before_llm(self, ctx: SelectionContext) -> Selection | None:
        if ctx.embeds is None:
            return None
        video = ctx.modality == VIDEO
        audio = ctx.modality == AUDIO
        num_video, num_audio = int(video.sum()), int(audio.sum())
        video_target, audio_ratio = self.ratios(num_video, num_audio)
        keep = torch.ones(ctx.length, dtype=torch.bool, device=ctx.modality.device)
        if num_video:
            k = self.ttm_k_for(video_target)
            keep[video] = ttm_keep(ctx.embeds[video], ctx.video_tokens_per_grid, k,
                                   self.settings.ttm_last_group, self.settings.ttm_odd_last_grid)
        if num_audio and audio_ratio < 1.0:  # the reallocation had to take audio below 1: random drop
            positions = torch.nonzero(audio).flatten()
            count = random_keep_count(audio_ratio, num_audio)
            perm = torch.randperm(num_audio, generator=ctx.generator, device=positions.device)
            keep[positions] = False
            keep[positions[perm[:count]]] = True
        return Selection(keep=keep, label="ttm")

    # -- prefill DP (inferred SEATS variant) -------------------------------------------------------
    def hook_layers(self, num_layers: int) -> set[int]:
        return {self.settings.dp_layer} if self.settings.dp_in_prefill else set()

    def after_layer(self, layer: int, hidden: torch.Tensor, ctx: SelectionContext) -> Selection | None:
        video = ctx.modality == VIDEO
        num_video = int(video.sum())
        if num_video == 0:
            return None
        scores = ctx.score_last_text(layer - 1, hidden).float()  # [S_cur]
        keep = ~video
        keep[_top_video(scores, video, int(num_video * (1.0 - self.settings.dp_p)))] = True
        return Selection(keep=keep, label="dp_prefill")

    # -- decoding DP ----------------------------------------------------------------------------
    def decode_view_module(self, num_layers: int) -> int | None:
        return self.settings.dp_layer if self.settings.dp else None

    def decode_view(self, step: int, attention: torch.Tensor, ctx: SelectionContext) -> KVView | None:
        """One DP step, without host syncs after a sample's first step (the video count is cached)."""
        s = self.settings
        state = ctx.scratch  # per sample (fresh at every prefill)
        video = ctx.modality == VIDEO  # [T]; generated entries (appended last) are never video
        if "num_video" not in state:
            state["num_video"] = int(video.sum())
        count = int(state["num_video"] * (1.0 - s.dp_p))
        current = torch.where(video, attention.float(), 0.0)  # a_t, zero off the video entries
        previous = state.get("reference")
        if previous is None or previous.shape[0] > current.shape[0]:
            similarity = current.new_zeros(())  # first step of a sample: sim := 0
        else:
            previous = torch.nn.functional.pad(previous, (0, current.shape[0] - previous.shape[0]))
            similarity = torch.nn.functional.cosine_similarity(current, previous, dim=0)
        state["reference"] = current
        state.setdefault("similarities", []).append(similarity)
        selected = ~video
        order = torch.sort(current.masked_fill(~video, float("-inf")), descending=True, stable=True).indices
        selected[order[:count]] = True  # top video entries by a_t, ties: lowest index
        if s.dp_on_stable == "reuse_previous" and "keep" in state:
            fallback = torch.nn.functional.pad(state["keep"], (0, video.shape[0] - state["keep"].shape[0]), value=True)
        else:
            fallback = torch.ones_like(video)  # faithful: a stable step uses the full cache
        keep = torch.where(similarity < s.dp_threshold, selected, fallback)
        state["keep"] = keep
        return KVView(keep=keep)

    # -- plan, describe -----------------------------------------------------------------------
    def plan(self, inp: PlanInput) -> PlanCounts:
        s = self.settings
        video_target, audio_ratio = self.ratios(inp.video_tokens, inp.audio_tokens)
        k = self.ttm_k_for(video_target) if inp.video_tokens else 0.0
        per_grid = ttm_plan(inp.num_grids, k, inp.video_tokens_per_grid, s.ttm_last_group, s.ttm_odd_last_grid)
        video = sum(per_grid) if inp.video_tokens else 0
        audio = random_keep_count(audio_ratio, inp.audio_tokens)
        per_layer = []
        for module in range(inp.num_layers):
            if s.dp_in_prefill and module >= s.dp_layer:
                per_layer.append((int(video * (1.0 - s.dp_p)), audio))
            else:
                per_layer.append((video, audio))
        return PlanCounts(per_layer=per_layer, details={"dycoke": {
            "ttm_k": k, "video_target": video_target, "audio_ratio": audio_ratio, "ttm_video_kept": video,
            "dp_in_prefill": s.dp_in_prefill, "dp_layer": s.dp_layer, "dp_p": s.dp_p}})

    def describe(self) -> dict:
        return {"name": self.name, **asdict(self.settings),
                "ttm_k": "auto" if self.settings.ttm_k is None else self.settings.ttm_k}


def _top_video(scores: torch.Tensor, video: torch.Tensor, count: int) -> torch.Tensor:
    """Sequence indices of the ``count`` video positions with the highest score (ties: lowest index)."""
    positions = torch.nonzero(video).flatten()
    order = torch.sort(scores[positions].float(), descending=True, stable=True).indices
    return positions[order[:count]]


def _number(key: str, value, low: float, high: float, *, integer: bool = False):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise MethodConfigError(f"method.{key}: expected {'an integer' if integer else 'a number'}, got {value!r}")
    if not low <= value <= high:
        raise MethodConfigError(f"method.{key}={value} is outside [{low:g}, {high:g}]")
    return value


@register("dycoke")
def build(params: dict, video_ratio: float, audio_ratio: float, model: ModelInfo) -> DyCoke:
    p = with_defaults("dycoke", params, DEFAULTS, CHOICES)
    for key in ("dp", "dp_in_prefill"):
        if not isinstance(p[key], bool):
            raise MethodConfigError(f"method.{key}: must be true or false, got {p[key]!r}")
    ttm_k = None if p["ttm_k"] == "auto" else float(_number("ttm_k", p["ttm_k"], 0.0, 1.0))
    dp_layer = _number("dp_layer", p["dp_layer"], 1, model.num_layers - 1, integer=True)
    dp_p = float(_number("dp_p", p["dp_p"], 0.0, 1.0))
    dp_threshold = float(_number("dp_threshold", p["dp_threshold"], -math.inf, math.inf))
    selector = DyCoke(DyCokeSettings(
        video_ratio=float(video_ratio), audio_ratio=float(audio_ratio), ttm_k=ttm_k,
        ttm_last_group=p["ttm_last_group"], ttm_odd_last_grid=p["ttm_odd_last_grid"], dp=p["dp"],
        dp_layer=dp_layer, dp_p=dp_p, dp_threshold=dp_threshold, dp_on_stable=p["dp_on_stable"],
        dp_in_prefill=p["dp_in_prefill"], num_layers=model.num_layers))
    if ttm_k is None:
        low, _ = selector.reachable()
        if audio_ratio >= 1.0 or video_ratio < low:  # reallocation never raises the video target
            selector.ttm_k_for(float(video_ratio))
    return selector
