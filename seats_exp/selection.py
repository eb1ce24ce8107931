"""The selector contract: methods decide which tokens to keep, the engine cuts.

A *selector* is a small object with up to three hooks and a declaration of the encoder
statistics it needs.  It never touches KV caches, masks, positions or rotary tables: it returns a
``Selection`` (a keep-mask over the *current* sequence, optionally with replacement embeddings) and
the engine (``seats_exp.engine``) applies it everywhere.

Hooks (all optional; a missing hook or ``None`` means "keep everything"):

* ``before_llm(ctx)`` -- after the encoders, on the LLM input embeddings (``ctx.embeds``).
* ``after_layer(layer, hidden, ctx)`` -- during prefill, after 1-based decoder layer ``layer``
  has run (i.e. after 0-based module ``layer - 1``); ``hidden`` is that layer's output.
  Only called for the layers listed by ``hook_layers(num_layers)``.
* ``on_decode(step, ctx)`` -- during decoding; may return a ``KVSelection`` (destructive: the cut
  entries leave the cache).
* ``decode_view(step, attention, ctx)`` -- during decoding, for selectors whose
  ``decode_view_module(num_layers)`` names a 0-based decoder module ``L >= 1``: ``attention`` is the
  head-mean softmax attention of the new token in module ``L - 1`` over that layer's cache; the hook
  may return a ``KVView`` (non-destructive: modules ``L..`` attend only to the kept entries for
  this step, the cache stays whole).  ``ctx.scratch`` is one dict per sample here (kept across the
  decoding steps of one prompt, fresh at every prefill).

Modality codes used throughout: ``TEXT`` (any token that is not an audio/video placeholder,
chat-template and special tokens included), ``VIDEO``, ``AUDIO``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, runtime_checkable

import torch

TEXT, VIDEO, AUDIO = 0, 1, 2
MODALITY_NAMES = {TEXT: "text", VIDEO: "video", AUDIO: "audio"}

# Encoder statistics a selector may declare in ``needs``.
VIDEO_ATTN = "video_attn"  # per video LLM token: attention received in the last ViT block
AUDIO_ATTN = "audio_attn"  # per audio LLM token: attention received in the last audio layer
VIDEO_KEYS = "video_keys"  # per video LLM token: head-mean pooled key vector
AUDIO_KEYS = "audio_keys"  # per audio LLM token: head-mean pooled key vector
ALL_STATS = frozenset({VIDEO_ATTN, AUDIO_ATTN, VIDEO_KEYS, AUDIO_KEYS})


@dataclass
class StatsRequest:
    """How encoder statistics are windowed (seats-reference section 6)."""

    video_window_grids: int = 2  # temporal grids per softmax window (SEATS 2, VisionZip 1)
    audio_window_seconds: float = 2.0  # seconds per audio window (pre-pooling units on Qwen2.5)
    audio_scope: str = "window"  # "window" (faithful) or "clip" (one softmax over the whole clip)
    dtype: str = "model"  # "model" (faithful, e.g. bf16) or "float32"


@dataclass
class EncoderStats:
    """Per-LLM-token encoder statistics for the current sample, in LLM placeholder order.

    A modality absent from the input (or not requested) is ``None``: never stale, never asserted.
    """

    video_attn: torch.Tensor | None = None  # [V]
    audio_attn: torch.Tensor | None = None  # [A]
    video_keys: torch.Tensor | None = None  # [V, d]
    audio_keys: torch.Tensor | None = None  # [A, d]


@dataclass
class Selection:
    """A keep-mask over the current sequence (``True`` = keep).

    ``replace_index``/``replace_embeds`` optionally overwrite the embeddings (or hidden states) of
    some *kept* tokens before the cut -- used by merging methods.  Indices refer to the current
    (pre-cut) sequence.
    """

    keep: torch.Tensor  # bool [S_cur]
    replace_index: torch.Tensor | None = None  # long [R]
    replace_embeds: torch.Tensor | None = None  # [R, D]
    label: str = ""  # recorded in the cost meter's drop events (e.g. "stage1", "stage2.1")


@dataclass
class KVSelection:
    """Decode-time cache pruning: keep-mask over each layer's cached prompt tokens."""

    keep: torch.Tensor  # bool [S_cache]
    layers: list[int] | None = None  # 0-based cache layers; None = all


@dataclass
class KVView:
    """Decode-time view for one step: which cache entries decoder modules ``L..`` may attend to.

    ``keep`` covers the entries of module ``L - 1``'s cache as ``attention`` saw them (prompt tokens
    as currently cached, every generated token, the new token last); the new token is always
    visible.  Nothing is removed from the cache.
    """

    keep: torch.Tensor  # bool [T]


