"""Encoder statistics ("attention received") through hooks, only when a selector needs them.

seats-reference section 6.  A forward pre-hook on the attention module of the *last* ViT block and
of the *last* audio-encoder layer recomputes q and k with that module's own projections (and, for
video, its own rotary function) from the inputs the module is about to use, then scores every unit
by the total softmax attention it receives inside its window, averaged over heads:

    P_h = softmax(q_h k_h^T / sqrt(d)) per window;  score(j) = sum_i mean_h P_h[i, j].

Video units are ViT patches; four patches of a 2x2 merge unit are averaged into one LLM token and
(Qwen2.5) the encoder's window reordering is undone, so scores come out in LLM placeholder order.
Audio units are post-conv frames (Qwen2.5: 50/s, pooled in pairs to the 25/s LLM tokens; Qwen3:
encoder output tokens, no pooling).  Everything is cleared at the start of every prefill; a
modality absent from the input simply has no statistics.
"""

from __future__ import annotations

import math

import torch

from seats_exp.models.adapters import OmniAdapter
from seats_exp.selection import AUDIO_ATTN, AUDIO_KEYS, VIDEO_ATTN, VIDEO_KEYS, EncoderStats, StatsRequest

# Units per second of the audio windows: Qwen2.5 pre-pooling frames, 50/s (2-s windows = the
# encoder's own 100-frame chunks); Qwen3 upstream hard-codes 26/s although its encoder emits 13
# tokens/s, so a "2-s" window is 52 tokens = 4 s (seats-reference section 2 item 4, kept faithful).
_AUDIO_UNITS_PER_SECOND = {"qwen2_5_omni": 50.0, "qwen3_omni": 26.0}


# Elements of one batched [W, H, n, n] probability block.  Small blocks stay in cache and bound the
# memory peak; every window is computed alone either way, so the scores do not depend on it
# (a 5.6k-token input on the CPU bench: 0.41 s and +93 MiB at 1 << 20 vs 0.61 s and +359 MiB at
# 1 << 26, bit-identical scores; docs/benchmarks.md).
MAX_BLOCK_ELEMENTS = 1 << 20
# A single window larger than this is split into blocks of query rows (memory bound for clip-wide
# softmaxes; the column sums are then added block by block).
SINGLE_WINDOW_ELEMENTS = 1 << 26


