"""The token-selection engine: all tensor surgery in one place.

Selectors decide *which* tokens to keep (``seats_exp.selection``); this module does the cutting,
by hooking transformers' own Thinker modules (no copy of the modeling code):

* a pre-hook on the Thinker records the request (input ids, video grid, seconds per grid) and
  starts a new prefill record;
* a pre-hook on the text model runs ``before_llm`` on the merged input embeddings and slices
  ``inputs_embeds``, the 2-D mask, the 3/4-row position ids and (Qwen3) the visual position mask
  and DeepStack rows -- original M-RoPE positions are kept, never renumbered;
* a pre-hook on every decoder layer slices the per-layer arguments the text model computed once
  for the full length (rotary cos/sin, a 4-D mask, text position ids) to the current tokens, and
  during decoding drops the mask (batch 1: the single query may see every cached key, whatever
  each layer's cache length);
* a post-hook on the layers a selector asked for runs ``after_layer`` and cuts the layer output
  and the KV cache (scope ``all_executed``: every executed layer's cache, faithful;
  ``after_drop_only``: executed layers keep their keys).

Decoding (one new token per step): ``on_decode`` may cut cached entries for good; a selector with a
decode-time *view* (``decode_view_module``) gets the new token's attention in module ``L - 1`` and
may restrict which cached entries modules ``L..`` attend to for this step -- built as an additive
4-D key mask (sdpa, eager), the cache itself stays whole.  A non-prefill call with several new
tokens after a cut gets a causal mask built for every layer's own cache length.

Decoding continues at the unpruned positions because ``generate`` keeps counting positions from
the unpruned prompt and ``rope_deltas`` is computed before any cut.  Detaching removes every hook
and leaves the model exactly as it was.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from seats_exp.models.adapters import OmniAdapter
from seats_exp.selection import (
    AUDIO,
    TEXT,
    VIDEO,
    BaseSelector,
    EncoderStats,
    KVView,
    Selection,
    SelectionContext,
)

KV_SCOPES = ("all_executed", "after_drop_only")


class _Clock:
    """Time marks: CUDA events on a GPU (no sync until read), ``cpu_timer`` on CPU (perf_counter by
    default; the bench passes ``time.thread_time``)."""

    def __init__(self, device: torch.device, cpu_timer=None):
        self.cuda = device.type == "cuda"
        self.cpu_timer = cpu_timer or time.perf_counter
        self.marks: dict[str, object] = {}
        self.spans: list[tuple[object, object]] = []  # selection-overhead intervals
        self.span_where: list[str] = []  # "before_llm" | "after_layer", one per span
        self.stat_spans: list[tuple[object, object]] = []  # encoder-statistics intervals (inside the encoders)
        self.stats_attached = False

    def now(self):
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            return ev
        return self.cpu_timer()

    def mark(self, name: str) -> None:
        self.marks[name] = self.now()

    def seconds(self, a, b) -> float:
        if a is None or b is None:
            return 0.0
        if self.cuda:
            b.synchronize()
            return a.elapsed_time(b) / 1000.0
        return b - a


@dataclass
class PrefillRecord:
    """What one prefill did: lengths entering every layer, drop events, timings."""

    input_length: int = 0  # prompt length before any selection
    llm_input_length: int = 0  # length entering the text model (after before_llm)
    layer_lengths: list[int] = field(default_factory=list)  # length entering each decoder layer
    events: list[tuple[int, int, str]] = field(default_factory=list)  # (layer after which, new length, label)
    kept_counts: list[dict] = field(default_factory=list)  # per layer: {"video": v, "audio": a, "text": t}
    final_length: int = 0
    # seconds: encoders, selection, llm_prefill; plus encoder_stats when a statistics collector is
    # attached (then "encoders" excludes the statistics hooks' own time)
    timings: dict[str, float] = field(default_factory=dict)
    selection_split: dict[str, float] = field(default_factory=dict)  # selection seconds: before_llm, after_layer
    peak_memory_bytes: int | None = None
    notes: dict = field(default_factory=dict)  # key -> short text, written by selectors through ctx.notes


class _CallState:
    """Per-prefill state (never stored on the model's modules)."""

    def __init__(self):
        self.input_ids: torch.Tensor | None = None
        self.video_grid_thw: torch.Tensor | None = None
        self.seconds_per_grid: float = 1.0
        self.seconds_per_grid_tensor: torch.Tensor | None = None  # read with the grid at the LLM start
        self.video_tokens_per_grid: int = 0
        self.modality: torch.Tensor | None = None
        self.original_index: torch.Tensor | None = None
        self.position_ids: torch.Tensor | None = None  # [3, S_cur]
        self.token_time: torch.Tensor | None = None
        self.local_index: torch.Tensor | None = None  # indices into the text-model input
        self.llm_length: int = 0
        self.pos_emb_cache: tuple | None = None  # (source cos object, local_index version, sliced pair)
        self.index_version: int = 0
        self.current_cos_sin: tuple | None = None
        self.decode_step: int = 0
        self.view_step: int = 0  # decoding steps offered to decode_view
        self.sample_scratch: dict = {}  # a view selector's per-sample state (fresh every prefill)
        self.view_input: tuple | None = None  # (hidden, cos/sin) entering module L-1 this step
        self.view_mask: torch.Tensor | None = None  # additive key mask [1, 1, 1, T] for modules L..
        self.deepstack: list | None = None  # Qwen3: visual rows added after modules 0..k-1
        self.visual_local: torch.Tensor | None = None  # visual flags over the text-model input
        self.prefill = False
        self.pruned = False
        self.clock: _Clock | None = None
        self.record = PrefillRecord()
        # per-modality counts of each stretch of layers, on the modality's device: one [3] count
        # per cut, read to the host once per prefill (no host sync in the layer pre-hook)
        self.segment_counts: list[torch.Tensor] = []
        self.layer_segment: list[int] = []  # index into segment_counts for every executed layer
        self.segment_length: int = -1


class Engine:
    """Attach a selector to a Thinker.  Use as a context manager or call attach/detach."""

    def __init__(
        self,
        thinker: nn.Module,
        adapter: OmniAdapter,
        selector: BaseSelector,
        *,
        kv_scope: str = "all_executed",
        stats=None,
        cpu_timer=None,
    ):
        if kv_scope not in KV_SCOPES:
            raise ValueError(f"engine.kv_scope={kv_scope!r}; allowed: {', '.join(KV_SCOPES)}")
        self.thinker = thinker
        self.adapter = adapter
        self.selector = selector
        self.kv_scope = kv_scope
        self.stats = stats  # seats_exp.stats.EncoderStatsCollector or None
        self.cpu_timer = cpu_timer  # CPU clock of the timings (None: time.perf_counter)
        self._handles: list = []
        self._hook_layers: set[int] = set()
        self._has_decode_hook = False
        self._view_module: int | None = None  # 0-based module from which decode views apply
        self._state = _CallState()
        self._orig_deepstack = None
        self._pending_clock: _Clock | None = None
        self._pending_grid: torch.Tensor | None = None
        self.records: list[PrefillRecord] = []
        self._unread: list[tuple] = []  # records whose timings and counts are still on the device
        self.sample_seed: int | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def attach(self) -> "Engine":
        if self._handles:
            return self
        owner = getattr(self.thinker, "_seats_engine", None)
        if owner is not None and owner is not self:
            raise RuntimeError("another token-selection engine is already attached to this model; detach it first "
                               "(two engines would cut the same tensors twice)")
        self._check_keywords()
        lm = self.adapter.language_model
        self._hook_layers = {int(x) for x in self.selector.hook_layers(self.adapter.num_layers)}
        self._has_decode_hook = type(self.selector).on_decode is not BaseSelector.on_decode
        for layer in self._hook_layers:
            if not 1 <= layer <= self.adapter.num_layers:
                raise ValueError(f"selector {self.selector.name} asks for a hook after layer {layer}, "
                                 f"outside 1..{self.adapter.num_layers}")
        self._view_module = self._check_decode_hooks()
        self._handles.append(self.thinker.register_forward_pre_hook(self._on_thinker_start, with_kwargs=True))
        # always_call: also runs when the forward raises, so a failed prefill leaves nothing behind
        self._handles.append(self.thinker.register_forward_hook(self._on_thinker_end, with_kwargs=True, always_call=True))
        self._handles.append(lm.register_forward_pre_hook(self._on_llm_start, with_kwargs=True))
        # generate() may run the encoders before the prefill forward: start the clock there.
        for encoder in (self.adapter.vision_encoder, self.adapter.audio_encoder):
            self._handles.append(encoder.register_forward_pre_hook(self._on_encoder_start, with_kwargs=True))
            self._handles.append(encoder.register_forward_hook(self._on_encoder_end, with_kwargs=True, always_call=True))
        for i, layer in enumerate(self.adapter.layers):
            self._handles.append(layer.register_forward_pre_hook(self._make_layer_pre(i), with_kwargs=True))
            self._handles.append(layer.register_forward_hook(self._make_layer_post(i), with_kwargs=True))
        if hasattr(lm, "_deepstack_process"):
            self._orig_deepstack = lm._deepstack_process
            lm._deepstack_process = self._deepstack_process
        if self.stats is not None:
            self.stats.attach()
        self.thinker._seats_engine = self
        return self

    def _check_keywords(self) -> None:
        """The hooks find the KV cache under the keyword ``past_key_values``; a model whose forward
        names it otherwise would make every decode step look like a new prefill (silently wrong)."""
        import inspect

        for what, fn in (("the Thinker", self.thinker.forward), ("decoder layer 0", self.adapter.layers[0].forward)):
            params = inspect.signature(fn).parameters
            if "past_key_values" not in params:
                raise RuntimeError(f"{what}'s forward has no 'past_key_values' argument (it takes: "
                                   f"{', '.join(params)}); this transformers version is not supported by the "
                                   "token-selection engine")

    def _clear_pending(self) -> None:
        """Forget what the encoders of a generate() call left for its prefill (a failed or rejected call)."""
        self._pending_clock, self._pending_grid = None, None

    def detach(self) -> None:
        if getattr(self.thinker, "_seats_engine", None) is self:
            del self.thinker._seats_engine
        self._clear_pending()
        for h in self._handles:
            h.remove()
        self._handles.clear()
        lm = self.adapter.language_model
        if self._orig_deepstack is not None:
            del lm._deepstack_process  # the instance attribute; the class method shows through again
            self._orig_deepstack = None
        if self.stats is not None:
            self.stats.detach()

    def __enter__(self):
        return self.attach()

    def __exit__(self, *exc):
        self.detach()

    # -- thinker -------------------------------------------------------------------------------
    def _on_encoder_start(self, module, args, kwargs):
        if module is self.adapter.vision_encoder:
            # the prefill forward may receive precomputed encoder outputs without video_grid_thw
            grid = kwargs.get("grid_thw", args[1] if len(args) > 1 else None)
            if grid is not None:
                if self._state.prefill:  # encoders running inside the prefill forward
                    if self._state.video_grid_thw is None:
                        self._state.video_grid_thw = grid
                else:  # encoders run by generate() before the prefill forward
                    self._pending_grid = grid
        if not self._state.prefill and self._pending_clock is None:
            device = next(module.parameters()).device
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            self._pending_clock = _Clock(device, self.cpu_timer)
            self._pending_clock.mark("start")
            if self.stats is not None:
                self.stats.clock = self._pending_clock
                self._pending_clock.stats_attached = True

    def _on_encoder_end(self, module, args, kwargs, output):
        if output is None and not self._state.prefill:  # an encoder raised inside generate() (corrupt pixels)
            self._clear_pending()
        return None

    def _on_thinker_start(self, module, args, kwargs):
        cache = kwargs.get("past_key_values")
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        is_prefill = cache is None or cache.get_seq_length() == 0
        st = self._state
        if not is_prefill:
            st.prefill = False
            if self._has_decode_hook and st.modality is not None:
                self._decode_step(cache)
            if self._view_module is not None and st.modality is not None:
                st.view_step += 1
                st.view_input, st.view_mask = None, None
            return None
        pending_grid, pending_clock = self._pending_grid, self._pending_clock
        self._clear_pending()  # consumed by this prefill, or dropped with it if it is rejected below
        self._state = _CallState()  # nothing of an earlier call survives a rejected one
        if input_ids is None:
            raise ValueError("the token-selection engine needs input_ids at prefill (inputs_embeds alone "
                             "do not tell which tokens are video or audio)")
        if input_ids.shape[0] != 1:
            raise ValueError(f"batch size {input_ids.shape[0]} is not supported: token selection runs with "
                             "batch size 1 and num_beams 1 (set the evaluation batch size to 1)")
        st = self._state
        st.prefill = True
        st.input_ids = input_ids[0]
        st.video_grid_thw = kwargs.get("video_grid_thw")
        if st.video_grid_thw is None:
            st.video_grid_thw = pending_grid
        spg = kwargs.get("video_second_per_grid")
        st.seconds_per_grid_tensor = spg.reshape(-1)[:1] if spg is not None and spg.numel() else None
        st.record.input_length = int(input_ids.shape[1])
        if pending_clock is not None:  # encoders already ran inside generate()
            st.clock = pending_clock
        else:
            st.clock = _Clock(input_ids.device, self.cpu_timer)
            if st.clock.cuda:
                torch.cuda.reset_peak_memory_stats()
            st.clock.mark("start")
        if self.stats is not None:
            self.stats.clock = st.clock
            st.clock.stats_attached = True
        return None

    def _on_thinker_end(self, module, args, kwargs, output):
        st = self._state
        if output is None:  # the forward raised (or was rejected): drop this call's state and statistics
            st.prefill = False
            self._clear_pending()
            if self.stats is not None:
                self.stats.reset()
            return None
        if not st.prefill:
            return None
        st.clock.mark("end")
        rec = st.record
        if st.clock.cuda:
            rec.peak_memory_bytes = int(torch.cuda.max_memory_allocated())
        rec.final_length = int(st.modality.shape[0]) if st.modality is not None else rec.llm_input_length
        # timings and kept counts are read from the device when the records are popped (one sync)
        self._unread.append((rec, st.clock, st.segment_counts, st.layer_segment))
        self.records.append(rec)
        st.prefill = False
        if self.stats is not None:
            self.stats.reset()  # consumed: the next sample starts without statistics
            self.stats.clock = None
        return None

    @staticmethod
    def _read_record(rec: PrefillRecord, clock: _Clock, segment_counts: list, layer_segment: list) -> None:
        """Fill the record's timings and per-layer kept counts (host reads happen here, once)."""
        selection = [clock.seconds(a, b) for a, b in clock.spans]
        stats_time = sum(clock.seconds(a, b) for a, b in clock.stat_spans)
        encoders = clock.seconds(clock.marks.get("start"), clock.marks.get("llm_start"))
        rec.timings = {
            "encoders": encoders - stats_time,
            "selection": sum(selection),
            "llm_prefill": clock.seconds(clock.marks.get("llm_start"), clock.marks.get("end")) - sum(selection),
        }
        if clock.stats_attached:
            rec.timings["encoder_stats"] = stats_time
        rec.selection_split = {where: sum(t for t, w in zip(selection, clock.span_where) if w == where)
                               for where in ("before_llm", "after_layer")}
        if segment_counts:
            counts = torch.stack(segment_counts).tolist()  # [segments, 3]: text, video, audio
            rec.kept_counts = [{"video": counts[k][VIDEO], "audio": counts[k][AUDIO], "text": counts[k][TEXT]}
                               for k in layer_segment]

    def _decode_step(self, cache) -> None:
        """Offer the selector a decode-time cut of the cached tokens (DyCoke-style KV pruning)."""
        st = self._state
        st.decode_step += 1
        cached = cache.get_seq_length()
        generated = cached - st.modality.shape[0]
        if generated < 0:
            raise ValueError("decode-time KV selection needs every cache layer to hold the same tokens "
                             "(engine.kv_scope=all_executed)")
        device = st.modality.device
        ctx = self._context()
        ctx.modality = torch.cat([st.modality, torch.full((generated,), TEXT, device=device, dtype=st.modality.dtype)])
        ctx.original_index = torch.cat([st.original_index, st.record.input_length + torch.arange(generated, device=device)])
        kv = self.selector.on_decode(st.decode_step, ctx)
        if kv is None or bool(kv.keep.all()):
            return
        keep = kv.keep.to(device)
        idx = torch.nonzero(keep).flatten()
        layers = range(len(cache.layers)) if kv.layers is None else kv.layers
        for j in layers:
            layer = cache.layers[j]
            layer.keys = layer.keys.index_select(-2, idx)
            layer.values = layer.values.index_select(-2, idx)
        prompt_keep = keep[: st.modality.shape[0]]
        if kv.layers is None:
            st.modality = st.modality[prompt_keep]
            st.original_index = st.original_index[prompt_keep]
            st.position_ids = st.position_ids[:, prompt_keep]
            st.token_time = st.token_time[prompt_keep]
        st.pruned = True

    # -- decoding: masks and views -------------------------------------------------------------------
    def _check_decode_hooks(self) -> int | None:
        """Refuse decode-time combinations the engine cannot serve; return the view module (or None)."""
        name = self.selector.name
        view = self.selector.decode_view_module(self.adapter.num_layers)
        if view is not None and not 1 <= int(view) < self.adapter.num_layers:
            raise ValueError(f"selector {name} asks for a decode-time view from decoder module {view}; it must lie "
                             f"in 1..{self.adapter.num_layers - 1} (its signal is module {view} - 1's attention)")
        if self.kv_scope == "after_drop_only" and self._hook_layers and self._has_decode_hook:
            raise ValueError(f"engine.kv_scope=after_drop_only cannot serve selector {name}: it prunes inside the LLM "
                             "and also cuts KV entries while decoding (on_decode), which needs every cache layer to "
                             "hold the same tokens; use engine.kv_scope=all_executed")
        if view is not None:
            impl = getattr(self.adapter.language_model.config, "_attn_implementation", None)
            if impl not in ("sdpa", "eager"):
                raise ValueError(f"selector {name} restricts attention while decoding with a 4-D key mask, which "
                                 f"attn_implementation={impl!r} cannot take; use sdpa or eager")
            view = int(view)
        return view

    def _decode_layer_pre(self, i: int, args, kwargs):
        """Decoder-module pre-hook while decoding: the key mask this module needs, if any."""
        st = self._state
        hidden = args[0] if args else kwargs["hidden_states"]
        new_tokens = hidden.shape[1]
        view = self._view_module
        if view is not None and st.modality is not None:
            if new_tokens != 1:
                raise ValueError(f"selector {self.selector.name} restricts attention per decoding step and needs one "
                                 f"new token per step; got {new_tokens} (speculative or prompt-lookup decoding)")
            if i == view - 1:
                st.view_input = (hidden, kwargs.get("position_embeddings"))
            elif i == view:
                st.view_mask = self._decode_view(kwargs.get("past_key_values"), hidden.dtype)
            if i >= view and st.view_mask is not None:
                cached = kwargs["past_key_values"].layers[i].keys.shape[-2]
                if cached + 1 != st.view_mask.shape[-1]:
                    raise ValueError(f"decode-time view: module {i} caches {cached} entries, module {view - 1} "
                                     f"{st.view_mask.shape[-1] - 1}; views need every layer to hold the same tokens")
                kwargs["attention_mask"] = st.view_mask
                return args, kwargs
        if not st.pruned:
            return None  # the text model's own mask fits the uncut cache
        if new_tokens == 1:
            if kwargs.get("attention_mask") is None:
                return None
            kwargs["attention_mask"] = None  # batch 1: the new token sees every cached key
            return args, kwargs
        # several new tokens after a cut: causal over this layer's own cache length
        kwargs["attention_mask"] = self._causal_decode_mask(kwargs["past_key_values"], i, new_tokens, hidden)
        return args, kwargs

    @staticmethod
    def _causal_decode_mask(cache, i: int, new_tokens: int, hidden: torch.Tensor) -> torch.Tensor:
        """Additive mask [1, 1, q, T]: new token r sees every cached entry and new tokens 0..r."""
        total = cache.layers[i].keys.shape[-2] + new_tokens
        cols = torch.arange(total, device=hidden.device)
        rows = torch.arange(new_tokens, device=hidden.device) + (total - new_tokens)
        mask = torch.zeros(new_tokens, total, dtype=hidden.dtype, device=hidden.device)
        mask = mask.masked_fill(cols[None, :] > rows[:, None], torch.finfo(hidden.dtype).min)
        return mask[None, None]

    def _decode_view(self, cache, dtype: torch.dtype) -> torch.Tensor | None:
        """Ask the selector for this step's view; return the additive key mask for modules L.. (or None)."""
        st = self._state
        source = self._view_module - 1
        hidden, cos_sin = st.view_input
        attention = self._decode_token_attention(source, hidden, cos_sin, cache.layers[source].keys)  # [T_src]
        generated = st.view_step  # one entry per decoding step so far, this step's token included
        cached_prompt = attention.shape[0] - generated
        if cached_prompt == st.llm_length and cached_prompt != st.modality.shape[0]:
            # kv_scope=after_drop_only: module L-1 kept every LLM input token; the view covers the
            # tokens the later modules hold (the current ones) and every generated token
            attention = torch.cat([attention[st.local_index], attention[cached_prompt:]])
        elif cached_prompt != st.modality.shape[0]:
            raise ValueError(f"decode-time view: module {source} caches {cached_prompt} prompt entries, the current "
                             f"sequence has {st.modality.shape[0]} tokens")
        total = attention.shape[0]
        device = st.modality.device
        ctx = self._context()
        ctx.modality = torch.cat([st.modality, torch.full((generated,), TEXT, device=device, dtype=st.modality.dtype)])
        ctx.original_index = torch.cat([st.original_index, st.record.input_length + torch.arange(generated, device=device)])
        ctx.scratch = st.sample_scratch
        view: KVView | None = self.selector.decode_view(st.view_step, attention, ctx)
        if view is None:
            return None
        keep = view.keep.to(device=attention.device, dtype=torch.bool)
        if keep.shape != (total,):
            raise ValueError(f"selector {self.selector.name} returned a decode view over {tuple(keep.shape)} entries; "
                             f"the cache holds {total}")
        keep = keep.clone()
        keep[-1] = True  # the new token always sees itself
        mask = torch.zeros(total, dtype=dtype, device=attention.device).masked_fill(~keep, torch.finfo(dtype).min)
        return mask.view(1, 1, 1, total)

    @torch.no_grad()
    def _decode_token_attention(self, module_index: int, hidden: torch.Tensor, cos_sin, keys: torch.Tensor) -> torch.Tensor:
        """Head-mean attention probabilities [T] (float32) of the new token in module ``module_index``
        over that layer's cache (new token last), as eager attention computes them: logits in the model
        dtype, softmax in float32."""
        layer = self.adapter.layers[module_index]
        q = self.adapter._project_q(layer, layer.input_layernorm(hidden))  # [1, H, 1, d]
        cos, sin = cos_sin
        q, _ = self.adapter._rotary()(q, q, cos, sin)
        k = keys.repeat_interleave(q.shape[1] // keys.shape[1], dim=1)  # [1, H, T, d]
        logits = (q @ k.to(q.dtype).transpose(-1, -2)) * layer.self_attn.scaling  # [1, H, 1, T]
        return torch.softmax(logits.float(), dim=-1).mean(dim=1)[0, 0]

    # -- context -------------------------------------------------------------------------------
    def _context(self, embeds: torch.Tensor | None = None) -> SelectionContext:
        st = self._state
        grid = st.video_grid_thw
        stats = self.stats.result() if self.stats is not None else EncoderStats()
        gen = None
        if self.sample_seed is not None:
            gen = torch.Generator(device=st.modality.device)
            gen.manual_seed(int(self.sample_seed))
        return SelectionContext(
            modality=st.modality,
            original_index=st.original_index,
            position_ids=st.position_ids,
            token_time=st.token_time,
            video_grid_thw=grid,
            video_tokens_per_grid=st.video_tokens_per_grid,
            seconds_per_grid=st.seconds_per_grid,
            audio_tokens_per_second=self.adapter.audio_tokens_per_second,
            num_layers=self.adapter.num_layers,
            family=self.adapter.family,
            stats=stats,
            embeds=embeds,
            generator=gen,
            score_last_text=self._score_last_text,
            notes=st.record.notes,
        )

    def _score_last_text(self, module_index: int, hidden: torch.Tensor, score_dtype=None) -> torch.Tensor:
        st = self._state
        # the last text position (the last token when there is no text), as a device tensor: no host sync
        length = st.modality.shape[0]
        order = torch.arange(length, device=st.modality.device)
        last = torch.where(st.modality == TEXT, order, -1).max()
        last = torch.where(last < 0, length - 1, last)
        return self.adapter.last_text_attention(module_index, hidden, st.current_cos_sin, last, score_dtype)

    def _read_layout(self) -> None:
        """Tokens per temporal grid and seconds per grid on the host: one read per prefill."""
        st = self._state
        grid, spg = st.video_grid_thw, st.seconds_per_grid_tensor
        parts = []
        if grid is not None and grid.numel():
            parts.append(grid[0, 1:3].to(torch.float64))
        if spg is not None:
            parts.append(spg.to(device=parts[0].device if parts else spg.device, dtype=torch.float64))
        values = torch.cat(parts).tolist() if parts else []
        if grid is not None and grid.numel():
            st.video_tokens_per_grid = int(values[0] * values[1]) // self.adapter.spatial_merge_size ** 2
            values = values[2:]
        st.seconds_per_grid = float(values[0]) if values else 1.0

    def _token_times(self, modality: torch.Tensor) -> torch.Tensor:
        """Start time of every media token (NaN for text), computed on the device without host reads."""
        st = self._state
        video = modality == VIDEO
        audio = modality == AUDIO
        video_ordinal = torch.cumsum(video, 0) - 1  # ordinal of each video token among the video tokens
        audio_ordinal = torch.cumsum(audio, 0) - 1
        nan = torch.full(modality.shape, float("nan"), dtype=torch.float32, device=modality.device)
        t = torch.where(audio, audio_ordinal.float() / self.adapter.audio_tokens_per_second, nan)
        if st.video_grid_thw is not None and st.video_tokens_per_grid > 0:
            video_time = (video_ordinal // st.video_tokens_per_grid).float() * st.seconds_per_grid
            t = torch.where(video, video_time, t)
        return t

    # -- before the LLM ---------------------------------------------------------------------------
    def _on_llm_start(self, module, args, kwargs):
        st = self._state
        if not st.prefill:
            return None
        st.clock.mark("llm_start")
        embeds = kwargs["inputs_embeds"]
        ids = st.input_ids
        modality = torch.where(ids == self.adapter.video_token_id, VIDEO, TEXT)
        modality = torch.where(ids == self.adapter.audio_token_id, AUDIO, modality)
        self._read_layout()
        pos = kwargs.get("position_ids")
        if pos is None:
            raise ValueError("the token-selection engine needs the Thinker's 3-axis position ids at prefill")
        mrope = pos[-3:, 0, :]  # [3, S]: t/h/w rows (a leading text row, if any, is dropped here)
        st.modality = modality
        st.original_index = torch.arange(ids.shape[0], device=ids.device)
        st.position_ids = mrope
        st.token_time = self._token_times(modality)

        selection = self._timed(lambda: self.selector.before_llm(self._context(embeds[0])), "before_llm")
        if selection is not None:
            kwargs = self._cut_llm_inputs(kwargs, selection, embeds)
        st.llm_length = int(kwargs["inputs_embeds"].shape[1])
        st.record.llm_input_length = st.llm_length
        if kwargs.get("deepstack_visual_embeds") is not None and kwargs.get("visual_pos_masks") is not None:
            st.deepstack = kwargs["deepstack_visual_embeds"]  # rows added after the first decoder modules
            st.visual_local = kwargs["visual_pos_masks"][0]
        st.local_index = torch.arange(st.llm_length, device=embeds.device)
        return args, kwargs

    def _cut_llm_inputs(self, kwargs: dict, selection: Selection, embeds: torch.Tensor) -> dict:
        st = self._state
        embeds = self._apply_replacements(embeds, selection)
        keep = selection.keep.to(embeds.device)
        idx = torch.nonzero(keep).flatten()  # the one host sync of a cut
        if idx.numel() == keep.numel():
            kwargs["inputs_embeds"] = embeds
            return kwargs
        st.record.events.append((0, int(idx.numel()), selection.label or "before_llm"))
        st.pruned = True
        kwargs["inputs_embeds"] = embeds[:, idx]
        mask = kwargs.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.ndim == 2:
            kwargs["attention_mask"] = mask[:, idx]
        elif isinstance(mask, torch.Tensor):
            raise ValueError("a prepared 4-D attention mask cannot be cut before the LLM; pass a 2-D mask")
        kwargs["position_ids"] = kwargs["position_ids"][..., idx]
        visual = kwargs.get("visual_pos_masks")
        if visual is not None:
            visual_keep = keep[visual[0]]  # kept flags of the visual tokens, in visual order
            kwargs["visual_pos_masks"] = visual[:, idx]
            if kwargs.get("deepstack_visual_embeds") is not None:
                kwargs["deepstack_visual_embeds"] = [e[visual_keep] for e in kwargs["deepstack_visual_embeds"]]
        st.modality = st.modality[idx]
        st.original_index = st.original_index[idx]
        st.position_ids = st.position_ids[:, idx]
        st.token_time = st.token_time[idx]
        return kwargs

    @staticmethod
    def _apply_replacements(embeds: torch.Tensor, selection: Selection) -> torch.Tensor:
        if selection.replace_index is None:
            return embeds
        embeds = embeds.clone()
        embeds[0, selection.replace_index.to(embeds.device)] = selection.replace_embeds.to(embeds.dtype)
        return embeds

    def _timed(self, fn, where: str = "after_layer"):
        clock = self._state.clock
        a = clock.now()
        out = fn()
        clock.spans.append((a, clock.now()))
        clock.span_where.append(where)
        return out

    # -- inside the LLM ---------------------------------------------------------------------------
    def _make_layer_pre(self, i: int):
        def pre(module, args, kwargs):
            st = self._state
            if not st.prefill:
                return self._decode_layer_pre(i, args, kwargs)
            hidden = args[0] if args else kwargs["hidden_states"]
            st.record.layer_lengths.append(int(hidden.shape[1]))  # a shape: no host sync
            if not st.segment_counts or st.segment_length != st.modality.shape[0]:
                # first layer, or the first layer after a cut: count this stretch's modalities on device
                codes = torch.arange(3, device=st.modality.device).unsqueeze(1)  # TEXT, VIDEO, AUDIO
                st.segment_counts.append((st.modality.unsqueeze(0) == codes).sum(dim=1))
                st.segment_length = st.modality.shape[0]
            st.layer_segment.append(len(st.segment_counts) - 1)
            if st.local_index.shape[0] != st.llm_length:
                kwargs = self._slice_layer_kwargs(kwargs)
            st.current_cos_sin = kwargs.get("position_embeddings")
            return args, kwargs

        return pre

    def _slice_layer_kwargs(self, kwargs: dict) -> dict:
        st = self._state
        idx = st.local_index
        pe = kwargs.get("position_embeddings")
        if pe is not None:
            cache = st.pos_emb_cache
            if cache is None or cache[0] is not pe[0] or cache[1] != st.index_version:
                sliced = (pe[0].index_select(-2, idx), pe[1].index_select(-2, idx))
                st.pos_emb_cache = (pe[0], st.index_version, sliced)
            kwargs["position_embeddings"] = st.pos_emb_cache[2]
        mask = kwargs.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.ndim == 4:
            kwargs["attention_mask"] = mask.index_select(-2, idx).index_select(-1, idx)
        pos = kwargs.get("position_ids")
        if isinstance(pos, torch.Tensor) and pos.shape[-1] == st.llm_length:
            kwargs["position_ids"] = pos.index_select(-1, idx)
        return kwargs

    def _make_layer_post(self, i: int):
        layer_number = i + 1

        def post(module, args, kwargs, output):
            st = self._state
            if not st.prefill or layer_number not in self._hook_layers:
                return None
            hidden = output[0] if isinstance(output, tuple) else output
            selection = self._timed(
                lambda: self.selector.after_layer(layer_number, self._with_deepstack(i, hidden[0]), self._context())
            )
            if selection is None:
                return None
            keep = selection.keep.to(hidden.device)
            replaced = selection.replace_index is not None
            if replaced:
                hidden = hidden.clone()
                hidden[0, selection.replace_index.to(hidden.device)] = selection.replace_embeds.to(hidden.dtype)
            idx = torch.nonzero(keep).flatten()  # the one host sync of a cut
            if idx.numel() == keep.numel():
                if not replaced:
                    return None
                return (hidden,) + tuple(output[1:]) if isinstance(output, tuple) else hidden
            hidden = hidden[:, idx]
            self._cut_cache(kwargs.get("past_key_values"), idx, upto=i)
            st.local_index = st.local_index[idx]
            st.index_version += 1
            st.modality = st.modality[idx]
            st.original_index = st.original_index[idx]
            st.position_ids = st.position_ids[:, idx]
            st.token_time = st.token_time[idx]
            st.record.events.append((layer_number, int(idx.numel()), selection.label or f"after_layer_{layer_number}"))
            st.pruned = True
            if isinstance(output, tuple):
                return (hidden,) + tuple(output[1:])
            return hidden

        return post

    def _cut_cache(self, cache, idx: torch.Tensor, upto: int) -> None:
        """Cut the KV cache of executed layers 0..upto to ``idx`` (scope ``all_executed``)."""
        if cache is None or self.kv_scope != "all_executed":
            return
        for j in range(min(upto + 1, len(cache.layers))):
            layer = cache.layers[j]
            keys = getattr(layer, "keys", None)
            if keys is None or keys.numel() == 0:
                continue
            layer.keys = keys.index_select(-2, idx)
            layer.values = layer.values.index_select(-2, idx)
            if hasattr(layer, "cumulative_length"):
                layer.cumulative_length = layer.keys.shape[-2]

    # -- Qwen3 DeepStack ----------------------------------------------------------------------------
    def _with_deepstack(self, module_index: int, hidden: torch.Tensor) -> torch.Tensor:
        """The output of module ``module_index`` as the next module will see it.

        Qwen3 adds DeepStack visual rows to the output of the first modules *after* the layer's
        forward hook; upstream scores that sum, so the selector gets it too (the raw output is what
        gets cut; ``_deepstack_process`` then adds the surviving rows)."""
        st = self._state
        if st.deepstack is None or module_index >= len(st.deepstack):
            return hidden
        visual = st.visual_local[st.local_index]
        ordinal = (st.visual_local.long().cumsum(0) - 1)[st.local_index][visual]
        scored = hidden.clone()
        scored[visual] = scored[visual] + st.deepstack[module_index][ordinal].to(hidden.dtype)
        return scored

    def _deepstack_process(self, hidden_states, visual_pos_masks, visual_embeds):
        st = self._state
        if st.prefill and st.local_index is not None and st.local_index.shape[0] != st.llm_length:
            visual_local = visual_pos_masks[0]  # visual flags over the text-model input
            visual_ordinal = torch.cumsum(visual_local.long(), 0) - 1
            kept_visual = visual_local[st.local_index]
            visual_embeds = visual_embeds[visual_ordinal[st.local_index][kept_visual]]
            visual_pos_masks = kept_visual.unsqueeze(0)
        return self._orig_deepstack(hidden_states, visual_pos_masks, visual_embeds)

    # -- records --------------------------------------------------------------------------------------
    def pop_records(self) -> list[PrefillRecord]:
        for item in self._unread:
            self._read_record(*item)
        self._unread = []
        recs, self.records = self.records, []
        return recs