@dataclass
class SelectionContext:
    """Everything a selector may read about the current sequence.  Built by the engine per call.

    All per-position tensors describe the *current* (possibly already pruned) sequence of the
    single batch element (batch size 1 is enforced at validation).
    """

    modality: torch.Tensor  # long [S_cur]: TEXT / VIDEO / AUDIO
    original_index: torch.Tensor  # long [S_cur]: index of each token in the unpruned prompt
    position_ids: torch.Tensor  # long [3, S_cur]: original M-RoPE positions (never renumbered)
    token_time: torch.Tensor  # float [S_cur]: start time in seconds of each media token (NaN for text)
    video_grid_thw: torch.Tensor | None  # long [n_videos, 3] in ViT patches (None without video)
    video_tokens_per_grid: int  # LLM tokens per temporal grid of the first video (0 without video)
    seconds_per_grid: float  # seconds the processor assigns to one temporal grid
    audio_tokens_per_second: float  # the model's real audio token rate (25 Qwen2.5, 13 Qwen3)
    num_layers: int  # decoder depth of the loaded model
    family: str  # "qwen2_5_omni" | "qwen3_omni"
    stats: EncoderStats = field(default_factory=EncoderStats)
    embeds: torch.Tensor | None = None  # [S_cur, D] LLM input embeddings (before_llm only)
    generator: torch.Generator | None = None  # seeded per sample by the engine
    # score_last_text(module_index, hidden, score_dtype=None) -> [S_cur]: every current token scored
    # by the head-mean softmax attention of the last text token, using decoder module
    # ``module_index`` (0-based) applied to ``hidden`` [S_cur, D] with the current rotary tables
    # (seats-reference section 9.1); scores in the model dtype unless ``score_dtype`` is given.
    score_last_text: Callable[..., torch.Tensor] | None = None
    scratch: dict = field(default_factory=dict)  # per-call scratch space for a selector
    # Per-sample notes, key -> short text (e.g. {"omnizip": "skipped: no audio tokens (full tokens)"}):
    # the engine's PrefillRecord.notes; copied into the sample record (samples.jsonl ``notes``) and
    # counted per key and text in result.json (``sample_notes``).
    notes: dict = field(default_factory=dict)

    # -- conveniences -------------------------------------------------------------------------
    @property
    def video_mask(self) -> torch.Tensor:
        return self.modality == VIDEO

    @property
    def audio_mask(self) -> torch.Tensor:
        return self.modality == AUDIO

    @property
    def text_mask(self) -> torch.Tensor:
        return self.modality == TEXT

    @property
    def length(self) -> int:
        return int(self.modality.shape[0])


@dataclass
class PlanInput:
    """A described input for plan mode (no weights): token counts and layout only."""

    video_tokens: int  # V
    audio_tokens: int  # A
    text_tokens: int  # everything else
    video_tokens_per_grid: int
    num_grids: int
    audio_tokens_per_second: float
    num_layers: int


# How far a planned layer count can be trusted (``PlanCounts.exactness``).
PLAN_EXACT = "exact"  # video and audio counts are what a real run keeps on an input of this layout
PLAN_TOTAL = "total"  # only video + audio is exact; the split between them depends on scores
PLAN_APPROX = "approximate"  # neither is exact (e.g. budgets taken from a score-dependent split)
PLAN_EXACTNESS = (PLAN_EXACT, PLAN_TOTAL, PLAN_APPROX)


@dataclass
class PlanCounts:
    """What a selector will do to a ``PlanInput``: (video, audio) tokens entering every layer.

    ``per_layer[i]`` = (video, audio) entering 1-based layer i+1; text is never pruned.
    ``exactness[i]`` says what of layer i+1 a real run reproduces exactly (``PLAN_EXACT``,
    ``PLAN_TOTAL`` or ``PLAN_APPROX``); ``None`` means every layer is exact.
    ``details`` holds method-specific extras (e.g. SEATS' ``schedule`` with ``video_keep``
    and ``audio_keep`` lists), copied into plan mode's JSON.
    """

    per_layer: list[tuple[int, int]]
    details: dict = field(default_factory=dict)
    exactness: list[str] | None = None

    def layer_exactness(self) -> list[str]:
        if self.exactness is None:
            return [PLAN_EXACT] * len(self.per_layer)
        if len(self.exactness) != len(self.per_layer) or set(self.exactness) - set(PLAN_EXACTNESS):
            raise ValueError(f"PlanCounts.exactness must give one of {PLAN_EXACTNESS} per layer")
        return list(self.exactness)


@runtime_checkable
class Selector(Protocol):
    """What the engine calls.  Subclass ``BaseSelector`` rather than implementing this directly."""

    name: str
    needs: frozenset[str]
    stats_request: StatsRequest

    def hook_layers(self, num_layers: int) -> set[int]: ...

    def before_llm(self, ctx: SelectionContext) -> Selection | None: ...

    def after_layer(self, layer: int, hidden: torch.Tensor, ctx: SelectionContext) -> Selection | None: ...

    def on_decode(self, step: int, ctx: SelectionContext) -> KVSelection | None: ...


class BaseSelector:
    """Keep-everything defaults for every hook; methods override what they use."""

    name = "base"
    needs: frozenset[str] = frozenset()
    stats_request: StatsRequest = StatsRequest()

    def hook_layers(self, num_layers: int) -> set[int]:
        """1-based layers after which ``after_layer`` is called (empty: no inner-LLM hook)."""
        return set()

    def before_llm(self, ctx: SelectionContext) -> Selection | None:
        return None

    def after_layer(self, layer: int, hidden: torch.Tensor, ctx: SelectionContext) -> Selection | None:
        return None

    def on_decode(self, step: int, ctx: SelectionContext) -> KVSelection | None:
        return None

    def decode_view_module(self, num_layers: int) -> int | None:
        """0-based decoder module from which ``decode_view`` restricts attention (None: no view)."""
        return None

    def decode_view(self, step: int, attention: torch.Tensor, ctx: SelectionContext) -> KVView | None:
        return None

    def plan(self, inp: PlanInput) -> PlanCounts:
        """Token counts per layer for a described input.  Default: nothing is pruned."""
        return PlanCounts(per_layer=[(inp.video_tokens, inp.audio_tokens)] * inp.num_layers)

    def describe(self) -> dict:
        """Resolved settings, recorded in result.json."""
        return {"name": self.name}