def window_attention_received(q: torch.Tensor, k: torch.Tensor, window: int, max_block: int = MAX_BLOCK_ELEMENTS,
                              single_window: int = SINGLE_WINDOW_ELEMENTS):
    """q, k: [N, H, d].  Returns [N] scores: attention received per unit within consecutive windows.

    Full windows are batched; the shorter tail window is computed on its own.  ``max_block`` bounds
    the number of elements of one batched [W, H, n, n] probability block (at least one window); a
    single window whose block exceeds ``single_window`` elements (OmniZip's clip scope on a long clip)
    is scored in blocks of query rows, whose column sums add up.
    """
    n_units, heads, d = q.shape
    scale = 1.0 / math.sqrt(d)
    out = torch.empty(n_units, dtype=q.dtype, device=q.device)
    full = (n_units // window) * window

    def score(qw: torch.Tensor, kw: torch.Tensor) -> torch.Tensor:  # [W, n, H, d] -> [W, n]
        qh, kh = qw.transpose(1, 2), kw.transpose(1, 2)  # [W, H, n, d]
        n = qh.shape[2]
        if qh.shape[0] * heads * n * n <= single_window:  # the usual case: one block, exact as before
            logits = (qh @ kh.transpose(-1, -2)).float()  # a fresh tensor: scale it in place
            probs = torch.softmax(logits.mul_(scale), dim=-1).to(q.dtype)
            return probs.mean(dim=1).sum(dim=1)  # head mean, then column sum -> [W, n]
        rows = max(1, single_window // (qh.shape[0] * heads * n))  # query rows per block
        total = None
        for i in range(0, n, rows):
            logits = (qh[:, :, i : i + rows] @ kh.transpose(-1, -2)).float()
            probs = torch.softmax(logits.mul_(scale), dim=-1).to(q.dtype)
            part = probs.mean(dim=1).sum(dim=1)
            total = part if total is None else total + part
        return total

    if full:
        qw = q[:full].reshape(-1, window, heads, d)
        kw = k[:full].reshape(-1, window, heads, d)
        per = max(1, max_block // (heads * window * window))
        parts = [score(qw[i : i + per], kw[i : i + per]) for i in range(0, qw.shape[0], per)]
        out[:full] = torch.cat(parts).reshape(-1)
    if full < n_units:
        out[full:] = score(q[full:].unsqueeze(0), k[full:].unsqueeze(0))[0]
    return out


class EncoderStatsCollector:
    """Installs the stats hooks for one selector's ``needs`` and ``stats_request``."""

    def __init__(self, adapter: OmniAdapter, needs: frozenset[str], request: StatsRequest):
        self.adapter = adapter
        self.needs = frozenset(needs)
        self.request = request
        self._handles: list = []
        self._grid_thw: torch.Tensor | None = None
        self._stats = EncoderStats()
        self.clock = None  # set by the engine per prefill: the hooks' own time goes to clock.stat_spans
        self._reverse_cache: dict[tuple, torch.Tensor | None] = {}  # Qwen2.5 ViT window order, per grid

    # -- lifecycle --------------------------------------------------------------------------------
    def attach(self) -> None:
        if self._handles:
            return
        if self.needs & {VIDEO_ATTN, VIDEO_KEYS}:
            visual = self.adapter.vision_encoder
            self._handles.append(visual.register_forward_pre_hook(self._on_visual_start, with_kwargs=True))
            self._handles.append(visual.blocks[-1].attn.register_forward_pre_hook(
                self._timed(self._on_last_vit_attn), with_kwargs=True))
        if self.needs & {AUDIO_ATTN, AUDIO_KEYS}:
            audio = self.adapter.audio_encoder
            self._handles.append(audio.layers[-1].self_attn.register_forward_pre_hook(
                self._timed(self._on_last_audio_attn), with_kwargs=True))

    def _timed(self, hook):
        def timed(module, args, kwargs):
            clock = self.clock
            if clock is None:
                return hook(module, args, kwargs)
            start = clock.now()
            out = hook(module, args, kwargs)
            clock.stat_spans.append((start, clock.now()))
            return out

        return timed

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def reset(self) -> None:
        self._stats = EncoderStats()
        self._grid_thw = None

    def result(self) -> EncoderStats:
        return self._stats

    def _dtype(self, x: torch.Tensor) -> torch.dtype:
        return torch.float32 if self.request.dtype == "float32" else x.dtype

    # -- video ----------------------------------------------------------------------------------------
    def _on_visual_start(self, module, args, kwargs):
        self._grid_thw = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)

    @torch.no_grad()
    def _on_last_vit_attn(self, module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]  # [N, C] patches (window order on Qwen2.5)
        cos, sin = kwargs["position_embeddings"]
        grid = self._grid_thw
        if grid is None or grid.numel() == 0:
            return None
        family = self.adapter.family
        n = hidden.shape[0]
        if family == "qwen3_omni":
            from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import apply_rotary_pos_emb_vision

            q, k, _ = module.qkv(hidden).reshape(n, 3, module.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
        else:
            from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import apply_rotary_pos_emb_vision

            q = module.q(hidden).reshape(n, module.num_heads, -1)
            k = module.k(hidden).reshape(n, module.num_heads, -1)
        q, k = apply_rotary_pos_emb_vision(q, k, cos, sin)
        dtype = self._dtype(hidden)
        q, k = q.to(dtype), k.to(dtype)
        merge = self.adapter.spatial_merge_size ** 2
        grid_key = (tuple(tuple(row) for row in grid.tolist()), str(hidden.device))  # the hook's one host read
        patches_per_grid = grid_key[0][0][1] * grid_key[0][0][2]
        window = max(1, int(self.request.video_window_grids)) * patches_per_grid
        if grid_key not in self._reverse_cache:
            if len(self._reverse_cache) >= 16:
                self._reverse_cache.clear()
            self._reverse_cache[grid_key] = self._window_reverse(grid, hidden.device)
        reverse = self._reverse_cache[grid_key]
        if VIDEO_ATTN in self.needs:
            scores = window_attention_received(q, k, window)  # [N]
            pooled = scores.reshape(-1, merge).mean(dim=1)  # [N / 4] in encoder order
            self._stats.video_attn = pooled if reverse is None else pooled[reverse]
        if VIDEO_KEYS in self.needs:
            keys = k.reshape(-1, merge, k.shape[1], k.shape[2]).mean(dim=1)  # [N/4, H, d]
            keys = keys if reverse is None else keys[reverse]
            self._stats.video_keys = keys.mean(dim=1)
        return None

    def _window_reverse(self, grid: torch.Tensor, device) -> torch.Tensor | None:
        """Qwen2.5's ViT reorders merge units into attention windows; return the inverse order."""
        if self.adapter.family != "qwen2_5_omni":
            return None
        from transformers.vision_utils import get_vision_window_index

        visual = self.adapter.vision_encoder
        window_index, _ = get_vision_window_index(
            grid, spatial_merge_size=visual.spatial_merge_size, window_size=visual.window_size,
            patch_size=visual.patch_size, kwargs={},
        )
        return torch.argsort(window_index.to(device))

    # -- audio ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def _on_last_audio_attn(self, module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]  # [N, C] frames, all chunks concatenated
        n = hidden.shape[0]
        dtype = self._dtype(hidden)
        q = module.q_proj(hidden).reshape(n, module.num_heads, -1).to(dtype)
        k = module.k_proj(hidden).reshape(n, module.num_heads, -1).to(dtype)
        family = self.adapter.family
        if self.request.audio_scope == "clip":
            window = n
        else:
            window = max(1, int(round(self.request.audio_window_seconds * _AUDIO_UNITS_PER_SECOND[family])))
        pool = family == "qwen2_5_omni"
        if AUDIO_ATTN in self.needs:
            scores = window_attention_received(q, k, window)
            if pool:
                scores = scores[: n - (n % 2)].reshape(-1, 2).mean(dim=1)
            self._stats.audio_attn = scores
        if AUDIO_KEYS in self.needs:
            keys = k
            if pool:
                keys = keys[: n - (n % 2)].reshape(-1, 2, keys.shape[1], keys.shape[2]).mean(dim=1)
            self._stats.audio_keys = keys.mean(dim=1)
        return None
