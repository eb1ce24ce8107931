"""VisionZip and VisionZip-om: dominant + contextual tokens per window, before the LLM
(seats-reference 12.4 and section 6; baselines-reference 3.2).

Per modality, over fixed windows of that modality's own token list (video: ``grid_in_window``
temporal grids; audio: ``sec_in_audio_window`` x 25 tokens, the rate hard-coded upstream for both
models), for a window of n tokens and retention r with contextual ratio c:

* dominant ratio d = max(r - c, 0); dominant count m = min(n, max(floor(d*n), 1)) if d > 0 else 0,
  the product evaluated in **float32** (upstream multiplies by a tensor); the m tokens with the
  highest encoder attention received (``video_attn``/``audio_attn``, section 6) are kept (stable
  descending order: ties -> lower index);
* contextual count c_n = min(max(round(c*n), 1), n - m) if c > 0 else 0 (Python round, float64);
  the R non-dominant tokens, in order, are split into c_n anchors at positions 0, step, 2*step, ...
  (step = max(1, R // c_n)) and the rest, each assigned to the anchor whose pooled encoder key
  (normalised by ||k|| + 1e-6) has the highest dot product with its own (first anchor on ties);
* each anchor's embedding becomes anchor + mean(assigned) (``contextual_merge: sum``, faithful:
  VisionZip's own arithmetic, seats-reference section 2 item 20) or the mean of the anchor and its
  assigned tokens (``contextual_merge: mean``, a true average); anchors with nothing assigned keep
  their embedding; the one-hot/count arithmetic runs in the key dtype;
* kept = dominant + anchors.

``visionzip`` (video only, audio-intact) first reallocates the schedule pair with
``audio_intact_reallocate`` on the prompt's V, A; audio is kept whole unless the reallocation clamped
(``r_a' < 1``), then a random floor-based subset survives as in Random (section 12.2, seeded per
sample).  ``visionzip_omni`` runs the same selection on audio with the pair as given.

Encoder statistics: video windows of ``grid_in_window`` grids; audio (``visionzip_omni`` only)
windows of ``sec_in_audio_window`` seconds (100 pre-pooling frames on Qwen2.5, 52 tokens on Qwen3).

Settings (``conf/method/visionzip.yaml`` / ``visionzip_omni.yaml``; faithful default first):
``contextual_ratio`` (0.05), ``grid_in_window`` (1), ``sec_in_audio_window`` (2),
``contextual_merge`` (sum|mean), ``score_dtype`` (model|float32).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from methods import MethodConfigError, ModelInfo, register, with_defaults
from methods.budget import audio_intact_reallocate
from methods.random import random_keep_count
from seats_exp.selection import (
    AUDIO,
    AUDIO_ATTN,
    AUDIO_KEYS,
    VIDEO,
    VIDEO_ATTN,
    VIDEO_KEYS,
    BaseSelector,
    PlanCounts,
    PlanInput,
    Selection,
    SelectionContext,
    StatsRequest,
)

# Upstream's audio window: sec_in_audio_window x 25 tokens on both models.
FAITHFUL_AUDIO_TOKENS_PER_SECOND = 25
KEY_NORM_EPS = 1e-6

DEFAULT_PARAMS = {"contextual_ratio": 0.05, "grid_in_window": 1, "sec_in_audio_window": 2,
                  "contextual_merge": "sum", "score_dtype": "model"}
_CHOICES = {"contextual_merge": ("sum", "mean"), "score_dtype": ("model", "float32")}


# =============================================================================================
# Counts (pure functions of ratios and window sizes)
# =============================================================================================


def dominant_count(window_length: int, retention: float, contextual_ratio: float) -> int:
    """m = min(n, max(floor(d*n), 1)) if d > 0 else 0, d = max(r - c, 0) (float64); d*n in float32."""
    dominant_ratio = max(retention - contextual_ratio, 0)
    if not dominant_ratio > 0:
        return 0
    product = np.float32(dominant_ratio) * np.float32(window_length)  # float32 product, float32 rounding
    return min(window_length, max(math.floor(product), 1))


def contextual_count(window_length: int, dominant: int, contextual_ratio: float) -> int:
    """c_n = min(max(round(c*n), 1), n - m) if c > 0 else 0 (Python round on float64)."""
    if not contextual_ratio > 0:
        return 0
    return min(max(round(contextual_ratio * window_length), 1), window_length - dominant)


def window_lengths(total: int, window: int) -> list[tuple[int, int]]:
    """[(window length, number of such windows)]: consecutive windows, the last one may be shorter."""
    if total == 0:
        return []
    window = max(1, min(window, total))
    full, last = divmod(total, window)
    return [(window, full)] + ([(last, 1)] if last else [])


def planned_keep(total: int, window: int, retention: float, contextual_ratio: float) -> int:
    """Tokens VisionZip keeps of one modality (dominant + anchors over all windows)."""
    kept = 0
    for length, count in window_lengths(total, window):
        m = dominant_count(length, retention, contextual_ratio)
        kept += count * (m + contextual_count(length, m, contextual_ratio))
    return kept


# =============================================================================================
# Selection over equal-size windows (vectorised across windows)
# =============================================================================================


@dataclass
class WindowResult:
    keep: torch.Tensor  # bool [W, n]
    anchor_index: torch.Tensor  # long [W, c] window-local positions of the anchors
    anchor_embeds: torch.Tensor  # [W, c, D] new anchor embeddings


def visionzip_windows(embeds: torch.Tensor, scores: torch.Tensor, keys: torch.Tensor, dominant: int,
                      contextual: int, merge: str = "sum") -> WindowResult:
    """VisionZip in W windows of n tokens at once.

    embeds: [W, n, D] LLM input rows; scores: [W, n] attention received; keys: [W, n, d] pooled keys.
    """
    num_windows, n, _ = embeds.shape
    device = embeds.device
    rows = torch.arange(num_windows, device=device)[:, None]  # [W, 1]
    keep = torch.zeros(num_windows, n, dtype=torch.bool, device=device)
    if dominant > 0:
        order = torch.sort(scores.float(), dim=1, descending=True, stable=True).indices  # [W, n]
        keep[rows, order[:, :dominant]] = True
    rest = n - dominant
    empty = WindowResult(keep, torch.zeros(num_windows, 0, dtype=torch.long, device=device), embeds[:, :0])
    if contextual <= 0 or rest <= 0:
        return empty
    # The non-dominant tokens in order: sort positions with the dominant ones pushed to the end.
    position = torch.arange(n, device=device).expand(num_windows, n)
    non_dominant = torch.sort(torch.where(keep, position + n, position), dim=1).values[:, :rest]  # [W, R]
    step = max(1, rest // contextual)
    anchor_slot = torch.arange(0, rest, step, device=device)[:contextual]  # [c] slots among the R
    is_anchor = torch.zeros(rest, dtype=torch.bool, device=device)
    is_anchor[anchor_slot] = True
    anchor_index = non_dominant[:, anchor_slot]  # [W, c] window positions
    other_index = non_dominant[:, ~is_anchor]  # [W, R - c]
    anchor_rows = embeds[rows, anchor_index]  # [W, c, D]
    keep[rows, anchor_index] = True
    if other_index.shape[1] == 0:  # nothing to merge: anchors keep their embedding
        return WindowResult(keep, anchor_index, anchor_rows)
    unit = keys / (keys.norm(dim=-1, keepdim=True) + KEY_NORM_EPS)  # [W, n, d]
    similarity = torch.bmm(unit[rows, other_index], unit[rows, anchor_index].transpose(1, 2))  # [W, R-c, c]
    assign = torch.zeros_like(similarity)  # one-hot in the key dtype
    assign.scatter_(2, similarity.argmax(dim=2, keepdim=True), 1)
    counts = assign.sum(dim=1).unsqueeze(-1)  # [W, c, 1] assigned tokens per anchor (key dtype)
    summed = torch.bmm(assign.transpose(1, 2).to(embeds.dtype), embeds[rows, other_index])  # [W, c, D]
    if merge == "sum":  # faithful: anchor + mean(assigned)
        merged = anchor_rows + summed / counts.clamp(min=1).to(embeds.dtype)
    else:  # a true average of the anchor and its assigned tokens
        merged = (anchor_rows + summed) / (counts + 1).to(embeds.dtype)
    return WindowResult(keep, anchor_index, merged)


def visionzip_modality(embeds: torch.Tensor, scores: torch.Tensor, keys: torch.Tensor, window: int,
                       retention: float, contextual_ratio: float, merge: str = "sum"):
    """One modality's tokens in sequence order: (keep [N], anchor positions [K], anchor embeddings [K, D])."""
    total = embeds.shape[0]
    keep = torch.zeros(total, dtype=torch.bool, device=embeds.device)
    anchors, anchor_rows = [], []
    start = 0
    for length, count in window_lengths(total, window):
        stop = start + length * count
        m = dominant_count(length, retention, contextual_ratio)
        c = contextual_count(length, m, contextual_ratio)
        result = visionzip_windows(embeds[start:stop].reshape(count, length, -1), scores[start:stop].reshape(count, length),
                                   keys[start:stop].reshape(count, length, -1), m, c, merge)
        keep[start:stop] = result.keep.reshape(-1)
        offsets = start + length * torch.arange(count, device=embeds.device)[:, None]  # [W, 1]
        anchors.append((result.anchor_index + offsets).reshape(-1))
        anchor_rows.append(result.anchor_embeds.reshape(-1, embeds.shape[-1]))
        start = stop
    return keep, torch.cat(anchors), torch.cat(anchor_rows)


