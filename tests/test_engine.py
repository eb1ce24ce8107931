"""Equivalence proofs for the token-selection engine (design section 6, seats-reference section 5).

Every test runs on the tiny random Qwen2.5-Omni and Qwen3-Omni(-MoE) Thinkers, fp32 on CPU, with a
real video + audio-in-video prompt of ~700 tokens, under both ``sdpa`` and ``eager`` attention.

The references never go through the engine.  They are built from the unpatched model's own parts:

* **merged inputs** -- the Thinker's own ``get_input_embeddings`` / ``get_audio_features`` /
  ``get_video_features`` / ``get_placeholder_mask`` / ``get_rope_index``, in the order of the
  Thinker forward (audio scattered first, then video; M-RoPE ids and ``rope_deltas`` on the
  full prompt).  Qwen3 also yields the visual position mask and the DeepStack rows.
* **masked loop** -- a hand-written loop over the decoder layers with an explicit additive 4-D
  float mask per layer: causal, plus ``-inf`` on the key columns of every token dropped after a
  layer ``L`` for all modules from ``L`` on (0-based module index ``>= L``).  Qwen3's DeepStack
  addition after the first modules is replayed on every visual position.  Final norm + lm_head.
  Dropping a token after layer ``L`` must be indistinguishable, for the kept tokens, from this
  masking: the kept tokens' hidden states and logits are compared position by position.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import pytest
import torch
from conftest import load_tiny, tiny_inputs

from seats_exp.cost import lengths_from_events
from seats_exp.engine import Engine
from seats_exp.selection import AUDIO, TEXT, VIDEO, BaseSelector, Selection

FAMILIES = ("qwen2_5_omni", "qwen3_omni")
ATTNS = ("sdpa", "eager")
CONFIGS = [pytest.param(f, a, id=f"{f}-{a}") for f in FAMILIES for a in ATTNS]
FAMILY_PARAMS = [pytest.param(f, id=f) for f in FAMILIES]

@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The tiny models are far too small for intra-op threads: one thread is several times faster
    (no OpenMP spinning on a busy 2-core runner).  Restored after this module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


EXACT = 1e-5  # keep-everything vs unpatched, attach/detach
TOL = 1e-4  # pruned vs reference


# =============================================================================================
# Selectors used by the tests
# =============================================================================================


class ScriptedSelector(BaseSelector):
    """Drops fixed sets of *original* token indices: before the LLM and after given layers.

    ``pre=None`` keeps everything before the LLM (but still answers with an all-True mask);
    ``keep_all_layers`` are hooked layers that answer with an all-True mask.  Every context the
    engine hands over is recorded for contract checks.
    """

    name = "scripted"

    def __init__(self, pre: torch.Tensor | None = None, after: dict[int, torch.Tensor] | None = None,
                 keep_all_layers=(), replace: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None):
        self.pre = pre
        self.after = dict(after or {})
        self.keep_all_layers = set(keep_all_layers)
        # replace[layer] = (original indices, new rows): overwrite those kept tokens' embeddings
        # (layer 0: before the LLM) or hidden states (after that layer) -- merging methods do this
        self.replace = dict(replace or {})
        self.seen: list[tuple[str, int, dict]] = []

    def hook_layers(self, num_layers: int) -> set[int]:
        return set(self.after) | self.keep_all_layers

    def _record(self, where: str, layer: int, ctx, hidden=None) -> None:
        self.seen.append((where, layer, {
            "original_index": ctx.original_index.clone(), "position_ids": ctx.position_ids.clone(),
            "modality": ctx.modality.clone(), "embeds": None if ctx.embeds is None else ctx.embeds.clone(),
            "hidden_shape": None if hidden is None else tuple(hidden.shape),
            "grid": ctx.video_grid_thw, "per_grid": ctx.video_tokens_per_grid,
            "seconds_per_grid": ctx.seconds_per_grid, "token_time": ctx.token_time.clone(),
        }))

    def _selection(self, layer: int, keep: torch.Tensor, ctx, label: str) -> Selection:
        if layer not in self.replace:
            return Selection(keep=keep, label=label)
        idx, rows = self.replace[layer]
        where = torch.searchsorted(ctx.original_index, idx)  # original_index is ascending
        assert torch.equal(ctx.original_index[where], idx)
        return Selection(keep=keep, replace_index=where, replace_embeds=rows, label=label)

    def before_llm(self, ctx) -> Selection:
        self._record("before_llm", 0, ctx)
        if self.pre is None:
            return self._selection(0, torch.ones(ctx.length, dtype=torch.bool), ctx, "")
        return self._selection(0, ~torch.isin(ctx.original_index, self.pre), ctx, "pre")

    def after_layer(self, layer: int, hidden: torch.Tensor, ctx) -> Selection:
        self._record("after_layer", layer, ctx, hidden)
        if layer in self.after:
            return self._selection(layer, ~torch.isin(ctx.original_index, self.after[layer]), ctx, f"L{layer}")
        return self._selection(layer, torch.ones(ctx.length, dtype=torch.bool), ctx, "")


class Spy(BaseSelector):
    """Wraps a selector and keeps the masks it returned before the LLM."""

    def __init__(self, inner: BaseSelector):
        self.inner = inner
        self.name = inner.name
        self.keeps: list[torch.Tensor] = []

    def hook_layers(self, num_layers):
        return self.inner.hook_layers(num_layers)

    def before_llm(self, ctx):
        sel = self.inner.before_llm(ctx)
        self.keeps.append(None if sel is None else sel.keep.clone())
        self.modality = ctx.modality.clone()
        return sel


# =============================================================================================
# Cases: one loaded tiny model + one real prompt per (family, attention)
# =============================================================================================


@dataclass
class Merged:
    """The unpatched Thinker's LLM input for the full prompt, built from its own methods."""

    embeds: torch.Tensor  # [1, S, D]
    position_ids: torch.Tensor  # [3, 1, S] M-RoPE ids on the unpruned prompt
    attention_mask: torch.Tensor  # [1, S]
    rope_deltas: torch.Tensor
    visual: torch.Tensor | None  # [1, S] bool (Qwen3 DeepStack positions)
    deepstack: list[torch.Tensor] | None  # per early module: [n_visual, D]


