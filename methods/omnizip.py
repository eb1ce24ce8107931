"""OmniZip (CVPR'26): audio-guided joint compression of video and audio tokens, before the LLM.

Newest released algorithm, baselines-reference section 6 (6.1-6.3), budget mapping 6.5.  The whole
method lives in this file; the engine applies the keep-mask (order and M-RoPE positions stay) and
writes the merged anchors as replacement embeddings.  Reading order:

A. ``select_audio`` -- global top-``n_dom`` audio tokens by encoder attention received (the last
   audio layer, one softmax over the whole clip: ``StatsRequest.audio_scope="clip"``, pooled to LLM
   tokens), ``n_dom = round((1 - rho_audio) * N_a)``.
B. anchors: of the ``R`` remaining tokens in index order, every ``R // n_anc``-th, ``n_anc =
   min(round(contextual_ratio * N_a), R)``; only when ``g > 0`` (newest version: no anchors at all
   for ``g = 0``).
C. ``merge_anchors`` -- each other remaining token goes to its most similar anchor (cosine of the
   LLM input embeddings); per anchor the top-``g`` by cross-modal score (max cosine to any video
   token of the clip) are merged: ``(anchor + sum w_i x_i) / (1 + sum w_i)``, ``w = softmax(scores)``.
D. ``token_runs`` -- time windows = runs of consecutive positions; video run i pairs with audio
   run i for i < G = min(#runs); extra video runs are unguided.
E. ``window_video_ratios`` -- per-window video pruning ratio ``clamp(0.75 - 0.40 S_a(i), 0.35,
   0.75)`` from the audio kept in window i, then the budget normalisation (G > 2), quirks kept.
F. ``istc_keep_mask`` -- inside each window, frame = temporal grid of P tokens; keep
   ``int(P (1 - ratio))`` per frame: DPC-KNN density-peak scores on even frames, lowest cosine
   similarity to the unpruned previous frame on odd frames.

Budget (6.5): ``rho_video`` / ``rho_audio`` are the knobs; ``auto`` derives them from the schedule's
(video, audio) retention pair: ``rho_video = 1 - r_v``, ``rho_audio = 1 - r_a + contextual_ratio``
(``+ 0`` when ``g = 0``: no anchors).  The per-window clamps make only video retention in
[0.25, 0.65] reachable: a schedule outside it is a configuration error naming the range, unless
``clamp: true`` (then the nearest reachable pair is used and recorded as ``budget.reached``).

Faithful quirks kept (documented in conf/method/omnizip.yaml):
* the clip-scope audio softmax (no 2-s block mask) -- from the statistics collector;
* normalisation runs only for G > 2; with all base ratios equal the min and max window are the same
  one and its discard is counted twice; the fixed extremes and clamps mean the realised average can
  miss ``rho_video``;
* frames beyond ``F * P`` in a run are dropped (does not occur with whole grids);
* a sample without audio or without video: OmniZip is skipped (full tokens), which the sample
  record notes (``notes.omnizip``) and ``result.json`` counts (``sample_notes``).  The named fix
  ``missing_modality: compress_present`` compresses the modality that is there instead: video alone
  runs ISTC with ``rho_video`` in every window (all windows unguided); audio alone runs A-C with the
  cross-modal score replaced by the similarity to the anchors (upstream's own no-video branch).
Score scale: the collector's score is the head-mean column sum; upstream divides it by the number
of queries too -- a constant factor, irrelevant to the top-k of step A.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from methods import MethodConfigError, ModelInfo, register, with_defaults
from seats_exp.selection import (
    AUDIO,
    AUDIO_ATTN,
    PLAN_APPROX,
    PLAN_EXACT,
    VIDEO,
    BaseSelector,
    PlanCounts,
    PlanInput,
    Selection,
    SelectionContext,
    StatsRequest,
)

# Hard-coded upstream constants (baselines-reference 6.2/6.3).
MIN_WINDOW_RATIO = 0.35  # per-window video pruning ratio clamp
MAX_WINDOW_RATIO = 0.75
NORM_TOLERANCE = 1e-3  # budget normalisation: "differs by more than"
FEATURE_EPS = 1e-6  # L2 normalisation of audio/video embeddings for similarities
# Reachable video retention: 1 - [MAX, MIN] window ratio.
REACHABLE_VIDEO = (1.0 - MAX_WINDOW_RATIO, 1.0 - MIN_WINDOW_RATIO)
_RANGE_EPS = 1e-9
_SIM_ROWS = 2048  # rows per block of the cross-modal similarity (bounds memory on long videos)
_FRAMES_PER_BLOCK = 64  # frames per batched DPC-KNN block (bounds the [b, P, D] gather)

NOTE_KEY = "omnizip"
NOTE_NO_AUDIO = "skipped: no audio tokens (full tokens)"
NOTE_NO_VIDEO = "skipped: no video tokens (full tokens)"
NOTE_VIDEO_ALONE = "no audio tokens: video compressed alone (rho_video in every window)"
NOTE_AUDIO_ALONE = "no video tokens: audio compressed alone (anchor similarity as merge score)"
MISSING_MODALITY = ("full_tokens", "compress_present")


# =============================================================================================
# A-C. Audio: dominant tokens, anchors, anchor merging
# =============================================================================================


def dominant_count(num_audio: int, rho_audio: float) -> int:
    """``n_dom = clamp(round((1 - rho_a) N_a), 0, N_a)`` (Python's round, as upstream)."""
    return int(max(0, min(num_audio, round((1.0 - rho_audio) * num_audio))))


def anchor_count(num_audio: int, remaining: int, contextual_ratio: float, g: int) -> int:
    """``min(round(c N_a), R)``; zero without remaining tokens or with ``g = 0`` (newest version)."""
    if remaining <= 0 or g <= 0:
        return 0
    return min(int(max(0, round(contextual_ratio * num_audio))), remaining)


def audio_keep_count(num_audio: int, rho_audio: float, contextual_ratio: float, g: int) -> int:
    """Audio tokens OmniZip keeps (dominant + anchors): exact, independent of the scores."""
    dom = dominant_count(num_audio, rho_audio)
    return dom + anchor_count(num_audio, num_audio - dom, contextual_ratio, g)


@dataclass
class AudioSelection:
    keep: torch.Tensor  # bool [N_a]: dominant or anchor
    dominant: torch.Tensor  # long [n_dom] local indices
    anchors: torch.Tensor  # long [n_anc] local indices, ascending
    pool: torch.Tensor  # long [M] remaining non-anchor tokens (merge candidates), ascending


def select_audio(scores: torch.Tensor, rho_audio: float, contextual_ratio: float, g: int) -> AudioSelection:
    """Steps A and B on one clip's audio scores [N_a]."""
    n = int(scores.numel())
    device = scores.device
    keep = torch.zeros(n, dtype=torch.bool, device=device)
    n_dom = dominant_count(n, rho_audio)
    dominant = torch.topk(scores, n_dom).indices if n_dom > 0 else torch.zeros(0, dtype=torch.long, device=device)
    keep[dominant] = True
    remaining = torch.nonzero(~keep).flatten()  # ascending index order
    n_anc = anchor_count(n, int(remaining.numel()), contextual_ratio, g)
    empty = torch.zeros(0, dtype=torch.long, device=device)
    if n_anc == 0:
        return AudioSelection(keep, dominant, empty, empty)
    step = max(1, remaining.numel() // n_anc)
    local = torch.arange(0, remaining.numel(), step, device=device)[:n_anc]
    anchors = remaining[local]
    keep[anchors] = True
    is_pool = torch.ones(remaining.numel(), dtype=torch.bool, device=device)
    is_pool[local] = False
    return AudioSelection(keep, dominant, anchors, remaining[is_pool])


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / (x.norm(dim=-1, keepdim=True) + FEATURE_EPS)


def merge_anchors(
    audio: torch.Tensor, video: torch.Tensor | None, anchors: torch.Tensor, pool: torch.Tensor, g: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step C.  audio [N_a, D], video [N_v, D], local anchor/pool indices.  Without video (``None`` or
    no rows) the score of a pool token is its similarity to its anchor (upstream's no-video branch).

    Returns (anchor local indices that received merged tokens [C'], their new embeddings [C', D]).
    Everything is computed in the dtype of ``audio``/``video`` (the caller picks it).
    """
    empty = (anchors[:0], audio[:0])
    if anchors.numel() == 0 or pool.numel() == 0 or g <= 0:
        return empty
    a_unit = _unit(audio)
    pool_unit = a_unit[pool]  # [M, D]
    to_anchor = pool_unit @ a_unit[anchors].T  # [M, C]
    assign = to_anchor.argmax(dim=1)  # [M] anchor slot of each pool token
    if video is None or video.shape[0] == 0:
        cross = to_anchor.amax(dim=1)  # = similarity to the assigned anchor
    else:
        v_unit = _unit(video)
        cross = torch.cat([(pool_unit[i : i + _SIM_ROWS] @ v_unit.T).amax(dim=1)
                           for i in range(0, pool.numel(), _SIM_ROWS)])  # [M] max cosine to any video token
    # top-min(g, #assigned) per anchor: order by (anchor slot, score descending), rank inside the slot
    by_score = torch.argsort(cross, descending=True, stable=True)
    order = by_score[torch.argsort(assign[by_score], stable=True)]
    slots = assign[order]
    counts = torch.bincount(slots, minlength=anchors.numel())
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(order.numel(), device=order.device) - starts[slots]
    picked = order[rank < g]  # pool-local indices of the merged tokens
    picked_slot = assign[picked]
    # w = softmax over each anchor's picked scores (cosines lie in [-1, 1]: exp needs no shift)
    acc = torch.promote_types(audio.dtype, torch.float32)  # as torch.softmax: at least float32 inside
    expo = cross[picked].to(acc).exp()
    denom = torch.zeros(anchors.numel(), dtype=acc, device=expo.device).index_add_(0, picked_slot, expo)
    weights = (expo / denom[picked_slot]).to(audio.dtype)  # [P'], as a softmax in the feature dtype
    weighted = torch.zeros(anchors.numel(), audio.shape[1], dtype=audio.dtype, device=audio.device)
    weighted.index_add_(0, picked_slot, audio[pool[picked]] * weights[:, None])
    weight_sum = torch.zeros(anchors.numel(), dtype=audio.dtype, device=audio.device).index_add_(0, picked_slot, weights)
    merged_slots = torch.nonzero(counts > 0).flatten()
    new = (audio[anchors[merged_slots]] + weighted[merged_slots]) / (1.0 + weight_sum[merged_slots, None])
    return anchors[merged_slots], new


# =============================================================================================
# D-E. Time windows and per-window video ratios
# =============================================================================================


def token_runs(positions: torch.Tensor) -> list[int]:
    """Lengths of the maximal runs of consecutive values in an ascending index list (step D)."""
    if positions.numel() == 0:
        return []
    breaks = torch.nonzero(positions[1:] - positions[:-1] > 1).flatten() + 1
    edges = [0, *breaks.tolist(), int(positions.numel())]
    return [edges[i + 1] - edges[i] for i in range(len(edges) - 1)]


def _clamp_ratio(x: float) -> float:
    return max(MIN_WINDOW_RATIO, min(MAX_WINDOW_RATIO, x))


def window_video_ratios(
    audio_retention: list[float], video_run_sizes: list[int], rho_video: float, num_video_tokens: int
) -> list[float]:
    """Step E: the video pruning ratio of every video run (guided first, then unguided).

    ``audio_retention[i]`` = fraction of audio run i kept after A+B, for the G guided windows.
    Plain Python floats in upstream's operation order, so values match it to the last bit.
    """
    num_guided = len(audio_retention)
    base = [_clamp_ratio(MAX_WINDOW_RATIO + (MIN_WINDOW_RATIO - MAX_WINDOW_RATIO) * r) for r in audio_retention]
    sizes = video_run_sizes[:num_guided]
    guided_tokens = sum(sizes)
    unguided_tokens = sum(video_run_sizes[num_guided:])
    target = rho_video * num_video_tokens - rho_video * unguided_tokens  # discard over guided windows
    adjusted = list(base)
    if num_guided > 2 and guided_tokens > 0:
        base_discard = sum(base[i] * sizes[i] for i in range(num_guided))
        if abs(base_discard - target) > NORM_TOLERANCE and base_discard > 0:
            i_min = base.index(min(base))
            i_max = base.index(max(base))  # [quirk] the same window as i_min when all are equal
            others = [i for i in range(num_guided) if i != i_min and i != i_max]
            other_discard = sum(base[i] * sizes[i] for i in others)
            if others and other_discard > 0:
                fixed = base[i_min] * sizes[i_min] + base[i_max] * sizes[i_max]
                scale = (target - fixed) / other_discard
                for i in others:
                    adjusted[i] = _clamp_ratio(base[i] * scale)
                missing = target - sum(adjusted[i] * sizes[i] for i in range(num_guided))
                if abs(missing) > NORM_TOLERANCE:
                    other_size = sum(sizes[i] for i in others)
                    if other_size > 0:
                        per_token = missing / other_size
                        for i in others:
                            adjusted[i] = _clamp_ratio(adjusted[i] + per_token)
    return adjusted + [rho_video] * (len(video_run_sizes) - num_guided)


def frame_keep_count(tokens_per_frame: int, ratio: float) -> int:
    """``int(P * (1 - ratio))`` (floor, upstream's float order)."""
    return int(tokens_per_frame * (1.0 - ratio))


def video_keep_count(video_run_sizes: list[int], ratios: list[float], tokens_per_frame: int) -> int:
    """Video tokens step F keeps for these runs and ratios (exact)."""
    kept = 0
    for size, ratio in zip(video_run_sizes, ratios):
        frames = size // tokens_per_frame if tokens_per_frame > 0 else 0
        if frames == 0:
            kept += size
        else:
            kept += frames * min(tokens_per_frame, frame_keep_count(tokens_per_frame, ratio))
    return kept


# =============================================================================================
# F. ISTC inside each window
# =============================================================================================


def dpc_knn_scores(frames: torch.Tensor, k: int = 5) -> torch.Tensor:
    """Density-peak scores ``rho * delta`` of every token of each frame: frames [B, P, D] -> [B, P]."""
    _, p, _ = frames.shape
    unit = F.normalize(frames, dim=-1)
    dist = 1 - unit @ unit.transpose(1, 2)  # [B, P, P] cosine distance
    dist.diagonal(dim1=1, dim2=2).fill_(float("inf"))
    k = min(k, p - 1)
    density = torch.exp(-dist.topk(k, dim=2, largest=False).values.mean(dim=2))  # [B, P]
    higher = density[:, None, :] > density[:, :, None]  # [b, i, j]: token j is denser than i
    delta = dist.masked_fill(~higher, float("inf")).amin(dim=2)
    peak = torch.isinf(delta)
    farthest = dist.diagonal_scatter(torch.zeros_like(dist.diagonal(dim1=1, dim2=2)), dim1=1, dim2=2).amax(dim=2)
    delta = torch.where(peak, farthest, delta)
    return delta * density


def temporal_similarity(frames: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """Per-position cosine similarity with the (unpruned) previous frame: [B, P, D] x2 -> [B, P]."""
    return F.cosine_similarity(F.normalize(frames, p=2, dim=-1), F.normalize(previous, p=2, dim=-1), dim=-1)


def _top_per_row(scores: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """bool [B, P]: the ``counts[b]`` highest scores of every row."""
    order = torch.argsort(scores, dim=1, descending=True)
    ranks_kept = torch.arange(scores.shape[1], device=scores.device)[None, :] < counts[:, None]
    return torch.zeros_like(ranks_kept).scatter_(1, order, ranks_kept)


def istc_keep_mask(
    video: torch.Tensor, run_sizes: list[int], ratios: list[float], tokens_per_frame: int, k: int = 5
) -> torch.Tensor:
    """Step F over all windows at once.  video [N_v, D] in sequence order -> bool keep [N_v]."""
    n_v = video.shape[0]
    p = tokens_per_frame
    keep = torch.zeros(n_v, dtype=torch.bool, device=video.device)
    starts, counts, odd = [], [], []  # one entry per frame that is pruned
    offset = 0
    for size, ratio in zip(run_sizes, ratios):
        frames = size // p if p > 0 else 0
        n_keep = frame_keep_count(p, ratio) if frames else p
        if frames == 0 or n_keep >= p:
            keep[offset : offset + (size if frames == 0 else frames * p)] = True
        else:
            for t in range(frames):
                starts.append(offset + t * p)
                counts.append(n_keep)
                odd.append(t % 2 == 1)
        offset += size  # tokens beyond frames * p stay dropped (upstream)
    if not starts:
        return keep
    starts_t = torch.tensor(starts, device=video.device)
    counts_t = torch.tensor(counts, device=video.device)
    odd_t = torch.tensor(odd, device=video.device)
    token_index = starts_t[:, None] + torch.arange(p, device=video.device)[None, :]  # [B, P]
    for group in (~odd_t, odd_t):
        rows = torch.nonzero(group).flatten()
        for i in range(0, rows.numel(), _FRAMES_PER_BLOCK):
            block = rows[i : i + _FRAMES_PER_BLOCK]
            idx = token_index[block]
            frames = video[idx]  # [b, P, D]
            if group is odd_t:
                scores = -temporal_similarity(frames, video[idx - p])  # lowest similarity first
            else:
                scores = dpc_knn_scores(frames, k)
            kept = _top_per_row(scores, counts_t[block])
            keep[idx[kept]] = True
    return keep


# =============================================================================================
# Settings and budget
# =============================================================================================

DEFAULT_PARAMS: dict[str, Any] = {
    "rho_video": "auto",
    "rho_audio": "auto",
    "contextual_ratio": 0.05,
    "g": 3,
    "dpc_knn_k": 5,
    "clamp": False,
    "compute_dtype": "model",
    "missing_modality": "full_tokens",
}
COMPUTE_DTYPES = ("model", "float32")


@dataclass
class OmniZipSettings:
    rho_video: float
    rho_audio: float
    contextual_ratio: float
    g: int
    dpc_knn_k: int
    clamp: bool
    compute_dtype: str
    missing_modality: str
    budget: dict  # requested / reached retention pair and where the knobs came from


def _number(key: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= float(value) <= high:
        raise MethodConfigError(f"method.{key}={value!r} must be a number in [{low}, {high}]")
    return float(value)


def _integer(key: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise MethodConfigError(f"method.{key}={value!r} must be an integer >= {low}")
    return value


def resolve_settings(params: dict[str, Any], video_ratio: float, audio_ratio: float) -> OmniZipSettings:
    p = with_defaults("omnizip", params, DEFAULT_PARAMS)
    if not isinstance(p["clamp"], bool):
        raise MethodConfigError(f"method.clamp={p['clamp']!r} must be true or false")
    if p["compute_dtype"] not in COMPUTE_DTYPES:
        raise MethodConfigError(f"method.compute_dtype={p['compute_dtype']!r} must be one of {list(COMPUTE_DTYPES)}")
    if p["missing_modality"] not in MISSING_MODALITY:
        raise MethodConfigError(f"method.missing_modality={p['missing_modality']!r} must be one of {list(MISSING_MODALITY)}")
    contextual_ratio = _number("contextual_ratio", p["contextual_ratio"], 0.0, 1.0)
    g = _integer("g", p["g"], 0)
    k = _integer("dpc_knn_k", p["dpc_knn_k"], 1)
    anchor_share = contextual_ratio if g > 0 else 0.0

    reached_video, reached_audio = float(video_ratio), float(audio_ratio)
    if p["rho_video"] == "auto":
        low, high = REACHABLE_VIDEO
        if not low - _RANGE_EPS <= reached_video <= high + _RANGE_EPS:
            if not p["clamp"]:
                raise MethodConfigError(
                    f"schedule.video={video_ratio:g} is outside OmniZip's reachable video retention "
                    f"[{low:.2f}, {high:.2f}] (per-window video pruning is clamped to "
                    f"[{MIN_WINDOW_RATIO}, {MAX_WINDOW_RATIO}]); choose a schedule inside it, set method.rho_video "
                    "directly, or set method.clamp=true to run at the nearest reachable budget"
                )
            reached_video = min(max(reached_video, low), high)
        rho_video = 1.0 - reached_video
    else:
        rho_video = _number("rho_video", p["rho_video"], 0.0, 1.0)
        reached_video = None
    if p["rho_audio"] == "auto":
        if reached_audio < anchor_share - _RANGE_EPS:  # the anchors alone keep c of the audio
            if not p["clamp"]:
                raise MethodConfigError(
                    f"schedule.audio={audio_ratio:g} is below OmniZip's reachable audio retention "
                    f"[{anchor_share:g}, 1] (its anchors keep contextual_ratio={contextual_ratio:g} of the audio); "
                    "lower method.contextual_ratio, set method.rho_audio directly, or set method.clamp=true"
                )
            reached_audio = anchor_share
        rho_audio = min(1.0, 1.0 - reached_audio + anchor_share)
    else:
        rho_audio = _number("rho_audio", p["rho_audio"], 0.0, 1.0)
        reached_audio = None
    budget = {
        "requested": {"video": float(video_ratio), "audio": float(audio_ratio)},
        # the retention targets the knobs aim at (null: knob set directly, the schedule is not used)
        "reached": {"video": reached_video, "audio": reached_audio},
        "clamped": (reached_video is not None and reached_video != float(video_ratio))
        or (reached_audio is not None and reached_audio != float(audio_ratio)),
        "source": {"rho_video": "schedule" if p["rho_video"] == "auto" else "knob",
                   "rho_audio": "schedule" if p["rho_audio"] == "auto" else "knob"},
    }
    return OmniZipSettings(rho_video=rho_video, rho_audio=rho_audio, contextual_ratio=contextual_ratio, g=g,
                           dpc_knn_k=k, clamp=p["clamp"], compute_dtype=p["compute_dtype"], missing_modality=p["missing_modality"],
                           budget=budget)


# =============================================================================================
# Plan-mode layout (what the processor lays out for a described input)
# =============================================================================================


def plan_layout(inp: PlanInput) -> tuple[list[int], list[int]]:
    """(video run sizes, audio run sizes) of the described input, as the processors interleave it.

    Qwen2.5-Omni (25 audio tokens/s): 2-s chunks of 50 temporal position units; grid t sits at
    ``t * 25`` (one second per grid at fps 2), audio token i at ``i``; the sequence is chunk by
    chunk [video][audio], so trailing chunks of one modality join one run.  Qwen3-Omni (13/s):
    grids sit at ``t * 2 s * 13`` (the processor's two seconds per grid) and are merged with the
    audio by position, a grid first on ties.
    """
    p, grids, n_a = inp.video_tokens_per_grid, inp.num_grids, inp.audio_tokens
    pieces: list[tuple[int, int]] = []  # (modality, count) in sequence order
    if inp.audio_tokens_per_second >= 20:  # Qwen2.5-Omni
        chunk = 50
        video_chunks = [0] * (math.ceil(grids * 25 / chunk) if grids else 0)
        for t in range(grids):
            video_chunks[t * 25 // chunk] += p
        audio_chunks = [min(chunk, n_a - j * chunk) for j in range(math.ceil(n_a / chunk))]
        for j in range(max(len(video_chunks), len(audio_chunks))):
            if j < len(video_chunks):
                pieces.append((VIDEO, video_chunks[j]))
            if j < len(audio_chunks):
                pieces.append((AUDIO, audio_chunks[j]))
    else:  # Qwen3-Omni
        step = 2.0 * inp.audio_tokens_per_second
        a = 0
        for t in range(grids):
            position = t * step
            upto = min(n_a, max(a, math.ceil(position)))  # audio tokens strictly before this grid
            if upto > a:
                pieces.append((AUDIO, upto - a))
                a = upto
            pieces.append((VIDEO, p))
        if a < n_a:
            pieces.append((AUDIO, n_a - a))
    runs: dict[int, list[int]] = {VIDEO: [], AUDIO: []}
    last = None
    for modality, count in pieces:
        if count == 0:
            continue
        if modality == last:
            runs[modality][-1] += count
        else:
            runs[modality].append(count)
        last = modality
    return runs[VIDEO], runs[AUDIO]


# =============================================================================================
# The selector
# =============================================================================================


class OmniZip(BaseSelector):
    """OmniZip as one ``before_llm`` keep-mask with merged audio anchors."""

    name = "omnizip"
    needs = frozenset({AUDIO_ATTN})

    def __init__(self, settings: OmniZipSettings):
        self.settings = settings
        self.stats_request = StatsRequest(audio_scope="clip")

    def _dtype(self, x: torch.Tensor) -> torch.dtype:
        return torch.float32 if self.settings.compute_dtype == "float32" else x.dtype

    def before_llm(self, ctx: SelectionContext) -> Selection | None:
        s = self.settings
        video_pos = torch.nonzero(ctx.modality == VIDEO).flatten()
        audio_pos = torch.nonzero(ctx.modality == AUDIO).flatten()
        has_audio, has_video = audio_pos.numel() > 0, video_pos.numel() > 0
        if not (has_audio and has_video):
            if s.missing_modality == "full_tokens" or not (has_audio or has_video):
                ctx.notes[NOTE_KEY] = NOTE_NO_AUDIO if not has_audio else NOTE_NO_VIDEO
                return None
            ctx.notes[NOTE_KEY] = NOTE_VIDEO_ALONE if has_video else NOTE_AUDIO_ALONE
        if ctx.embeds is None:
            raise RuntimeError("OmniZip needs the LLM input embeddings (ctx.embeds) before the LLM")
        dtype = self._dtype(ctx.embeds)
        audio = ctx.embeds[audio_pos].to(dtype)
        video = ctx.embeds[video_pos].to(dtype)
        keep = torch.ones(ctx.length, dtype=torch.bool, device=ctx.modality.device)
        replace_index = replace_embeds = None

        audio_keep = torch.zeros(0, dtype=torch.bool, device=audio.device)
        if has_audio:
            scores = ctx.stats.audio_attn
            if scores is None or scores.numel() != audio_pos.numel():
                got = "none" if scores is None else scores.numel()
                raise ValueError(f"OmniZip: audio attention scores ({got}) do not match the {audio_pos.numel()} audio "
                                 "tokens of the prompt (clip-scope audio statistics from the last audio layer)")
            chosen = select_audio(scores.reshape(-1).to(audio.device), s.rho_audio, s.contextual_ratio, s.g)
            anchor_local, anchor_rows = merge_anchors(audio, video, chosen.anchors, chosen.pool, s.g)
            audio_keep = chosen.keep
            keep[audio_pos] = audio_keep.to(keep.device)
            if anchor_local.numel():
                replace_index, replace_embeds = audio_pos[anchor_local.to(audio_pos.device)], anchor_rows

        if has_video:
            video_runs = token_runs(video_pos)
            audio_runs = token_runs(audio_pos)
            num_guided = min(len(video_runs), len(audio_runs))
            run_kept = torch.split(audio_keep, audio_runs)
            # float32 mean of each run's kept flags, as upstream
            retention = [float(run_kept[i].float().mean()) for i in range(num_guided)]
            grid = ctx.video_grid_thw
            p = ctx.video_tokens_per_grid
            num_video = int(grid[0, 0]) * p if grid is not None and len(grid) else int(video_pos.numel())
            ratios = window_video_ratios(retention, video_runs, s.rho_video, num_video)
            keep[video_pos] = istc_keep_mask(video, video_runs, ratios, p, s.dpc_knn_k).to(keep.device)
        return Selection(keep=keep, replace_index=replace_index, replace_embeds=replace_embeds, label="omnizip")

    # -- plan mode --------------------------------------------------------------------------
    def plan(self, inp: PlanInput) -> PlanCounts:
        """Exact audio count; video count for the described layout *assuming the kept audio is spread
        evenly over the windows* (S_a(i) = kept / N_a): a real run's per-window audio density, and so
        its video count, depends on where the dominant audio tokens fall.  Layers are therefore
        ``PLAN_APPROX`` (the audio count alone is exact), except when all or no audio is kept: then
        every window's density is 1 or 0 and the video count is exact too (``PLAN_EXACT``).  An input
        without audio or video: full tokens, or with ``missing_modality: compress_present`` the present
        modality alone (exact counts)."""
        s = self.settings
        present = (inp.video_tokens > 0, inp.audio_tokens > 0)
        if not all(present) and (s.missing_modality == "full_tokens" or not any(present)):
            counts = (inp.video_tokens, inp.audio_tokens)
            return PlanCounts(per_layer=[counts] * inp.num_layers, details={"omnizip": {"skipped": True}})
        audio_kept = audio_keep_count(inp.audio_tokens, s.rho_audio, s.contextual_ratio, s.g)
        video_runs, audio_runs = plan_layout(inp)
        num_guided = min(len(video_runs), len(audio_runs))
        retention = [audio_kept / inp.audio_tokens] * num_guided if num_guided else []
        ratios = window_video_ratios(retention, video_runs, s.rho_video, inp.num_grids * inp.video_tokens_per_grid)
        video_kept = video_keep_count(video_runs, ratios, inp.video_tokens_per_grid)
        details = {"omnizip": {"rho_video": s.rho_video, "rho_audio": s.rho_audio, "budget": s.budget,
                               "video_runs": video_runs, "audio_runs": audio_runs, "window_video_ratios": ratios,
                               "video_count_assumes": "kept audio spread evenly over the windows"}}
        how = PLAN_EXACT if num_guided == 0 or audio_kept in (0, inp.audio_tokens) else PLAN_APPROX
        details["omnizip"]["exact_audio_count"] = audio_kept
        return PlanCounts(per_layer=[(video_kept, audio_kept)] * inp.num_layers, details=details,
                          exactness=[how] * inp.num_layers)

    def describe(self) -> dict:
        return {"name": self.name, **asdict(self.settings), "reachable_video_retention": list(REACHABLE_VIDEO),
                "audio_stats_scope": "clip"}


@register("omnizip")
def build(params: dict, video_ratio: float, audio_ratio: float, model: ModelInfo) -> OmniZip:
    return OmniZip(resolve_settings(dict(params), video_ratio, audio_ratio))
