"""Cost meter (seats-reference 13.1) and encoder statistics (seats-reference 6).

FLOPs: hand-computed cases with the arithmetic written out, the Qwen2.5-Omni-7B closed form, the
section 13.1 segmentation and illustration numbers, and the MoE (active experts only) variant.

Encoder statistics: shapes, per-window sums (every row of a softmax sums to 1, so the column sums
of a window of n units add up to n), an independent recomputation of the last ViT block's
attention on natural-order patches for Qwen2.5's window-reordered ViT, per-call clearing, silent
clips and the fp32 option -- on both tiny families.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from conftest import load_tiny, tiny_inputs

from seats_exp.cost import layer_flops, lengths_from_events, prefill_flops
from seats_exp.models.adapters import ModelDims
from seats_exp.selection import (
    ALL_STATS,
    AUDIO_ATTN,
    AUDIO_KEYS,
    VIDEO_ATTN,
    VIDEO_KEYS,
    BaseSelector,
    StatsRequest,
)
from seats_exp.stats import EncoderStatsCollector, window_attention_received

FAMILY_PARAMS = [pytest.param("qwen2_5_omni", id="qwen2_5_omni"), pytest.param("qwen3_omni", id="qwen3_omni")]

@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """The tiny models are far too small for intra-op threads: one thread is several times faster
    (no OpenMP spinning on a busy 2-core runner).  Restored after this module."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


QWEN2_5_7B = ModelDims(num_layers=28, hidden=3584, heads=28, kv_heads=4, head_dim=128, intermediate=18944,
                       vocab=152064)
QWEN3_30B = ModelDims(num_layers=48, hidden=2048, heads=32, kv_heads=4, head_dim=128, intermediate=768,
                      vocab=152064, experts_per_token=8, num_experts=128, moe_layers=tuple(range(48)),
                      dense_intermediate=0)


# =============================================================================================
# FLOPs
# =============================================================================================


def test_dense_layer_hand_computed():
    # D=8, H=2, Hkv=1, d=4 (H*d = D = 8, Dkv = 4), I=16, V=10, two layers.
    dims = ModelDims(num_layers=2, hidden=8, heads=2, kv_heads=1, head_dim=4, intermediate=16, vocab=10)
    # S=5:  q 5*8*8=320, k 5*8*4=160, v 160, o 320, QK^T 5*5*8=200, AV 200, SwiGLU 3*5*8*16=1920
    assert layer_flops(dims, 5) == 320 + 160 + 160 + 320 + 200 + 200 + 1920 == 3280
    # S=3:  q 192, k 96, v 96, o 192, QK^T 72, AV 72, SwiGLU 1152
    assert layer_flops(dims, 3) == 192 + 96 + 96 + 192 + 72 + 72 + 1152 == 1872
    # lm_head on the final length: 3*8*10 = 240 (default: the last layer's length)
    assert prefill_flops(dims, [5, 3]) == 3280 + 1872 + 240 == 5392
    assert prefill_flops(dims, [5, 3], final_length=1) == 3280 + 1872 + 1 * 8 * 10 == 5232
    assert prefill_flops(dims, [0, 0]) == 0


def test_dense_layer_when_heads_times_head_dim_differs_from_hidden():
    # D=8, H=4, d=4 -> H*d=16; Hkv=2 -> Dkv=8; I=16.  S=2:
    # q 2*8*16=256, k 2*8*8=128, v 128, o 2*16*8=256, QK^T 2*2*16=64, AV 64, SwiGLU 3*2*8*16=768
    dims = ModelDims(num_layers=1, hidden=8, heads=4, kv_heads=2, head_dim=4, intermediate=16, vocab=3)
    assert layer_flops(dims, 2) == 256 + 128 + 128 + 256 + 64 + 64 + 768 == 1664
    assert prefill_flops(dims, [2]) == 1664 + 2 * 8 * 3