@dataclass
class Case:
    family: str
    attn: str
    loaded: object
    inputs: dict
    has_audio: bool
    _memo: dict = field(default_factory=dict)

    @property
    def thinker(self):
        return self.loaded.thinker

    @property
    def adapter(self):
        return self.loaded.adapter

    @property
    def lm(self):
        return self.adapter.language_model

    @property
    def ids(self) -> torch.Tensor:
        return self.inputs["input_ids"][0]

    @property
    def length(self) -> int:
        return int(self.ids.shape[0])

    def media(self, code: int) -> torch.Tensor:
        token = self.adapter.video_token_id if code == VIDEO else self.adapter.audio_token_id
        return torch.nonzero(self.ids == token).flatten()

    # -- drop sets (original indices), disjoint by construction -------------------------------------
    @property
    def drop_pre(self) -> torch.Tensor:  # every 3rd video token, every 4th audio token
        return torch.cat([self.media(VIDEO)[0::3], self.media(AUDIO)[1::4]])

    @property
    def drop_a(self) -> torch.Tensor:
        return torch.cat([self.media(VIDEO)[1::3], self.media(AUDIO)[2::4]])

    @property
    def drop_b(self) -> torch.Tensor:
        v = self.media(VIDEO)[2::3]
        return torch.cat([v[: v.numel() // 2], self.media(AUDIO)[3::4]])

    # -- runs -------------------------------------------------------------------------------
    def generate(self, max_new_tokens: int = 8):
        self.thinker.model.rope_deltas = None
        with torch.no_grad():
            return self.thinker.generate(
                **self.inputs, use_audio_in_video=self.has_audio, max_new_tokens=max_new_tokens, do_sample=False,
                output_scores=True, return_dict_in_generate=True,
            )

    def forward(self):
        self.thinker.model.rope_deltas = None
        with torch.no_grad():
            return self.thinker(**self.inputs, use_audio_in_video=self.has_audio)

    def baseline(self):
        """Unpatched greedy generation (computed once, with no engine attached)."""
        if "baseline" not in self._memo:
            assert not self.thinker._forward_pre_hooks, "baseline must be computed on an unpatched model"
            self._memo["baseline"] = self.generate()
        return self._memo["baseline"]

    @torch.no_grad()
    def merged(self) -> Merged:
        if "merged" in self._memo:
            return self._memo["merged"]
        m = self.thinker.model
        inp = self.inputs
        ids = inp["input_ids"]
        embeds = m.get_input_embeddings()(ids)
        audio_lengths = None
        if self.has_audio:
            audio = m.get_audio_features(inp["input_features"], inp["feature_attention_mask"],
                                         return_dict=True).last_hidden_state
            _, _, audio_mask = m.get_placeholder_mask(ids, inputs_embeds=embeds)
            embeds = embeds.masked_scatter(audio_mask, audio.to(embeds.dtype))
            audio_lengths = inp["feature_attention_mask"].sum(-1)
        video_out = m.get_video_features(inp["pixel_values_videos"], inp["video_grid_thw"], return_dict=True)
        video = torch.cat(video_out.pooler_output, dim=0)
        _, video_mask, _ = m.get_placeholder_mask(ids, inputs_embeds=embeds, video_features=video)
        embeds = embeds.masked_scatter(video_mask, video.to(embeds.dtype))
        visual = deepstack = None
        if self.family == "qwen3_omni":
            visual = video_mask[..., 0]
            deepstack = [torch.cat(f, dim=0) for f in video_out.deepstack_features]
        pos, deltas = m.get_rope_index(
            ids, None, inp["video_grid_thw"], inp["attention_mask"], self.has_audio, audio_lengths,
            inp.get("video_second_per_grid"),
        )
        out = Merged(embeds, pos, inp["attention_mask"], deltas, visual, deepstack)
        self._memo["merged"] = out
        return out

    def hook_counts(self) -> list[int]:
        mods = [self.thinker, self.thinker.model, self.lm, *self.adapter.layers,
                self.adapter.vision_encoder, self.adapter.vision_encoder.blocks[-1].attn,
                self.adapter.audio_encoder.layers[-1].self_attn]
        return [len(x._forward_hooks) + len(x._forward_pre_hooks) for x in mods]


_PROMPTS: dict[str, tuple[dict, bool]] = {}  # processor output per family (independent of attention)


def _make_case(family: str, attn: str, request) -> Case:
    path = request.getfixturevalue("tiny_qwen3" if family == "qwen3_omni" else "tiny_qwen2_5")
    loaded = load_tiny(path, family, attn)
    if family not in _PROMPTS:
        inputs, has_audio = tiny_inputs(loaded, request.getfixturevalue("clips")["av"])
        assert has_audio
        _PROMPTS[family] = (dict(inputs), has_audio)
    inputs, has_audio = _PROMPTS[family]
    return Case(family, attn, loaded, dict(inputs), has_audio)


@pytest.fixture(scope="module")
def cases(request):
    made: dict[tuple[str, str], Case] = {}

    def get(family: str, attn: str = "sdpa") -> Case:
        if (family, attn) not in made:
            made[(family, attn)] = _make_case(family, attn, request)
        return made[(family, attn)]

    yield get
    _PROMPTS.clear()


# =============================================================================================
# References
# =============================================================================================


def _dropped_before_module(after: dict[int, torch.Tensor], module: int) -> torch.Tensor:
    """Original indices removed by drops after 1-based layers L <= module (0-based module index)."""
    parts = [idx for layer, idx in after.items() if layer <= module]
    return torch.cat(parts) if parts else torch.empty(0, dtype=torch.long)


@torch.no_grad()
def masked_reference(case: Case, pre: torch.Tensor | None, after: dict[int, torch.Tensor], *,
                     cache=None, decode_tokens: torch.Tensor | None = None, scope: str = "all_executed",
                     replace: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None):
    """The unpatched decoder run as a hand-written loop with per-layer additive masks.

    Prefill: the kept-before-LLM tokens at their ORIGINAL M-RoPE positions; in module ``l`` the
    key columns of tokens dropped after any layer ``L <= l`` are ``-inf``.  Returns per-module
    outputs (before DeepStack), final logits for every position and, if ``decode_tokens`` is
    given, the logits of teacher-forced decoding steps (see ``test_decoding_after_drops``).
    ``replace[L] = (original indices, rows)`` overwrites those tokens' embeddings (L = 0) or the
    output of module L-1 (L >= 1), as a merging selector would.
    """
    replace = replace or {}
    mg = case.merged()
    lm, thinker = case.lm, case.thinker
    full = torch.arange(case.length)
    keep0 = torch.ones(case.length, dtype=torch.bool) if pre is None else ~torch.isin(full, pre)
    orig = full[keep0]
    embeds = mg.embeds
    if 0 in replace:
        embeds = embeds.clone()
        embeds[0, replace[0][0]] = replace[0][1]
    hidden = embeds[:, keep0]
    pos = mg.position_ids[..., keep0]
    pe = lm.rotary_emb(hidden, pos)
    s = hidden.shape[1]
    causal = torch.full((s, s), float("-inf"), dtype=hidden.dtype).triu(1)
    visual = deepstack = None
    if mg.visual is not None:
        visual = mg.visual[:, keep0]
        vis_keep = keep0[mg.visual[0]]  # kept flags in visual order
        deepstack = [d[vis_keep] for d in mg.deepstack]
    outputs = []
    for l, layer in enumerate(lm.layers):
        mask = causal.clone()
        mask[:, torch.isin(orig, _dropped_before_module(after, l))] = float("-inf")
        hidden = layer(hidden, attention_mask=mask[None, None], position_embeddings=pe, position_ids=None,
                       past_key_values=cache, use_cache=cache is not None)
        if l + 1 in replace:
            hidden = hidden.clone()
            hidden[0, torch.searchsorted(orig, replace[l + 1][0])] = replace[l + 1][1]
        outputs.append(hidden)
        if deepstack is not None and l < len(deepstack):
            hidden = hidden.clone()
            hidden[visual] = hidden[visual] + deepstack[l]
    logits = thinker.lm_head(lm.norm(hidden))[0]
    if decode_tokens is None:
        return outputs, logits, orig

    # Decoding: one token at a time at position last_prompt_position + 1 + t on all three axes
    # (what generate feeds; rope_deltas come from the unpruned prompt).  Keys per module: the
    # reference cache holds every kept-before-LLM prompt token; dropped ones are masked:
    #   all_executed    -> in EVERY module (the engine removed them from every cache);
    #   after_drop_only -> in modules l >= L only (earlier modules kept their keys).
    all_dropped = _dropped_before_module(after, len(lm.layers))
    step_logits = []
    last = mg.position_ids[..., -1:]
    embed = thinker.model.get_input_embeddings()
    for t, token in enumerate(decode_tokens.tolist()):
        h = embed(torch.tensor([[token]]))
        pe_t = lm.rotary_emb(h, last + 1 + t)
        for l, layer in enumerate(lm.layers):
            gone = all_dropped if scope == "all_executed" else _dropped_before_module(after, l)
            cols = torch.cat([torch.isin(orig, gone), torch.zeros(t + 1, dtype=torch.bool)])
            mask = torch.zeros(1, 1, 1, cols.numel(), dtype=h.dtype)
            mask[..., cols] = float("-inf")
            h = layer(h, attention_mask=mask, position_embeddings=pe_t, position_ids=None,
                      past_key_values=cache, use_cache=True)
        step_logits.append(thinker.lm_head(lm.norm(h))[0, -1])
    return outputs, logits, orig, torch.stack(step_logits)


@torch.no_grad()
def kept_tokens_reference(case: Case, keep: torch.Tensor, embeds: torch.Tensor | None = None) -> torch.Tensor:
    """Last-position logits of the unpatched text model run on the kept tokens (original positions)."""
    mg = case.merged()
    embeds = mg.embeds if embeds is None else embeds
    extra = {}
    if mg.visual is not None:
        extra["visual_pos_masks"] = mg.visual[:, keep]
        extra["deepstack_visual_embeds"] = [d[keep[mg.visual[0]]] for d in mg.deepstack]
    out = case.lm(inputs_embeds=embeds[:, keep], position_ids=mg.position_ids[..., keep],
                  attention_mask=mg.attention_mask[:, keep], **extra)
    return case.thinker.lm_head(out.last_hidden_state[:, -1])[0]


class LayerTap:
    """Captures every decoder layer's output as the next layer will see it (after the engine's cut).

    Registered after the engine attached, so PyTorch runs it after the engine's post-hook.
    """

    def __init__(self, case: Case):
        self.outputs: list[torch.Tensor] = []
        self.handles = [layer.register_forward_hook(self._hook) for layer in case.adapter.layers]

    def _hook(self, module, args, output):
        self.outputs.append((output[0] if isinstance(output, tuple) else output).detach().clone())

    def remove(self):
        for h in self.handles:
            h.remove()


# =============================================================================================
# 1. keep-everything == unpatched
# =============================================================================================


@pytest.mark.parametrize("family,attn", CONFIGS)
def test_keep_everything_is_the_unpatched_model(cases, family, attn):
    """All-True masks before the LLM and after layers 1, 3 and 8: greedy tokens and all 8 steps'
    scores equal the unpatched model's (the hooks themselves change nothing)."""
    case = cases(family, attn)
    base = case.baseline()
    selector = ScriptedSelector(pre=None, keep_all_layers={1, 3, 8})
    with Engine(case.thinker, case.adapter, selector):
        out = case.generate()
    assert torch.equal(out.sequences, base.sequences)
    assert len(out.scores) == len(base.scores) == 8
    for a, b in zip(out.scores, base.scores):
        assert (a - b).abs().max().item() <= EXACT
    # the selector was really consulted: once before the LLM, once per hooked layer (prefill only)
    assert [(w, l) for w, l, _ in selector.seen] == [("before_llm", 0), ("after_layer", 1),
                                                     ("after_layer", 3), ("after_layer", 8)]


# =============================================================================================
# 2. pre-LLM drop == text model on the kept tokens at their original positions
# =============================================================================================


@pytest.mark.parametrize("family,attn", CONFIGS)
def test_pre_llm_drop_equals_text_model_on_kept_tokens(cases, family, attn):
    """Every 3rd video and every 4th audio token dropped before the LLM == the unpatched text model
    (+ lm_head) on the kept merged embeddings at their ORIGINAL M-RoPE positions (Qwen3: with the
    visual mask and DeepStack rows sliced alike), via forward and via generate."""
    case = cases(family, attn)
    pre = case.drop_pre
    keep = ~torch.isin(torch.arange(case.length), pre)
    expected = kept_tokens_reference(case, keep)

    selector = ScriptedSelector(pre=pre)
    with Engine(case.thinker, case.adapter, selector) as engine:
        logits = case.forward().logits[0]  # plain forward: 3-row position ids
        via_generate = case.generate(max_new_tokens=1)  # generate: 4-row ids (text row + M-RoPE)
        records = engine.pop_records()
    assert logits.shape[0] == int(keep.sum())
    assert (logits[-1] - expected).abs().max().item() <= TOL
    assert (via_generate.scores[0][0] - expected).abs().max().item() <= TOL

    # the context handed to the selector: unpruned sequence, original positions, merged embeddings
    where, _, ctx = selector.seen[0]
    mg = case.merged()
    assert where == "before_llm"
    assert torch.equal(ctx["original_index"], torch.arange(case.length))
    assert torch.equal(ctx["position_ids"], mg.position_ids[:, 0])
    assert (ctx["embeds"] - mg.embeds[0]).abs().max().item() <= EXACT
    assert [r.llm_input_length for r in records] == [int(keep.sum())] * 2


# =============================================================================================
# 3. drops after layer L == dropped tokens masked as keys from layer L on
# =============================================================================================

INNER_CASES = {"after1": (1,), "after4": (4,), "after2_then6": (2, 6)}  # covers L in {1, 2, 4, 6}


def _inner_drops(case: Case, layers: tuple[int, ...]) -> dict[int, torch.Tensor]:
    sets = (case.drop_a, case.drop_b)
    return {layer: sets[k] for k, layer in enumerate(layers)}


@pytest.mark.parametrize("family,attn", CONFIGS)
@pytest.mark.parametrize("name", list(INNER_CASES))
def test_inner_drop_equals_key_masking(cases, family, attn, name):
    """Drops after layer(s) L == the masked loop: every module's output at the surviving positions,
    all final logits and the contexts handed to later hooks (original indices and positions)."""
    case = cases(family, attn)
    after = _inner_drops(case, INNER_CASES[name])
    ref_outputs, ref_logits, orig = masked_reference(case, None, after)

    selector = ScriptedSelector(after=after)
    with Engine(case.thinker, case.adapter, selector):
        tap = LayerTap(case)
        try:
            logits = case.forward().logits[0]
        finally:
            tap.remove()

    assert len(tap.outputs) == case.adapter.num_layers
    for l, got in enumerate(tap.outputs):
        alive = ~torch.isin(orig, _dropped_before_module(after, l + 1))  # present after module l
        want = ref_outputs[l][0, alive]
        assert got.shape[1] == int(alive.sum()), f"module {l}: length"
        assert (got[0] - want).abs().max().item() <= TOL, f"module {l}: hidden states"
    final_alive = ~torch.isin(orig, _dropped_before_module(after, case.adapter.num_layers))
    assert logits.shape[0] == int(final_alive.sum())
    assert (logits - ref_logits[final_alive]).abs().max().item() <= TOL
    assert (logits[-1] - ref_logits[-1]).abs().max().item() <= TOL

    # contexts after each cut describe the surviving tokens with their original positions
    mg = case.merged()
    hooked = [(layer, ctx) for where, layer, ctx in selector.seen if where == "after_layer"]
    assert [layer for layer, _ in hooked] == sorted(after)
    for layer, ctx in hooked:
        alive = ~torch.isin(orig, _dropped_before_module(after, layer - 1))  # present when layer L ran
        assert torch.equal(ctx["original_index"], orig[alive])
        assert torch.equal(ctx["position_ids"], mg.position_ids[:, 0][:, orig[alive]])
        assert ctx["hidden_shape"] == (int(alive.sum()), mg.embeds.shape[-1])


# =============================================================================================
# 4. decoding after drops == the masked reference, step by step, under both KV scopes
# =============================================================================================


@pytest.mark.parametrize("family,attn", CONFIGS)
@pytest.mark.parametrize("scope", ["all_executed", "after_drop_only"])
def test_decoding_after_drops(cases, family, attn, scope):
    """Pre-LLM drop, then drops after layers 2 and 6; 8 greedy steps.

    Reference design (exact by construction): the masked loop above, run with a real
    ``DynamicCache`` that keeps the K/V of every prompt token that entered the LLM -- including the
    ones the engine dropped inside it.  Their keys are identical to the engine's up to the layer
    where they were dropped (same inputs, same causal masks), so they may stay in the cache as
    long as every query that must not see them masks them out:

    * prefill: in module ``l`` the tokens dropped after ``L <= l`` are masked (as in test 3);
    * decoding, ``all_executed``: the engine removed dropped tokens from every layer's cache, so
      the reference masks them in EVERY module;
    * decoding, ``after_drop_only``: modules ``< L`` kept their keys, so the reference masks them
      only in modules ``>= L`` -- the same rule as in prefill.

    Decode positions are ``last prompt position + 1 + t`` on the three M-RoPE axes (what
    ``generate`` feeds, from the unpruned prompt and ``rope_deltas``).  The reference is
    teacher-forced with the engine's tokens, so logits are compared at every step even if a
    near-tie flipped a token; the tokens themselves must equal the reference's argmax.
    """
    from transformers import DynamicCache

    case = cases(family, attn)
    after = _inner_drops(case, (2, 6))
    pre = case.drop_pre
    selector = ScriptedSelector(pre=pre, after=after)
    with Engine(case.thinker, case.adapter, selector, kv_scope=scope) as engine:
        out = case.generate()
        rec = engine.pop_records()
    tokens = out.sequences[0, case.length:]
    assert tokens.numel() == 8 and len(rec) == 1
    # decoding positions come from the UNPRUNED prompt: rope_deltas as computed without the engine,
    # and the reference's next position (last prompt position + 1) is prompt length + rope_deltas
    mg = case.merged()
    assert torch.equal(case.thinker.model.rope_deltas, mg.rope_deltas)
    assert bool((mg.position_ids[:, 0, -1] + 1 == case.length + mg.rope_deltas[0, 0]).all())

    refs = {}
    for ref_scope in ("all_executed", "after_drop_only"):
        cache = DynamicCache(config=case.lm.config)
        _, prefill_logits, _, step_logits = masked_reference(case, pre, after, cache=cache,
                                                             decode_tokens=tokens[:-1], scope=ref_scope)
        refs[ref_scope] = torch.cat([prefill_logits[-1:], step_logits])  # [8, V]: the logits behind tokens 0..7
    ref = refs[scope]
    got = torch.stack([s[0] for s in out.scores])
    assert (got - ref).abs().max().item() <= TOL
    assert torch.equal(tokens, ref.argmax(-1))
    # not vacuous: the other scope's reference has the same first token but different decoding logits
    other = refs["after_drop_only" if scope == "all_executed" else "all_executed"]
    assert (got[0] - other[0]).abs().max().item() <= TOL
    assert (got[1:] - other[1:]).abs().max().item() > 1e-3


# =============================================================================================
# 5. attach then detach leaves the model exactly as it was
# =============================================================================================


@pytest.mark.parametrize("family", FAMILY_PARAMS)
def test_attach_detach_restores_the_model(cases, family, request):
    """Attach (with encoder-stats hooks), prune, detach: no hook and no instance attribute is left,
    and generation equals a never-patched instance of the same checkpoint."""
    from seats_exp.selection import ALL_STATS, StatsRequest
    from seats_exp.stats import EncoderStatsCollector

    case = cases(family, "sdpa")
    fresh = _make_case(family, "sdpa", request)  # a never-patched instance of the same checkpoint
    expected = fresh.generate()
    before = case.hook_counts()
    assert before == [0] * len(before)

    stats = EncoderStatsCollector(case.adapter, ALL_STATS, StatsRequest())
    engine = Engine(case.thinker, case.adapter, ScriptedSelector(pre=case.drop_pre, after=_inner_drops(case, (2, 6))),
                    stats=stats)
    engine.attach()
    engine.attach()  # idempotent: no second set of hooks
    assert sum(case.hook_counts()) > 0
    if family == "qwen3_omni":
        assert "_deepstack_process" in vars(case.lm)
    pruned = case.generate()
    engine.detach()

    assert case.hook_counts() == before
    assert "_deepstack_process" not in vars(case.lm)
    after = case.generate()
    assert torch.equal(after.sequences, expected.sequences)
    for a, b in zip(after.scores, expected.scores):
        assert (a - b).abs().max().item() <= EXACT
    assert (pruned.scores[0] - expected.scores[0]).abs().max().item() > 1e-4  # the engine did act


# =============================================================================================
# 6. PrefillRecord
# =============================================================================================


@pytest.mark.parametrize("family", FAMILY_PARAMS)
def test_prefill_record(cases, family):
    """One record per prefill (generate and forward) with the lengths entering each layer, the drop
    events, per-modality counts and timings; the context knows the video grid and token times."""
    case = cases(family, "sdpa")
    pre, after = case.drop_pre, _inner_drops(case, (2, 6))
    selector = ScriptedSelector(pre=pre, after=after)
    with Engine(case.thinker, case.adapter, selector) as engine:
        case.generate()  # generate() runs the ViT before the prefill forward and pops video_grid_thw
        case.forward()
        records = engine.pop_records()
        assert engine.pop_records() == []
    # the context knows the video layout in both call paths; media tokens carry their start times
    grid = case.inputs["video_grid_thw"]
    per_grid = int(grid[0, 1] * grid[0, 2]) // case.adapter.spatial_merge_size ** 2
    spg = float(case.inputs["video_second_per_grid"][0])
    firsts = [ctx for where, _, ctx in selector.seen if where == "before_llm"]
    assert len(firsts) == 2
    for ctx in firsts:
        assert torch.equal(ctx["grid"], grid) and ctx["per_grid"] == per_grid and ctx["seconds_per_grid"] == spg
        times = ctx["token_time"]
        v, a = case.media(VIDEO), case.media(AUDIO)
        assert torch.equal(times[v], (torch.arange(v.numel()) // per_grid).float() * spg)
        assert torch.allclose(times[a], torch.arange(a.numel()).float() / case.adapter.audio_tokens_per_second)
        assert bool(times[ctx["modality"] == TEXT].isnan().all())
    assert len(records) == 2  # one per prefill; decoding steps add none
    s = case.length
    n0 = s - pre.numel()
    n1 = n0 - after[2].numel()
    n2 = n1 - after[6].numel()
    modality = torch.full((s,), TEXT)
    modality[case.media(VIDEO)] = VIDEO
    modality[case.media(AUDIO)] = AUDIO
    for rec in records:
        assert rec.input_length == s
        assert rec.llm_input_length == n0
        assert rec.layer_lengths == [n0] * 2 + [n1] * 4 + [n2] * 2
        assert rec.final_length == n2
        assert rec.events == [(0, n0, "pre"), (2, n1, "L2"), (6, n2, "L6")]
        assert lengths_from_events(8, s, [(layer, n) for layer, n, _ in rec.events]) == rec.layer_lengths
        for module, counts in enumerate(rec.kept_counts):
            alive = ~torch.isin(torch.arange(s), torch.cat([pre, _dropped_before_module(after, module)]))
            kept = modality[alive]
            assert counts == {"video": int((kept == VIDEO).sum()), "audio": int((kept == AUDIO).sum()),
                              "text": int((kept == TEXT).sum())}
        assert set(rec.timings) == {"encoders", "selection", "llm_prefill"}
        assert all(v >= 0.0 and math.isfinite(v) for v in rec.timings.values())
        assert rec.peak_memory_bytes is None  # CPU

    with Engine(case.thinker, case.adapter, ScriptedSelector(keep_all_layers={4})) as engine:
        case.forward()
        (rec,) = engine.pop_records()
    assert rec.events == [] and rec.layer_lengths == [s] * 8 and rec.final_length == s


def test_final_length_counts_a_drop_after_the_last_layer(cases):
    case = cases("qwen2_5_omni", "sdpa")
    after = {8: case.drop_a}
    with Engine(case.thinker, case.adapter, ScriptedSelector(after=after)) as engine:
        logits = case.forward().logits
        (rec,) = engine.pop_records()
    assert logits.shape[1] == case.length - after[8].numel()  # lm_head ran on the survivors only
    assert rec.events == [(8, logits.shape[1], "L8")]
    assert rec.final_length == logits.shape[1]


def _media_free_ids(case: Case) -> torch.Tensor:
    """A chat prompt with no media placeholder at all (not a cut of a video prompt)."""
    tok = case.loaded.processor.tokenizer
    ids = tok("<|im_start|>user\nHello there<|im_end|>\n<|im_start|>assistant\n", return_tensors="pt").input_ids
    specials = {case.adapter.video_token_id, case.adapter.audio_token_id, case.thinker.config.vision_start_token_id}
    assert not any(int(t) in specials for t in ids[0])
    return ids


def _generate_media_free(case: Case, selector: ScriptedSelector, engine: Engine):
    """generate() on a media-free prompt; returns (the context the selector saw, its prefill record)."""
    ids = _media_free_ids(case)
    case.thinker.model.rope_deltas = None
    with torch.no_grad():
        case.thinker.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=2, do_sample=False)
    firsts = [ctx for where, _, ctx in selector.seen if where == "before_llm"]
    (rec,) = engine.pop_records()[-1:]
    return firsts[-1], rec


def test_video_grid_does_not_leak_into_a_media_free_prompt(cases):
    """generate() with a video, then generate() with a prompt that has no media at all: the second
    prefill sees no video grid (the grid generate() hands over from the encoders is per call)."""
    case = cases("qwen2_5_omni", "sdpa")
    selector = ScriptedSelector()
    with Engine(case.thinker, case.adapter, selector) as engine:
        case.generate(max_new_tokens=1)
        assert selector.seen[-1][2]["per_grid"] > 0  # the video prompt had its grid
        ctx, _ = _generate_media_free(case, selector, engine)
    assert ctx["grid"] is None and ctx["per_grid"] == 0


PAUSE = 1.0  # seconds between a failed call and the next one: must not show up as encoder time


@pytest.mark.parametrize("failure", ["num_beams_2", "corrupt_pixels"])
def test_failed_generate_leaves_no_pending_state(cases, failure):
    """A generate() that is rejected (num_beams=2 is a batch of two for the engine) or fails inside the
    vision encoder (corrupt pixels) leaves neither its video grid nor its clock to the next call: the
    next, media-free prompt sees no grid and its encoder time does not include the pause in between."""
    case = cases("qwen2_5_omni", "sdpa")
    selector = ScriptedSelector()
    inputs = dict(case.inputs)
    kwargs = {"num_beams": 2} if failure == "num_beams_2" else {}
    if failure == "corrupt_pixels":
        inputs["pixel_values_videos"] = inputs["pixel_values_videos"][: inputs["pixel_values_videos"].shape[0] // 3]
    with Engine(case.thinker, case.adapter, selector) as engine:
        case.thinker.model.rope_deltas = None
        with pytest.raises(Exception) as err, torch.no_grad():
            case.thinker.generate(**inputs, use_audio_in_video=case.has_audio, max_new_tokens=2, do_sample=False,
                                  **kwargs)
        if failure == "num_beams_2":
            assert "batch size 2 is not supported" in str(err.value)
        assert engine.pop_records() == []
        time.sleep(PAUSE)
        ctx, rec = _generate_media_free(case, selector, engine)
    assert ctx["grid"] is None and ctx["per_grid"] == 0
    assert rec.timings["encoders"] < PAUSE / 2, rec.timings


def test_second_engine_on_the_same_model_is_refused(cases):
    """Two engines on one Qwen3 Thinker would both wrap its DeepStack step and cut every tensor twice."""
    case = cases("qwen3_omni", "sdpa")
    first = Engine(case.thinker, case.adapter, ScriptedSelector()).attach()
    try:
        with pytest.raises(RuntimeError, match="another token-selection engine is already attached"):
            Engine(case.thinker, case.adapter, ScriptedSelector()).attach()
    finally:
        first.detach()
    second = Engine(case.thinker, case.adapter, ScriptedSelector()).attach()  # fine once the first is gone
    second.detach()
    assert not case.thinker._forward_pre_hooks and not hasattr(case.thinker, "_seats_engine")


def test_renamed_cache_keyword_is_refused(cases):
    """The engine reads the KV cache from the ``past_key_values`` keyword; a Thinker whose forward names it
    otherwise would make every decode step a new prefill, so attaching refuses."""
    case = cases("qwen2_5_omni", "sdpa")
    original = case.thinker.forward

    def forward(input_ids=None, attention_mask=None, cache=None, **kwargs):  # the cache renamed
        return original(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache, **kwargs)

    case.thinker.forward = forward
    try:
        with pytest.raises(RuntimeError, match="no 'past_key_values' argument"):
            Engine(case.thinker, case.adapter, ScriptedSelector()).attach()
    finally:
        del case.thinker.forward
    assert not case.thinker._forward_pre_hooks and not hasattr(case.thinker, "_seats_engine")


# =============================================================================================
# Replacement embeddings (merging methods): the engine writes them before cutting
# =============================================================================================


def _rows(n: int, dim: int, seed: int) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", FAMILY_PARAMS)
def test_replacement_before_llm_and_after_a_cut(cases, family):
    case = cases(family, "sdpa")
    dim = case.merged().embeds.shape[-1]
    pre, after = case.drop_pre, {4: case.drop_a}
    kept_video = case.media(VIDEO)[~torch.isin(case.media(VIDEO), torch.cat([pre, case.drop_a]))]
    replace = {0: (kept_video[:5], _rows(5, dim, 1)), 4: (kept_video[5:9], _rows(4, dim, 2))}

    # before the LLM only: the text model on the kept tokens with the replaced embeddings
    embeds = case.merged().embeds.clone()
    embeds[0, replace[0][0]] = replace[0][1]
    keep = ~torch.isin(torch.arange(case.length), pre)
    with Engine(case.thinker, case.adapter, ScriptedSelector(pre=pre, replace={0: replace[0]})):
        logits = case.forward().logits[0]
    assert (logits[-1] - kept_tokens_reference(case, keep, embeds)).abs().max().item() <= TOL

    # and after layer 4, together with a cut
    _, ref_logits, orig = masked_reference(case, pre, after, replace=replace)
    with Engine(case.thinker, case.adapter, ScriptedSelector(pre=pre, after=after, replace=replace)):
        logits = case.forward().logits[0]
    alive = ~torch.isin(orig, case.drop_a)
    assert (logits - ref_logits[alive]).abs().max().item() <= TOL


def test_replacement_after_a_layer_without_a_cut(cases):
    case = cases("qwen2_5_omni", "sdpa")
    dim = case.merged().embeds.shape[-1]
    replace = {4: (case.media(VIDEO)[:4], _rows(4, dim, 3))}
    _, ref_logits, _ = masked_reference(case, None, {}, replace=replace)
    with Engine(case.thinker, case.adapter, ScriptedSelector(keep_all_layers={4}, replace=replace)):
        logits = case.forward().logits[0]
    assert (logits - ref_logits).abs().max().item() <= TOL


# =============================================================================================
# 7. Random method: seeded per sample, floor-based counts
# =============================================================================================


@pytest.mark.parametrize("family", FAMILY_PARAMS)
def test_random_method_is_seeded_and_floor_based(cases, family):
    """methods.random through the engine: the permutation comes from ctx.generator seeded with
    engine.sample_seed (same seed, same tokens; another seed, other tokens); k = floor(ratio * T)."""
    from methods import ModelInfo, build_selector

    case = cases(family, "sdpa")
    rate = case.adapter.audio_tokens_per_second
    info = ModelInfo(f"tiny_{family}", family, case.adapter.num_layers, rate)
    spy = Spy(build_selector("random", {}, 0.35, 0.35, info))
    n_video, n_audio = case.media(VIDEO).numel(), case.media(AUDIO).numel()

    def run(seed):
        with Engine(case.thinker, case.adapter, spy) as engine:
            engine.sample_seed = seed
            case.forward()
            (rec,) = engine.pop_records()
        return spy.keeps[-1], rec

    keep_a, rec_a = run(1234)
    keep_b, _ = run(1234)
    keep_c, _ = run(4321)
    assert torch.equal(keep_a, keep_b)
    assert not torch.equal(keep_a, keep_c)

    # floor(0.35 * T): 0.35 * 576 = 201.6 -> 201 (round would give 202)
    want_v, want_a = math.floor(0.35 * n_video), max(1, math.floor(0.35 * n_audio))
    for keep in (keep_a, keep_c):
        assert int(keep[spy.modality == VIDEO].sum()) == want_v
        assert int(keep[spy.modality == AUDIO].sum()) == want_a
        assert bool(keep[spy.modality == TEXT].all())
    assert rec_a.llm_input_length == case.length - (n_video - want_v) - (n_audio - want_a)
    assert rec_a.events == [(0, rec_a.llm_input_length, "random")]


def test_random_keep_count_edges():
    from methods.random import random_keep_count

    assert random_keep_count(0.35, 576) == 201
    assert random_keep_count(0.999, 10) == 9  # floor, not round
    assert random_keep_count(0.001, 50) == 1  # at least one token
    assert random_keep_count(1.0, 7) == 7
    assert random_keep_count(0.5, 0) == 0


def test_random_keep_count_ratio_zero_keeps_nothing():
    from methods.random import random_keep_count

    assert random_keep_count(0.0, 10) == 0


# =============================================================================================
# 8. batch size 2 is rejected
# =============================================================================================


@pytest.mark.parametrize("family", FAMILY_PARAMS)
def test_batch_of_two_is_rejected(cases, family):
    """A batch of two prompts is refused with one clear sentence, and the engine stays usable."""
    case = cases(family, "sdpa")
    ids = case.inputs["input_ids"].repeat(2, 1)
    with Engine(case.thinker, case.adapter, ScriptedSelector(pre=case.drop_pre)) as engine:
        with pytest.raises(ValueError, match=r"batch size 2 is not supported.*batch size to 1"), torch.no_grad():
            case.thinker(input_ids=ids, attention_mask=torch.ones_like(ids))
        assert engine.pop_records() == []
        # the engine is still usable afterwards
        case.forward()
        (rec,) = engine.pop_records()
    assert rec.llm_input_length == case.length - case.drop_pre.numel()