# =============================================================================================
# The selector
# =============================================================================================


@dataclass(frozen=True)
class VisionZipSettings:
    name: str
    video_ratio: float
    audio_ratio: float
    contextual_ratio: float
    grid_in_window: int
    sec_in_audio_window: float
    contextual_merge: str
    score_dtype: str
    audio_intact: bool  # visionzip: True (video only), visionzip_omni: False


class VisionZip(BaseSelector):
    def __init__(self, settings: VisionZipSettings):
        self.settings = settings
        self.name = settings.name
        video_needs = {VIDEO_ATTN, VIDEO_KEYS}
        self.needs = frozenset(video_needs if settings.audio_intact else video_needs | {AUDIO_ATTN, AUDIO_KEYS})
        self.stats_request = StatsRequest(video_window_grids=settings.grid_in_window,
                                          audio_window_seconds=settings.sec_in_audio_window, dtype=settings.score_dtype)
        self.audio_window_tokens = max(1, round(settings.sec_in_audio_window * FAITHFUL_AUDIO_TOKENS_PER_SECOND))
        # only the pair (1, 1) switches VisionZip off; a single ratio of 1 still selects (and merges)
        self.inert = settings.video_ratio >= 1.0 and settings.audio_ratio >= 1.0

    def ratios(self, num_video: int, num_audio: int) -> tuple[float, float]:
        """The (video, audio) retention applied to this prompt (visionzip: after reallocation)."""
        video, audio = self.settings.video_ratio, self.settings.audio_ratio
        if self.settings.audio_intact:
            video, audio = audio_intact_reallocate(video, audio, num_video, num_audio)
        for key, value in (("video", video), ("audio", audio)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{self.name}: the {key} retention {value:.6f} after the audio-intact reallocation "
                                 f"of ({self.settings.video_ratio}, {self.settings.audio_ratio}) for {num_video} video "
                                 f"and {num_audio} audio tokens is outside [0, 1]; raise the schedule ratios")
        return video, audio

    def _window(self, code: int, tokens_per_grid: int) -> int:
        return self.settings.grid_in_window * tokens_per_grid if code == VIDEO else self.audio_window_tokens

    def planned_counts(self, num_video: int, num_audio: int, tokens_per_grid: int) -> tuple[int, int]:
        video_ratio, audio_ratio = self.ratios(num_video, num_audio)
        c = self.settings.contextual_ratio
        if self.inert:
            return num_video, num_audio
        video = planned_keep(num_video, self._window(VIDEO, tokens_per_grid), video_ratio, c)
        if self.settings.audio_intact:
            audio = random_keep_count(audio_ratio, num_audio)
        else:
            audio = planned_keep(num_audio, self._window(AUDIO, 0), audio_ratio, c)
        return video, audio

    def before_llm(self, ctx: SelectionContext) -> Selection | None:
        if ctx.embeds is None:
            return None
        video_mask, audio_mask = ctx.video_mask, ctx.audio_mask  # [S]
        num_video, num_audio = int(video_mask.sum()), int(audio_mask.sum())
        video_ratio, audio_ratio = self.ratios(num_video, num_audio)
        keep = torch.ones(ctx.length, dtype=torch.bool, device=ctx.modality.device)  # [S]
        replace_index, replace_rows = [], []
        stats = ctx.stats
        jobs = [(VIDEO, video_mask, num_video, video_ratio, stats.video_attn, stats.video_keys)]
        if not self.settings.audio_intact:
            jobs.append((AUDIO, audio_mask, num_audio, audio_ratio, stats.audio_attn, stats.audio_keys))
        for code, mask, count, ratio, scores, keys in jobs:
            if count == 0 or self.inert:  # upstream runs the windows even at ratio 1 unless both ratios are 1
                continue
            if scores is None or keys is None or scores.numel() != count or keys.shape[0] != count:
                raise ValueError(f"{self.name}: encoder statistics do not match the {count} "
                                 f"{'video' if code == VIDEO else 'audio'} tokens of this prompt")
            positions = torch.nonzero(mask).flatten()
            local_keep, anchors, rows = visionzip_modality(
                ctx.embeds[mask], scores.reshape(-1).to(ctx.embeds.device), keys.to(ctx.embeds.device),
                self._window(code, ctx.video_tokens_per_grid), ratio, self.settings.contextual_ratio,
                self.settings.contextual_merge)
            keep[positions] = local_keep
            replace_index.append(positions[anchors])
            replace_rows.append(rows)
        if self.settings.audio_intact and num_audio and audio_ratio < 1.0:  # clamped: random audio
            positions = torch.nonzero(audio_mask).flatten()
            k = random_keep_count(audio_ratio, num_audio)
            perm = torch.randperm(num_audio, generator=ctx.generator, device=positions.device)
            keep[positions] = False
            keep[positions[perm[:k]]] = True
        if bool(keep.all()) and not replace_index:
            return None
        selection = Selection(keep, label=self.name)
        if replace_index and sum(x.numel() for x in replace_index):
            selection.replace_index = torch.cat(replace_index)
            selection.replace_embeds = torch.cat(replace_rows)
        return selection

    def plan(self, inp: PlanInput) -> PlanCounts:
        video, audio = self.planned_counts(inp.video_tokens, inp.audio_tokens, inp.video_tokens_per_grid)
        video_ratio, audio_ratio = self.ratios(inp.video_tokens, inp.audio_tokens)
        details = {"settings": {"applied_ratio": {"video": round(video_ratio, 6), "audio": round(audio_ratio, 6)},
                                "random_audio": bool(self.settings.audio_intact and audio_ratio < 1.0 and inp.audio_tokens)}}
        return PlanCounts(per_layer=[(video, audio)] * inp.num_layers, details=details)

    def describe(self) -> dict:
        return {**asdict(self.settings), "audio_window_tokens": self.audio_window_tokens,
                "needs": sorted(self.needs)}