def test_moe_layer_counts_active_experts_only():
    # D=8, H=2, Hkv=1, d=4; layer 0 dense (I=16), layer 1 MoE: 4 experts of width 3, top-2,
    # shared expert of width 5; V=10.  S=2:
    # attention (both layers): q 128 + k 64 + v 64 + o 128 + QK^T 32 + AV 32 = 448
    # layer 0 dense:  3*2*8*16 = 768
    # layer 1 MoE:    experts 3*2*8*3*2 = 288, router 2*8*4 = 64, shared 3*2*8*5 = 240  -> 592
    dims = ModelDims(num_layers=2, hidden=8, heads=2, kv_heads=1, head_dim=4, intermediate=3, vocab=10,
                     experts_per_token=2, num_experts=4, moe_layers=(1,), dense_intermediate=16,
                     shared_expert_intermediate=5)
    assert layer_flops(dims, 2, 0) == 448 + 768 == 1216
    assert layer_flops(dims, 2, 1) == 448 + 288 + 64 + 240 == 1040
    assert prefill_flops(dims, [2, 2]) == 1216 + 1040 + 2 * 8 * 10 == 2416


def test_qwen3_30b_a3b_moe_closed_form():
    # per token and layer: q+o 2*2048*4096 + k+v 2*2048*512 + experts 3*2048*768*8 + router 2048*128
    linear = 2 * 2048 * 4096 + 2 * 2048 * 512 + 3 * 2048 * 768 * 8 + 2048 * 128
    assert linear == 56_885_248
    s = 3000
    expected = 48 * (linear * s + 2 * 4096 * s * s) + s * 2048 * 152064
    assert prefill_flops(QWEN3_30B, [s] * 48) == expected
    # the MLP share is the routed top-8 (not all 128 experts) plus the router
    no_mlp = dataclasses.replace(QWEN3_30B, moe_layers=())  # dense path with dense_intermediate=0
    mlp = prefill_flops(QWEN3_30B, [s] * 48) - prefill_flops(no_mlp, [s] * 48)
    assert mlp == 48 * (3 * s * 2048 * 768 * 8 + s * 2048 * 128)


def test_qwen2_5_7b_closed_form_11500_tokens():
    s = 11_500
    got = prefill_flops(QWEN2_5_7B, [s] * 28)
    assert abs(got - (7.07e9 * s + 2.007e5 * s * s)) / got < 0.005
    # exact coefficients: 28 * (2*D*D + 2*D*512 + 3*D*I) + D*V per token; 28 * 2 * D per token pair
    linear = 28 * (2 * 3584 * 3584 + 2 * 3584 * 512 + 3 * 3584 * 18944) + 3584 * 152064
    assert linear == 7_070_285_824
    assert got == linear * s + 28 * 2 * 3584 * s * s


def test_segmentation_seats_qwen2_5_defaults():
    # section 13.1: drops after layers 16, 18, 20 (1-based) and the late removal after layer 23:
    # modules 0-15 run at S0, 16-17 at S1, 18-19 at S2, 20-22 at S3, 23-27 text only.
    s0, s1, s2, s3, text = 2640, 2466, 1991, 700, 150
    lengths = lengths_from_events(28, s0, [(16, s1), (18, s2), (20, s3), (23, text)])
    assert lengths == [s0] * 16 + [s1] * 2 + [s2] * 2 + [s3] * 3 + [text] * 5
    assert lengths[15] == s0 and lengths[16] == s1 and lengths[22] == s3 and lengths[23] == text
    by_hand = (16 * layer_flops(QWEN2_5_7B, s0) + 2 * layer_flops(QWEN2_5_7B, s1) + 2 * layer_flops(QWEN2_5_7B, s2)
               + 3 * layer_flops(QWEN2_5_7B, s3) + 5 * layer_flops(QWEN2_5_7B, text) + text * 3584 * 152064)
    assert prefill_flops(QWEN2_5_7B, lengths) == by_hand


@pytest.mark.parametrize("counts,tflops", [
    ((5220,) * 5, 42.38),  # full tokens: 4320 video + 750 audio + 150 text, 30-s clip
    ((2640, 2466, 1991, 700), 13.62),  # R=35
    ((1935, 1810, 1469, 543), 9.89),  # R=25
    ((1230, 1154, 948, 388), 6.30),  # R=15
    ((870, 820, 683, 310), 4.52),  # R=10
])
def test_section_13_1_illustration(counts, tflops):
    """The spec's illustration: section 11 counts (+150 text) through the SEATS segmentation."""
    if len(counts) == 5:
        lengths, final = [counts[0]] * 28, counts[0]
    else:
        s0, s1, s2, s3 = counts
        lengths, final = lengths_from_events(28, s0, [(16, s1), (18, s2), (20, s3), (23, 150)]), 150
    assert round(prefill_flops(QWEN2_5_7B, lengths, final) / 1e12, 2) == tflops


def test_lengths_from_events():
    assert lengths_from_events(28, 900, []) == [900] * 28  # pre-LLM-only methods: all modules at S0
    assert lengths_from_events(28, 900, [(2, 300)]) == [900] * 2 + [300] * 26  # FastV K=2
    assert lengths_from_events(8, 900, [(0, 700)]) == [700] * 8  # a pre-LLM event (the engine's layer 0)
    assert lengths_from_events(8, 900, [(6, 100), (2, 500)]) == [900] * 2 + [500] * 4 + [100] * 2  # sorted
    assert lengths_from_events(8, 900, [(8, 10)]) == [900] * 8  # after the last layer: no layer sees it
    # engine records carry a label: (layer, length, label)
    assert lengths_from_events(8, 900, [(0, 700, "stage1"), (3, 400, "stage2.1")]) == [700] * 3 + [400] * 5


def test_prefill_flops_needs_one_length_per_layer():
    with pytest.raises(ValueError, match="expected 28 layer lengths, got 27"):
        prefill_flops(QWEN2_5_7B, [10] * 27)


# =============================================================================================
# window_attention_received on random q, k
# =============================================================================================


def _loop_scores(q: torch.Tensor, k: torch.Tensor, window: int) -> torch.Tensor:
    """Plain per-window, per-head softmax in float64; head mean; column sums."""
    n, heads, d = q.shape
    out = torch.zeros(n, dtype=torch.float64)
    for start in range(0, n, window):
        stop = min(start + window, n)
        acc = torch.zeros(stop - start, stop - start, dtype=torch.float64)
        for h in range(heads):
            logits = q[start:stop, h].double() @ k[start:stop, h].double().T / math.sqrt(d)
            acc += torch.softmax(logits, dim=-1)
        out[start:stop] = (acc / heads).sum(dim=0)
    return out


@pytest.mark.parametrize("n,window", [(23, 5), (20, 5), (7, 10), (64, 64)])
def test_window_scores_are_column_sums_of_row_stochastic_matrices(n, window):
    gen = torch.Generator().manual_seed(n * 100 + window)
    q = torch.randn(n, 3, 8, generator=gen)
    k = torch.randn(n, 3, 8, generator=gen)
    got = window_attention_received(q, k, window)
    assert got.shape == (n,) and got.dtype == torch.float32
    assert torch.allclose(got.double(), _loop_scores(q, k, window), atol=1e-5)
    for start in range(0, n, window):
        size = min(window, n - start)
        assert abs(got[start:start + size].sum().item() - size) < 1e-4
    # batching full windows in blocks of any size changes nothing
    tiny_blocks = window_attention_received(q, k, window, max_block=3 * window * window)
    assert torch.allclose(tiny_blocks, got, atol=1e-6)
    # scores are not trivially uniform
    assert got.std().item() > 1e-3


def test_window_scores_keep_the_input_dtype():
    q = torch.randn(12, 2, 4, dtype=torch.bfloat16)
    got = window_attention_received(q, q.clone(), 6)
    assert got.dtype == torch.bfloat16
    assert abs(got[:6].float().sum().item() - 6) < 0.1