def build_visionzip(name: str, params: dict, video_ratio: float, audio_ratio: float, model: ModelInfo) -> VisionZip:
    p = with_defaults(name, params, DEFAULT_PARAMS, _CHOICES)
    c = p["contextual_ratio"]
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not 0 <= c <= 1:
        raise MethodConfigError(f"method.contextual_ratio must be a number in [0, 1], got {c!r}")
    g = p["grid_in_window"]
    if isinstance(g, bool) or not isinstance(g, int) or g < 1:
        raise MethodConfigError(f"method.grid_in_window must be a positive integer, got {g!r}")
    s = p["sec_in_audio_window"]
    if isinstance(s, bool) or not isinstance(s, (int, float)) or not s > 0:
        raise MethodConfigError(f"method.sec_in_audio_window must be a positive number, got {s!r}")
    return VisionZip(VisionZipSettings(name=name, video_ratio=float(video_ratio), audio_ratio=float(audio_ratio),
                                       contextual_ratio=float(c), grid_in_window=g, sec_in_audio_window=float(s),
                                       contextual_merge=p["contextual_merge"], score_dtype=p["score_dtype"],
                                       audio_intact=name == "visionzip"))


@register("visionzip")
def build(params: dict, video_ratio: float, audio_ratio: float, model: ModelInfo) -> VisionZip:
    return build_visionzip("visionzip", params, video_ratio, audio_ratio, model)


@register("visionzip_omni")
def build_omni(params: dict, video_ratio: float, audio_ratio: float, model: ModelInfo) -> VisionZip:
    return build_visionzip("visionzip_omni", params, video_ratio, audio_ratio, model)