# =============================================================================================
# Encoder statistics on the tiny models
# =============================================================================================


class _Models:
    def __init__(self, request):
        self.request = request
        self.loaded = {}
        self.inputs = {}

    def path(self, family):
        return self.request.getfixturevalue("tiny_qwen3" if family == "qwen3_omni" else "tiny_qwen2_5")

    def get(self, family, dtype="float32"):
        if (family, dtype) not in self.loaded:
            if dtype == "float32":
                self.loaded[(family, dtype)] = load_tiny(self.path(family), family, "sdpa")
            else:
                from seats_exp.models.loading import load_model

                self.loaded[(family, dtype)] = load_model(str(self.path(family)), family=family, dtype=dtype,
                                                          attn_implementation="sdpa", device="cpu")
        return self.loaded[(family, dtype)]

    def clip_inputs(self, family, clip="av"):
        if (family, clip) not in self.inputs:
            clips = self.request.getfixturevalue("clips")
            self.inputs[(family, clip)] = tiny_inputs(self.get(family), clips[clip])
        return self.inputs[(family, clip)]


@pytest.fixture(scope="module")
def models(request):
    return _Models(request)


def _run_encoders(loaded, inputs, dtype=torch.float32):
    """Run only the two encoders, the way the Thinker forward calls them."""
    m = loaded.thinker.model
    with torch.no_grad():
        if "input_features" in inputs:
            m.get_audio_features(inputs["input_features"].to(dtype), inputs["feature_attention_mask"], return_dict=True)
        m.get_video_features(inputs["pixel_values_videos"].to(dtype), inputs["video_grid_thw"], return_dict=True)


def _counts(loaded, inputs):
    ids = inputs["input_ids"][0]
    return int((ids == loaded.adapter.video_token_id).sum()), int((ids == loaded.adapter.audio_token_id).sum())


def _tokens_per_grid(loaded, inputs) -> int:
    grid = inputs["video_grid_thw"][0]
    return int(grid[1] * grid[2]) // loaded.adapter.spatial_merge_size ** 2


@pytest.mark.parametrize("family", FAMILY_PARAMS)
def test_stats_shapes_and_window_sums(models, family):
    loaded = models.get(family)
    inputs, _ = models.clip_inputs(family)
    n_video, n_audio = _counts(loaded, inputs)
    per_grid = _tokens_per_grid(loaded, inputs)
    grids = n_video // per_grid
    vit = loaded.adapter.vision_encoder.blocks[-1].attn
    audio_attn = loaded.adapter.audio_encoder.layers[-1].self_attn

    collectors = {g: EncoderStatsCollector(loaded.adapter, ALL_STATS, StatsRequest(video_window_grids=g))
                  for g in (1, 2, 3)}
    for c in collectors.values():
        c.attach()
    try:
        _run_encoders(loaded, inputs)
    finally:
        for c in collectors.values():
            c.detach()

    st = collectors[2].result()
    assert st.video_attn.shape == (n_video,)
    assert st.audio_attn.shape == (n_audio,)
    assert st.video_keys.shape == (n_video, vit.head_dim if hasattr(vit, "head_dim") else vit.dim // vit.num_heads)
    assert st.audio_keys.shape == (n_audio, audio_attn.head_dim)

    # video: a window of g grids holds g*per_grid LLM tokens = 4*g*per_grid patches whose scores sum
    # to the patch count; the 2x2 mean-pooling divides by 4 -> the pooled window sums to its token count.
    for g, c in collectors.items():
        scores = c.result().video_attn
        for start in range(0, grids, g):
            size = min(g, grids - start) * per_grid
            block = scores[start * per_grid: start * per_grid + size]
            assert abs(block.sum().item() - size) < 1e-3, (g, start)
        assert scores.min().item() > 0
    assert not torch.allclose(collectors[1].result().video_attn, collectors[2].result().video_attn)

    # audio: Qwen2.5 windows of 100 pre-pooling frames -> 50 pooled tokens summing to 50;
    # Qwen3 windows of 2 s * 26 = 52 tokens (no pooling), the tail window sums to its length.
    audio = st.audio_attn
    window = 50 if family == "qwen2_5_omni" else 52
    full = n_audio // window
    for w in range(full):
        assert abs(audio[w * window:(w + 1) * window].sum().item() - window) < 1e-3
    if family == "qwen3_omni":
        tail = n_audio - full * window
        assert tail > 0 and abs(audio[full * window:].sum().item() - tail) < 1e-3


def _window_order(grid_t: int, grid_h: int, grid_w: int, merge: int, units_per_window: int) -> list[int]:
    """Qwen2.5 ViT window layout, written from its description: per temporal grid, merge units are
    visited window by window (windows of units_per_window x units_per_window merge units in raster
    order, the last row/column of windows possibly smaller), units in raster order inside a window.
    Returns the natural (raster) index of the merge unit at every window-order position."""
    h, w = grid_h // merge, grid_w // merge
    order = []
    for t in range(grid_t):
        for wy in range(0, h, units_per_window):
            for wx in range(0, w, units_per_window):
                for y in range(wy, min(wy + units_per_window, h)):
                    for x in range(wx, min(wx + units_per_window, w)):
                        order.append(t * h * w + y * w + x)
    return order


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


@pytest.mark.parametrize("family", FAMILY_PARAMS)
def test_video_scores_match_an_independent_natural_order_computation(models, family):
    """Recompute the last ViT block's attention on natural-order patches, per window of 2 grids,
    pool each 2x2 merge unit (4 consecutive patches), compare with the collector (LLM order)."""
    loaded = models.get(family)
    inputs, _ = models.clip_inputs(family)
    visual = loaded.adapter.vision_encoder
    attn = visual.blocks[-1].attn
    captured = {}

    def capture(module, args, kwargs):
        captured["hidden"] = (args[0] if args else kwargs["hidden_states"]).detach().clone()
        captured["cos_sin"] = tuple(x.detach().clone() for x in kwargs["position_embeddings"])

    collector = EncoderStatsCollector(loaded.adapter, frozenset({VIDEO_ATTN}), StatsRequest(video_window_grids=2))
    collector.attach()
    handle = attn.register_forward_pre_hook(capture, with_kwargs=True)
    try:
        _run_encoders(loaded, {k: v for k, v in inputs.items() if k != "input_features"})
    finally:
        handle.remove()
        collector.detach()

    grid_t, grid_h, grid_w = (int(x) for x in inputs["video_grid_thw"][0])
    merge = loaded.adapter.spatial_merge_size
    unit = merge * merge
    hidden, (cos, sin) = captured["hidden"], captured["cos_sin"]
    n = hidden.shape[0]
    if family == "qwen2_5_omni":
        units_per_window = visual.window_size // visual.patch_size // merge
        order = torch.tensor(_window_order(grid_t, grid_h, grid_w, merge, units_per_window))
        assert not torch.equal(order, torch.arange(order.numel()))  # the reordering is real here

        def natural(x):  # window order -> natural order, in whole merge units
            out = torch.empty_like(x).reshape(-1, unit, *x.shape[1:])
            out[order] = x.reshape(-1, unit, *x.shape[1:])
            return out.reshape(x.shape)

        hidden, cos, sin = natural(hidden), natural(cos), natural(sin)
        q = attn.q(hidden).reshape(n, attn.num_heads, -1)
        k = attn.k(hidden).reshape(n, attn.num_heads, -1)
    else:
        q, k, _ = attn.qkv(hidden).reshape(n, 3, attn.num_heads, -1).unbind(1)
    q = q * cos[:, None] + _rotate_half(q) * sin[:, None]
    k = k * cos[:, None] + _rotate_half(k) * sin[:, None]

    window = 2 * grid_h * grid_w
    head_dim = q.shape[2]
    scores = torch.empty(n, dtype=torch.float64)
    for start in range(0, n, window):
        qs = q[start:start + window].double().transpose(0, 1)  # [H, w, d]
        ks = k[start:start + window].double().transpose(0, 1)
        probs = torch.softmax(qs @ ks.transpose(1, 2) / math.sqrt(head_dim), dim=-1)  # [H, w, w]
        scores[start:start + window] = probs.mean(0).sum(0)
    expected = scores.reshape(-1, unit).mean(1)  # one score per merge unit, raster order

    got = collector.result().video_attn
    assert got.shape == expected.shape
    assert torch.allclose(got.double(), expected, atol=1e-4)
    if family == "qwen2_5_omni":  # leaving the window order in place would be caught
        assert not torch.allclose(expected[order], expected, atol=1e-3)


class _StatsProbe(BaseSelector):
    name = "stats_probe"
    needs = ALL_STATS

    def __init__(self):
        self.fail = False
        self.seen = []

    def before_llm(self, ctx):
        self.seen.append(ctx.stats)
        if self.fail:
            raise RuntimeError("selector failed on purpose")


def _engine_with_stats(loaded, probe):
    from seats_exp.engine import Engine

    stats = EncoderStatsCollector(loaded.adapter, probe.needs, probe.stats_request)
    return Engine(loaded.thinker, loaded.adapter, probe, stats=stats), stats


def _call(loaded, inputs, has_audio, how):
    loaded.thinker.model.rope_deltas = None
    with torch.no_grad():
        if how == "generate":
            loaded.thinker.generate(**inputs, use_audio_in_video=has_audio, max_new_tokens=2, do_sample=False)
        else:
            loaded.thinker(**inputs, use_audio_in_video=has_audio)


@pytest.mark.parametrize("family", FAMILY_PARAMS)
@pytest.mark.parametrize("how", ["generate", "forward"])
def test_stats_cleared_per_call_and_silent_clip(models, family, how):
    loaded = models.get(family)
    av, has_audio = models.clip_inputs(family, "av")
    silent, silent_audio = models.clip_inputs(family, "silent")
    assert has_audio and not silent_audio
    probe = _StatsProbe()
    engine, stats = _engine_with_stats(loaded, probe)
    with engine:
        _call(loaded, av, True, how)
        assert stats.result().video_attn is None and stats.result().audio_attn is None  # consumed
        _call(loaded, silent, False, how)
        _call(loaded, av, True, how)
    first, second, third = probe.seen
    n_video, n_audio = _counts(loaded, av)
    assert first.video_attn.shape == (n_video,) and first.audio_attn.shape == (n_audio,)
    assert first.video_keys is not None and first.audio_keys is not None
    assert second.audio_attn is None and second.audio_keys is None  # silent clip: nothing, no assert
    assert second.video_attn.shape == (_counts(loaded, silent)[0],)
    assert third.audio_attn.shape == (n_audio,)
    assert torch.allclose(first.video_attn, third.video_attn) and torch.allclose(first.audio_attn, third.audio_attn)


def test_stats_of_a_failed_prefill_do_not_leak(models):
    loaded = models.get("qwen2_5_omni")
    av, _ = models.clip_inputs("qwen2_5_omni", "av")
    silent, _ = models.clip_inputs("qwen2_5_omni", "silent")
    probe = _StatsProbe()
    engine, _ = _engine_with_stats(loaded, probe)
    with engine:
        probe.fail = True
        with pytest.raises(RuntimeError, match="on purpose"):
            _call(loaded, av, True, "generate")
        probe.fail = False
        _call(loaded, silent, False, "generate")
    assert probe.seen[-1].audio_attn is None  # the silent clip must not see the failed sample's audio


def test_stats_dtype_option(models):
    family = "qwen2_5_omni"
    loaded = models.get(family, "bfloat16")
    inputs, _ = models.clip_inputs(family)
    needs = frozenset({VIDEO_ATTN, AUDIO_ATTN, VIDEO_KEYS, AUDIO_KEYS})
    faithful = EncoderStatsCollector(loaded.adapter, needs, StatsRequest())  # dtype="model"
    precise = EncoderStatsCollector(loaded.adapter, needs, StatsRequest(dtype="float32"))
    faithful.attach()
    precise.attach()
    try:
        _run_encoders(loaded, inputs, torch.bfloat16)
    finally:
        faithful.detach()
        precise.detach()
    a, b = faithful.result(), precise.result()
    for name in ("video_attn", "audio_attn", "video_keys", "audio_keys"):
        assert getattr(a, name).dtype == torch.bfloat16, name
        assert getattr(b, name).dtype == torch.float32, name
        assert torch.allclose(getattr(a, name).float(), getattr(b, name), rtol=0.05, atol=0.05), name
    # fp32 window sums are exact; bf16 probabilities are rounded before the sums
    per_window = 2 * _tokens_per_grid(loaded, inputs)
    fp32_sums = b.video_attn.reshape(-1, per_window).sum(-1)
    assert torch.allclose(fp32_sums, torch.full_like(fp32_sums, per_window), atol=1e-3)
    assert not torch.equal(a.video_attn.float(), b.video_attn)


def test_collector_installs_only_what_is_needed_and_detaches(models):
    loaded = models.get("qwen3_omni")
    visual = loaded.adapter.vision_encoder
    audio_layer = loaded.adapter.audio_encoder.layers[-1].self_attn
    video_only = EncoderStatsCollector(loaded.adapter, frozenset({VIDEO_ATTN}), StatsRequest())
    video_only.attach()
    video_only.attach()  # idempotent
    assert len(visual.blocks[-1].attn._forward_pre_hooks) == 1 and len(audio_layer._forward_pre_hooks) == 0
    video_only.detach()
    audio_only = EncoderStatsCollector(loaded.adapter, frozenset({AUDIO_KEYS}), StatsRequest())
    audio_only.attach()
    assert len(visual.blocks[-1].attn._forward_pre_hooks) == 0 and len(audio_layer._forward_pre_hooks) == 1
    inputs, _ = models.clip_inputs("qwen3_omni")
    _run_encoders(loaded, inputs)
    res = audio_only.result()
    audio_only.detach()
    assert res.audio_keys is not None and res.audio_attn is None and res.video_attn is None
    assert len(audio_layer._forward_pre_hooks) == 0 and len(visual._forward_pre_hooks) == 0


@pytest.mark.parametrize("family", FAMILY_PARAMS)
def test_adapter_dims_feed_the_meter(models, family):
    loaded = models.get(family)
    dims = loaded.adapter.dims()
    t = loaded.thinker.config.text_config
    assert (dims.num_layers, dims.hidden, dims.heads, dims.kv_heads, dims.vocab) == (
        t.num_hidden_layers, t.hidden_size, t.num_attention_heads, t.num_key_value_heads, t.vocab_size)
    if family == "qwen3_omni":  # tiny: every layer is sparse (decoder_sparse_step 1), top-2 of 4 experts
        assert dims.moe_layers == tuple(range(8))
        assert (dims.intermediate, dims.experts_per_token, dims.num_experts) == (32, 2, 4)
        # one MoE layer on S tokens, by hand: D=64, H*d=64, Hkv*d=32
        s = 10
        assert layer_flops(dims, s, 0) == (2 * s * 64 * 64 + 2 * s * 64 * 32 + 2 * s * s * 64
                                           + 3 * s * 64 * 32 * 2 + s * 64 * 4)
    else:
        assert dims.experts_per_token == 0 and dims.intermediate == t.intermediate_size
        s = 10
        assert layer_flops(dims, s) == 2 * s * 64 * 64 + 2 * s * 64 * 32 + 2 * s * s * 64 + 3 * s * 64 * 128
