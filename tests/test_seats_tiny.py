"""End-to-end proof: a full SEATS run on the tiny Thinkers selects what the spec selects, stage by stage.

The real pipeline runs (``thinker.generate(..., use_audio_in_video=True, max_new_tokens=1)`` with
the ``seats`` selector attached through ``seats_exp.runner.attach_engine``).  The test observes it
only from the outside:

* the selector's ``before_llm`` / ``after_layer`` are wrapped (instance attributes) to record the
  context each call received (modality, embeddings, encoder statistics, positions) and the
  ``Selection`` it returned;
* forward hooks registered *here* record the input of the last audio-encoder layer, the raw output
  of every decoder module (before the engine cuts it) and the rotary cos/sin every decoder module
  actually received.

Every stage is then recomputed from seats-reference (sections 0, 6, 7, 8, 9, 10) with plain loops
and NumPy written in this file -- nothing from ``methods/seats.py`` is called:

* schedule (section 8) -> the selector's keep ratios;
* audio encoder statistics (section 6.2 / 6.3) from the last audio layer's input -> ``ctx.stats``;
* Stage I (section 7) on the recorded embeddings and statistics -> the ``before_llm`` keep mask;
* Stage II (section 9) at layers 3, 4, 5: relevance from the hidden states handed to the selector
  (RMSNorm, q/k projections, rotary with the cos/sin the layer received, last text token,
  head-mean softmax), totals, contiguity windows, inter-window budget, intra-window split, windowed
  top-k -> the ``after_layer`` keep masks;
* Stage III (section 10) after layer 6 -> only text remains;
* the engine's ``PrefillRecord`` (lengths / per-modality counts entering every layer, drop events)
  matches the cumulative reference masks.

fp32 tiny models (conftest), CPU.  Ratio pairs are the reference sweep's R=35 and R=15 pairs.
The last two tests pin where Qwen3's DeepStack addition sits relative to the Stage-II hook:
upstream (and the engine) score a module's output *after* its DeepStack rows are added.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import load_tiny, tiny_inputs
from methods import ModelInfo, build_selector
from seats_exp.runner import attach_engine

TEXT, VIDEO, AUDIO = 0, 1, 2  # modality codes (seats_exp.selection)

# Tiny-model SEATS defaults (8 layers): drops after layers 3, 4, 5; late_block_layer 7 -> Stage III
# after layer 6; temperature as for the family's reference model.
TINY_LAYERS = 8
DROP_LAYERS = [3, 4, 5]
LATE_BLOCK_LAYER = 7
TEMPERATURE = {"qwen2_5_omni": 0.1, "qwen3_omni": 0.3}
ENCODER_RATIO_SCALE = 1.4
GRID_IN_WINDOW = 2
STAGE1_AUDIO_WINDOW = 2 * 25  # sec_in_audio_window x 25, hard-coded for both models (section 2 item 4)
AUDIO_STAT_WINDOW = {"qwen2_5_omni": 2 * 50, "qwen3_omni": 2 * 26}  # pre-pooling units (section 6.2/6.3)

CASES = [
    pytest.param("qwen2_5_omni", 0.30, 0.65, id="qwen2_5-R35"),
    pytest.param("qwen2_5_omni", 0.10, 0.45, id="qwen2_5-R15"),
    pytest.param("qwen3_omni", 0.32, 0.70, id="qwen3-R35"),
    pytest.param("qwen3_omni", 0.12, 0.50, id="qwen3-R15"),
]

# Exact mask comparisons are only meaningful if no decision of the reference sits on a float
# near-tie (fp32 implementation vs float64 reference).  Every decision's margin is recorded by kind
# and checked: Stage-I greedy picks (gap between the best and the runner-up, in units of the
# largest deviation of the fp32 weighted-distance matrix from the float64 one in that window),
# Stage-II cuts (relative score gap at each window's budget boundary) and every fp32 rounding
# (distance of the fraction from .5).
MIN_MARGIN = {"stage1": 2.0, "stage2": 1e-5, "round": 1e-4}

# The synthetic clip is a solid colour with a steady tone and the tiny encoders are random, so
# their outputs are near-duplicates (e.g. the tiny Qwen3 audio convs pass ~1e-5 of the signal:
# tokens repeat with the 13-token chunk period) and Stage I's max-min picks would be decided by
# float noise.  The processor's real layout (grids, masks, placeholder expansion) is kept; only
# the pixel patches and mel features are replaced by seeded noise of the same shapes (mel
# features amplified until the tiny audio encoder's outputs are distinct).
AUDIO_NOISE_SCALE = {"qwen2_5_omni": 10.0, "qwen3_omni": 1000.0}


# =============================================================================================
# Independent references (written from the spec; loops + NumPy)
# =============================================================================================


def ref_schedule(rho: float, num_layers: int, drops: list[int], late: int, scale: float) -> tuple[float, list[float]]:
    """Section 8: Stage-I ratio e = scale * rho and the per-drop keep ratios (4-decimal rounded)."""
    e = rho * scale
    r = min(late - 1, num_layers)
    d = [x for x in sorted(drops) if x < r]
    seg = [b - a for a, b in zip([0, *d], [*d, r])]
    w = [math.exp(k) for k in range(len(d))]
    delta = [x / sum(w) for x in w]

    def total(f):
        n, s = e, seg[0] * e
        for k in range(len(d)):
            n = max(n - f * e * delta[k], 0.0)
            s += seg[k + 1] * n
        return s

    target = rho * num_layers
    if target >= total(0.0):
        f = 0.0
    elif target <= total(1.0):
        f = 1.0
    else:
        lo, hi = 0.0, 1.0
        for _ in range(50):
            mid = (lo + hi) / 2
            if total(mid) > target:
                lo = mid
            else:
                hi = mid
        f = (lo + hi) / 2
    levels = [e]
    for k in range(len(d)):
        levels.append(max(levels[-1] - f * e * delta[k], 1e-12))
    keep = [round(levels[k + 1] / levels[k], 4) if levels[k] > 1e-12 else 0.0 for k in range(len(d))]
    return e, keep


def ref_window_attention_received(q: np.ndarray, k: np.ndarray, window: int) -> np.ndarray:
    """Section 6: per window, score(j) = sum_i mean_h softmax_row(q_h k_h^T / sqrt(d))[i, j].

    q, k: [N, H, d] float64.
    """
    n_units, heads, d = q.shape
    out = np.zeros(n_units)
    for start in range(0, n_units, window):
        stop = min(start + window, n_units)
        mean_p = np.zeros((stop - start, stop - start))
        for h in range(heads):
            logits = q[start:stop, h] @ k[start:stop, h].T / math.sqrt(d)
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            mean_p += p / p.sum(axis=1, keepdims=True)
        mean_p /= heads
        for j in range(stop - start):
            out[start + j] = mean_p[:, j].sum()
    return out


def ref_audio_stats(layer: torch.nn.Module, layer_input: torch.Tensor, family: str) -> np.ndarray:
    """Sections 6.2/6.3 from the last audio-encoder layer's input [N, C] (the layer normalises first)."""
    x = layer_input.detach().double().numpy()
    ln = layer.self_attn_layer_norm
    x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + ln.eps)
    x = x * ln.weight.detach().double().numpy() + ln.bias.detach().double().numpy()
    attn = layer.self_attn
    heads = attn.num_heads

    def proj(lin):
        y = x @ lin.weight.detach().double().numpy().T
        if lin.bias is not None:
            y = y + lin.bias.detach().double().numpy()
        return y.reshape(x.shape[0], heads, -1)

    scores = ref_window_attention_received(proj(attn.q_proj), proj(attn.k_proj), AUDIO_STAT_WINDOW[family])
    if family == "qwen2_5_omni":  # drop an odd last frame, then average consecutive pairs
        n = len(scores) - len(scores) % 2
        scores = np.array([(scores[i] + scores[i + 1]) / 2 for i in range(0, n, 2)])
    return scores


def ref_stage1_window(x: np.ndarray, a: np.ndarray, k: int, margins: dict) -> list[int]:
    """Section 7.3: attention-weighted greedy max-min selection in one window; sorted kept indices."""
    n = len(x)
    unit = np.stack([row / (math.sqrt(float(row @ row)) + 1e-8) for row in x])
    dist = 1.0 - unit @ unit.T
    m_full = dist * (a * 1e6)[None, :]  # columns scaled only
    # the same matrix the way the spec computes it (fp32): its deviation bounds the float noise
    unit32 = (x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-8)).astype(np.float32)
    m32 = (np.float32(1) - unit32 @ unit32.T) * (a.astype(np.float32) * np.float32(1e6))[None, :]
    noise = float(np.abs(m32 - m_full).max())
    second = np.array([sorted(m_full[:, j])[1] for j in range(n)])
    order = np.sort(second)[::-1]
    margins["stage1"].append((order[0] - order[1]) / noise)
    pick = int(np.argmax(second))  # first index on ties
    selected = [pick]
    running = m_full[pick].copy()
    running[pick] = -1.0
    for _ in range(k - 1):
        best = np.sort(running)[::-1]
        margins["stage1"].append((best[0] - best[1]) / noise)
        pick = int(np.argmax(running))
        selected.append(pick)
        running = np.minimum(running, m_full[pick])
        running[pick] = -1.0
    return sorted(selected)


def ref_stage1(embeds: np.ndarray, attn: np.ndarray, window: int, ratio: float, margins: dict) -> np.ndarray:
    """Sections 7.1-7.2: consecutive windows over one modality's tokens, k = max(1, min(n, round(e n)))."""
    keep = np.ones(len(embeds), dtype=bool)
    if ratio >= 1.0:
        return keep
    for start in range(0, len(embeds), window):
        stop = min(start + window, len(embeds))
        n = stop - start
        k = max(1, min(n, round(ratio * n)))
        if k >= n:
            continue
        chosen = ref_stage1_window(embeds[start:stop], attn[start:stop], k, margins)
        keep[start:stop] = False
        for j in chosen:
            keep[start + j] = True
    return keep


def _round_margin(x: float, margins: dict) -> None:
    """fp32 roundings (round32) only: Python rounds of float64 products are bit-identical in both."""
    margins["round"].append(abs(abs(x - math.floor(x)) - 0.5))


def _rms_norm(x: np.ndarray, module: torch.nn.Module) -> np.ndarray:
    eps = getattr(module, "variance_epsilon", None) or module.eps
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * module.weight.detach().double().numpy()


def _linear(x: np.ndarray, lin: torch.nn.Linear) -> np.ndarray:
    y = x @ lin.weight.detach().double().numpy().T
    return y if lin.bias is None else y + lin.bias.detach().double().numpy()


def _rotate_half(x: np.ndarray) -> np.ndarray:
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def ref_relevance(layer, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, query: int, family: str):
    """Section 9.1: head-mean softmax attention of position ``query`` over every position.

    hidden [S, D] (the drop layer's output), cos/sin [S, d] as the layer received them.
    """
    attn = layer.self_attn
    hd = attn.head_dim
    x = _rms_norm(hidden.detach().double().numpy(), layer.input_layernorm)
    q = _linear(x, attn.q_proj).reshape(x.shape[0], -1, hd)
    k = _linear(x, attn.k_proj).reshape(x.shape[0], -1, hd)
    if family == "qwen3_omni":  # per-head RMSNorm before RoPE
        q, k = _rms_norm(q, attn.q_norm), _rms_norm(k, attn.k_norm)
    c, s = cos.detach().double().numpy()[:, None, :], sin.detach().double().numpy()[:, None, :]
    q = q * c + _rotate_half(q) * s
    k = k * c + _rotate_half(k) * s
    heads, groups = q.shape[1], q.shape[1] // k.shape[1]
    scores = np.zeros(x.shape[0])
    for h in range(heads):
        logits = k[:, h // groups, :] @ q[query, h, :] / math.sqrt(hd)
        p = np.exp(logits - logits.max())
        scores += p / p.sum()
    return scores / heads


def _runs(positions: list[int]) -> list[list[int]]:
    """Contiguous runs of ascending sequence positions, as lists of ordinals."""
    runs: list[list[int]] = []
    for ordinal, pos in enumerate(positions):
        if runs and pos == positions[ordinal - 1] + 1:
            runs[-1].append(ordinal)
        else:
            runs.append([ordinal])
    return runs


def _softmax32(values: list[float], temperature: float) -> np.ndarray:
    z = np.array(values, dtype=np.float32) / np.float32(temperature)
    e = np.exp(z - z.max())
    return (e / e.sum()).astype(np.float32)


def _stable_desc(scores: np.ndarray, members: list[int]) -> list[int]:
    return sorted(members, key=lambda i: (-float(scores[i]), i))


def ref_stage2(modality: np.ndarray, scores: np.ndarray, rho_v: float, rho_a: float, temperature: float,
               margins: dict, info: dict | None = None) -> np.ndarray:
    """Sections 9.2-9.7 over the current sequence; returns the keep mask (text always kept).

    ``info`` (optional) receives the number of temporal windows and whether the windowed path ran.
    """
    info = {} if info is None else info
    vpos = [i for i, m in enumerate(modality) if m == VIDEO]
    apos = [i for i, m in enumerate(modality) if m == AUDIO]
    vs_all = np.array([scores[i] for i in vpos], dtype=np.float32)
    as_all = np.array([scores[i] for i in apos], dtype=np.float32)
    V, A = len(vpos), len(apos)
    kv = max(1, round(rho_v * V)) if V else 0
    ka = max(1, round(rho_a * A)) if A else 0
    keep = np.ones(len(modality), dtype=bool)

    vruns, aruns = _runs(vpos), _runs(apos)
    windows = [(vruns[i], aruns[i]) for i in range(min(len(vruns), len(aruns)))]
    windows += [(r, []) for r in vruns[len(aruns):]]
    windows += [([], r) for r in aruns[len(vruns):]]
    info["windows"] = len(windows)
    info["windowed"] = len(windows) > 1 and V > 0 and A > 0

    def keep_best(values, budget_of_window, window_of, positions):
        counter: dict[int, int] = {}
        kept = set()
        ordered = _stable_desc(values, list(range(len(values))))
        for rank, o in enumerate(ordered):
            w = window_of[o]
            if counter.get(w, 0) < budget_of_window[w]:
                kept.add(o)
                # the cut inside this window must not be a near-tie
                nxt = next((p for p in ordered[rank + 1:] if window_of[p] == w), None)
                if counter.get(w, 0) == budget_of_window[w] - 1 and nxt is not None:
                    margins["stage2"].append(float(abs(values[o] - values[nxt]) / max(abs(values[o]), 1e-30)))
            counter[w] = counter.get(w, 0) + 1
        for o, pos in enumerate(positions):
            keep[pos] = o in kept

    if len(windows) <= 1 or V == 0 or A == 0:  # 9.7 global fallback
        keep_best(vs_all, {0: kv}, [0] * V, vpos)
        keep_best(as_all, {0: ka}, [0] * A, apos)
        return keep

    nw = len(windows)
    vsz = [len(v) for v, _ in windows]
    asz = [len(a) for _, a in windows]
    cap = [vsz[i] + asz[i] for i in range(nw)]
    vimp = [float(np.float32(sum(vs_all[o] for o in v) if v else 0.0) / np.float32(max(len(v), 1))) for v, _ in windows]
    aimp = [float(np.float32(sum(as_all[o] for o in a) if a else 0.0) / np.float32(max(len(a), 1))) for _, a in windows]
    wv, wa = _softmax32(vimp, temperature), _softmax32(aimp, temperature)
    w = ((wv + wa) / np.float32(2)).astype(np.float32)
    K = kv + ka
    b = [min(max(int(np.round(w[i] * np.float32(K))), 1), cap[i]) for i in range(nw)]
    for i in range(nw):
        _round_margin(float(w[i] * np.float32(K)), margins)
    while sum(b) != K:
        if sum(b) > K:
            cand = [i for i in range(nw) if b[i] > 1]
            if not cand:
                break
            i = max(cand, key=lambda j: (b[j], -j))
            b[i] -= 1
        else:
            cand = [i for i in range(nw) if b[i] < cap[i]]
            if not cand:
                break
            i = min(cand, key=lambda j: (b[j], j))
            b[i] += 1

    vb, ab = [0] * nw, [0] * nw
    for i in range(nw):
        v_share = wv[i] * np.float32(kv)
        a_share = wa[i] * np.float32(ka)
        v_frac = np.float32(v_share / (v_share + a_share + np.float32(1e-12)))
        vb[i] = min(max(int(np.round(np.float32(b[i]) * v_frac)), 0), vsz[i])
        _round_margin(float(np.float32(b[i]) * v_frac), margins)
        ab[i] = min(max(b[i] - vb[i], 0), asz[i])
        rem = b[i] - vb[i] - ab[i]
        extra_v = min(max(rem, 0), max(vsz[i] - vb[i], 0))
        vb[i] += extra_v
        rem -= extra_v
        extra_a = min(max(rem, 0), max(asz[i] - ab[i], 0))
        ab[i] += extra_a
        if vsz[i] > 0 and vb[i] < 1:
            vb[i] = 1
            if ab[i] > 1:
                ab[i] = max(1, min(asz[i], max(b[i] - vb[i], 0)))
        if asz[i] > 0 and ab[i] < 1:
            ab[i] = 1
            if vb[i] > 1:
                vb[i] = max(1, min(vsz[i], max(b[i] - ab[i], 0)))

    vwin = [0] * V
    awin = [0] * A
    for i, (v, a) in enumerate(windows):
        for o in v:
            vwin[o] = i
        for o in a:
            awin[o] = i
    keep_best(vs_all, dict(enumerate(vb)), vwin, vpos)
    keep_best(as_all, dict(enumerate(ab)), awin, apos)
    return keep


# =============================================================================================
# Running the real pipeline with outside observation
# =============================================================================================

_LOADED: dict[str, tuple] = {}


def _loaded(request, family: str):
    if family not in _LOADED:
        path = request.getfixturevalue("tiny_qwen2_5" if family == "qwen2_5_omni" else "tiny_qwen3")
        clip = request.getfixturevalue("clips")["av"]
        loaded = load_tiny(path, family)
        inputs, has_audio = tiny_inputs(loaded, clip)
        assert has_audio
        gen = torch.Generator().manual_seed(1234)
        pixels = inputs["pixel_values_videos"]
        inputs["pixel_values_videos"] = torch.randn(pixels.shape, generator=gen, dtype=pixels.dtype)
        features, valid = inputs["input_features"], inputs["feature_attention_mask"]
        noise = torch.randn(features.shape, generator=gen, dtype=features.dtype)
        inputs["input_features"] = AUDIO_NOISE_SCALE[family] * noise * valid[:, None, :].to(features.dtype)
        _LOADED[family] = (loaded, inputs)
    return _LOADED[family]


def _run_observed(loaded, inputs, selector):
    """Run generate() with the selector attached; return what the selector saw and the record."""
    adapter = loaded.adapter
    lm = adapter.language_model
    seen: dict = {"after": {}, "cos_sin": {}, "raw_out": {}, "layer_in": {}, "audio_in": None, "llm_in": None}

    inner_before, inner_after = selector.before_llm, selector.after_layer

    def before_llm(ctx):
        out = inner_before(ctx)
        seen["before"] = {
            "modality": ctx.modality.clone(), "embeds": ctx.embeds.clone(),
            "video_attn": None if ctx.stats.video_attn is None else ctx.stats.video_attn.clone(),
            "audio_attn": None if ctx.stats.audio_attn is None else ctx.stats.audio_attn.clone(),
            "original_index": ctx.original_index.clone(), "tokens_per_grid": ctx.video_tokens_per_grid,
            "keep": None if out is None else out.keep.clone(), "label": None if out is None else out.label,
        }
        return out

    def after_layer(layer, hidden, ctx):
        out = inner_after(layer, hidden, ctx)
        seen["after"][layer] = {
            "modality": ctx.modality.clone(), "hidden": hidden.clone(), "position_ids": ctx.position_ids.clone(),
            "original_index": ctx.original_index.clone(),
            "engine_scores": ctx.score_last_text(layer - 1, hidden).clone(),
            "keep": None if out is None else out.keep.clone(), "label": None if out is None else out.label,
        }
        return out

    selector.before_llm, selector.after_layer = before_llm, after_layer
    handles = []

    def audio_pre(module, args, kwargs):
        seen["audio_in"] = (args[0] if args else kwargs["hidden_states"]).detach().clone()

    def llm_pre(module, args, kwargs):
        if kwargs.get("inputs_embeds") is not None and kwargs["inputs_embeds"].shape[1] > 1:
            seen["llm_in"] = kwargs["inputs_embeds"][0].clone()
            seen["deepstack"] = [e.clone() for e in kwargs.get("deepstack_visual_embeds") or []]

    def layer_pre(i):
        def hook(module, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            if hidden.shape[1] > 1:  # prefill only
                cos, sin = kwargs["position_embeddings"]
                seen["cos_sin"][i] = (cos[0].clone(), sin[0].clone())
                seen["layer_in"][i] = hidden[0].clone()
        return hook

    def layer_post(i):
        def hook(module, args, kwargs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            if hidden.shape[1] > 1:
                seen["raw_out"][i] = hidden[0].clone()
        return hook

    # Prepended hooks run before the engine's: the unpruned LLM input and each module's raw output.
    handles.append(lm.register_forward_pre_hook(llm_pre, with_kwargs=True, prepend=True))
    for i, layer in enumerate(adapter.layers):
        handles.append(layer.register_forward_hook(layer_post(i), with_kwargs=True, prepend=True))
    handles.append(adapter.audio_encoder.layers[-1].register_forward_pre_hook(audio_pre, with_kwargs=True))
    engine = attach_engine(loaded, selector, "all_executed")
    try:
        # Appended after the engine's pre-hooks: the cos/sin each module actually receives.
        for i, layer in enumerate(adapter.layers):
            handles.append(layer.register_forward_pre_hook(layer_pre(i), with_kwargs=True))
        loaded.thinker.model.rope_deltas = None
        with torch.no_grad():
            loaded.thinker.generate(**inputs, use_audio_in_video=True, max_new_tokens=1, do_sample=False)
        records = engine.pop_records()
    finally:
        engine.detach()
        for h in handles:
            h.remove()
        selector.before_llm, selector.after_layer = inner_before, inner_after
    assert len(records) == 1
    return seen, records[0]


def _build(family: str, rho_v: float, rho_a: float, adapter):
    info = ModelInfo(f"tiny_{family}", family, adapter.num_layers, adapter.audio_tokens_per_second)
    return build_selector("seats", {}, rho_v, rho_a, info)


def _counts(modality: np.ndarray) -> dict:
    return {"video": int((modality == VIDEO).sum()), "audio": int((modality == AUDIO).sum()),
            "text": int((modality == TEXT).sum())}


# =============================================================================================
# The proof
# =============================================================================================


_RUNS: dict[tuple, tuple] = {}


def _observed(request, family: str, rho_v: float, rho_a: float):
    """One observed SEATS run per (family, pair), shared by the tests below."""
    key = (family, rho_v, rho_a)
    if key not in _RUNS:
        loaded, inputs = _loaded(request, family)
        selector = _build(family, rho_v, rho_a, loaded.adapter)
        seen, record = _run_observed(loaded, inputs, selector)
        _RUNS[key] = (selector, seen, record)
    return _RUNS[key]


def _assert_no_near_ties(margins: dict) -> None:
    for kind, threshold in MIN_MARGIN.items():
        if margins[kind]:
            assert min(margins[kind]) > threshold, f"{kind}: a reference decision sits on a float near-tie"


def _prompt_modality(inputs, adapter) -> np.ndarray:
    ids = inputs["input_ids"][0]
    modality = np.zeros(len(ids), dtype=np.int64)
    modality[(ids == adapter.video_token_id).numpy()] = VIDEO
    modality[(ids == adapter.audio_token_id).numpy()] = AUDIO
    return modality


@pytest.mark.parametrize("family, rho_v, rho_a", CASES)
def test_full_seats_run_matches_reference_stage_by_stage(request, family, rho_v, rho_a):
    loaded, inputs = _loaded(request, family)
    adapter = loaded.adapter
    assert adapter.num_layers == TINY_LAYERS
    selector, seen, record = _observed(request, family, rho_v, rho_a)
    margins: dict[str, list[float]] = {"stage1": [], "stage2": [], "round": []}

    # ---- schedule (section 8) ------------------------------------------------------------------
    e_v, keep_v = ref_schedule(rho_v, TINY_LAYERS, DROP_LAYERS, LATE_BLOCK_LAYER, ENCODER_RATIO_SCALE)
    e_a, keep_a = ref_schedule(rho_a, TINY_LAYERS, DROP_LAYERS, LATE_BLOCK_LAYER, ENCODER_RATIO_SCALE)
    assert (selector.video_encoder_ratio, selector.audio_encoder_ratio) == (e_v, e_a)
    assert (selector.video_keep, selector.audio_keep) == (keep_v, keep_a)
    assert selector.hook_layers(TINY_LAYERS) == {3, 4, 5, 6}

    # ---- what the selector was handed before the LLM ------------------------------------------------
    ids = inputs["input_ids"][0]
    modality0 = _prompt_modality(inputs, adapter)
    before = seen["before"]
    assert np.array_equal(before["modality"].numpy(), modality0)
    assert torch.equal(before["embeds"], seen["llm_in"])  # the merged LLM input, unpruned
    n_video, n_audio = int((modality0 == VIDEO).sum()), int((modality0 == AUDIO).sum())
    grid_t, grid_h, grid_w = (int(x) for x in inputs["video_grid_thw"][0])
    tokens_per_grid = grid_h * grid_w // 4
    assert before["tokens_per_grid"] == tokens_per_grid and n_video == grid_t * tokens_per_grid
    assert before["video_attn"].shape == (n_video,) and before["audio_attn"].shape == (n_audio,)

    # ---- (b) audio encoder statistics from the last audio layer's input --------------------------------
    audio_ref = ref_audio_stats(adapter.audio_encoder.layers[-1], seen["audio_in"], family)
    assert audio_ref.shape == (n_audio,)
    np.testing.assert_allclose(before["audio_attn"].double().numpy(), audio_ref, rtol=1e-5, atol=1e-6)

    # ---- (a) Stage I on the recorded embeddings and statistics -------------------------------------------
    embeds = before["embeds"].double().numpy()
    keep1 = np.ones(len(ids), dtype=bool)
    video_attn, audio_attn = before["video_attn"].double().numpy(), before["audio_attn"].double().numpy()
    keep1[modality0 == VIDEO] = ref_stage1(embeds[modality0 == VIDEO], video_attn, GRID_IN_WINDOW * tokens_per_grid,
                                           e_v, margins)
    keep1[modality0 == AUDIO] = ref_stage1(embeds[modality0 == AUDIO], audio_attn, STAGE1_AUDIO_WINDOW, e_a, margins)
    _assert_no_near_ties(margins)  # before comparing: a mismatch below is then a real difference
    assert before["label"] == "stage1"
    assert np.array_equal(before["keep"].numpy(), keep1)
    # per-window counts (section 7.2) really bit
    assert int(keep1[modality0 == VIDEO].sum()) < n_video and int(keep1[modality0 == AUDIO].sum()) < n_audio

    # ---- (c) Stage II at layers 3, 4, 5; (d) Stage III after layer 6 ---------------------------------------
    original = np.arange(len(ids))[keep1]  # surviving original indices, in sequence order
    modality = modality0[keep1]
    lengths = [len(original)] * DROP_LAYERS[0]  # entering layers 1..3
    counts = [_counts(modality)] * DROP_LAYERS[0]
    lm = adapter.language_model
    for step, layer in enumerate(DROP_LAYERS):
        got = seen["after"][layer]
        assert np.array_equal(got["original_index"].numpy(), original)
        assert np.array_equal(got["modality"].numpy(), modality)
        # the hidden handed over is module layer-1's own output (plus, on Qwen3, the DeepStack rows
        # that module's output receives, as upstream scores it); the cos/sin are what that module
        # received, i.e. the rotary table of the surviving tokens' original M-RoPE positions
        expected_hidden = seen["raw_out"][layer - 1].clone()
        if family == "qwen3_omni" and layer - 1 < len(seen["deepstack"]):
            video_now = got["modality"] == VIDEO
            ranks = _video_ordinals(inputs, adapter, got["original_index"])
            expected_hidden[video_now] += seen["deepstack"][layer - 1][ranks[video_now]]
        torch.testing.assert_close(got["hidden"], expected_hidden, rtol=0, atol=1e-6)
        cos, sin = seen["cos_sin"][layer - 1]
        want_cos, want_sin = lm.rotary_emb(got["hidden"][None], got["position_ids"][:, None, :])
        torch.testing.assert_close(cos, want_cos[0], rtol=0, atol=1e-6)
        torch.testing.assert_close(sin, want_sin[0], rtol=0, atol=1e-6)

        query = int(np.nonzero(modality == TEXT)[0][-1])
        scores = ref_relevance(adapter.layers[layer - 1], got["hidden"], cos, sin, query, family)
        np.testing.assert_allclose(got["engine_scores"].double().numpy(), scores, rtol=1e-4, atol=1e-8)

        info: dict = {}
        keep = ref_stage2(modality, scores.astype(np.float32), keep_v[step], keep_a[step], TEMPERATURE[family],
                          margins, info)
        # the tiny layouts: Qwen2.5 two aligned (video, audio) windows; Qwen3 three paired windows
        # plus a video-only one (4 video runs, 3 audio runs) -- the windowed path of 9.4-9.6
        assert info == {"windows": 2 if family == "qwen2_5_omni" else 4, "windowed": True}
        _assert_no_near_ties(margins)
        assert got["label"] == f"stage2.{step + 1}"
        assert np.array_equal(got["keep"].numpy(), keep), f"Stage II step {step + 1} (after layer {layer})"
        assert not keep.all()
        original, modality = original[keep], modality[keep]
        lengths.append(len(original))
        counts.append(_counts(modality))

    stage3_layer = LATE_BLOCK_LAYER - 1
    got = seen["after"][stage3_layer]
    assert np.array_equal(got["original_index"].numpy(), original)
    assert got["label"] == "stage3"
    assert np.array_equal(got["keep"].numpy(), modality == TEXT)
    original, modality = original[modality == TEXT], modality[modality == TEXT]
    assert np.array_equal(original, np.nonzero(modality0 == TEXT)[0])  # every text token, nothing else
    lengths += [len(original)] * (TINY_LAYERS - stage3_layer)
    counts += [_counts(modality)] * (TINY_LAYERS - stage3_layer)

    last_step = counts[DROP_LAYERS[-1]]  # entering layer 6: both modalities were pruned by Stage II
    assert last_step["video"] < counts[0]["video"] and last_step["audio"] < counts[0]["audio"]

    # ---- (e) the engine's record matches the cumulative reference masks ----------------------------------
    assert record.input_length == len(ids)
    assert record.llm_input_length == int(keep1.sum())
    assert record.layer_lengths == lengths
    assert record.kept_counts == counts
    assert record.final_length == lengths[-1]
    labels = ["stage1", "stage2.1", "stage2.2", "stage2.3", "stage3"]
    after = [0, *DROP_LAYERS, stage3_layer]
    new_lengths = [lengths[0], *lengths[DROP_LAYERS[0]:DROP_LAYERS[-1] + 1], lengths[-1]]
    assert record.events == list(zip(after, new_lengths, labels))
    assert all(margins[kind] for kind in MIN_MARGIN)  # every kind of decision was actually checked


# =============================================================================================
# Qwen3 DeepStack vs the Stage-II hook (tiny model only: the first drop layer is a DeepStack layer)
# =============================================================================================


def test_qwen3_deepstack_is_added_after_the_engine_hook(request):
    """Where the engine's after_layer hook sits relative to Qwen3's DeepStack addition.

    The tiny Qwen3 injects DeepStack rows after modules 0, 1, 2; SEATS' first drop is after layer 3
    (module 2).  The hidden state handed to the selector is module 2's output plus its DeepStack rows
    (upstream's order); the raw output is what gets cut, and the DeepStack rows of the surviving
    video tokens are then added to the cut sequence -- the same as cutting the sum.
    """
    loaded, inputs = _loaded(request, "qwen3_omni")
    _, seen, _ = _observed(request, "qwen3_omni", 0.32, 0.70)
    got = seen["after"][3]
    assert len(seen["deepstack"]) == 3
    keep = got["keep"]
    video = (got["modality"] == VIDEO)
    ordinal = _video_ordinals(inputs, loaded.adapter, got["original_index"])
    with_deepstack = seen["raw_out"][2].clone()
    with_deepstack[video] += seen["deepstack"][2][ordinal[video]]
    torch.testing.assert_close(got["hidden"], with_deepstack, rtol=0, atol=1e-6)  # scored: output + DeepStack
    # what module 3 (layer 4) received: the cut of (module 2 output + DeepStack rows)
    torch.testing.assert_close(seen["layer_in"][3], with_deepstack[keep], rtol=0, atol=1e-6)


def _video_ordinals(inputs, adapter, original_index: torch.Tensor) -> torch.Tensor:
    """Rank of each (original) token among the prompt's video tokens (-1 for non-video)."""
    modality0 = torch.from_numpy(_prompt_modality(inputs, adapter))
    rank = torch.full((modality0.numel(),), -1, dtype=torch.long)
    rank[modality0 == VIDEO] = torch.arange(int((modality0 == VIDEO).sum()))
    return rank[original_index]


def test_qwen3_stage2_scores_module_output_plus_deepstack(request):
    """seats-reference 9.1 / 15 (upstream order): H = module d-1's output + its DeepStack rows.

    On this input the mask happens to survive (step 1 prunes only audio here, and adding rows to
    the video keys rescales every audio probability by the same softmax factor), so the scores are
    compared: they differ by ~50 %.
    """
    loaded, inputs = _loaded(request, "qwen3_omni")
    _, seen, _ = _observed(request, "qwen3_omni", 0.32, 0.70)
    got = seen["after"][3]
    modality = got["modality"].numpy()
    video = got["modality"] == VIDEO
    ordinal = _video_ordinals(inputs, loaded.adapter, got["original_index"])
    hidden = seen["raw_out"][2].clone()
    hidden[video] += seen["deepstack"][2][ordinal[video]]  # what upstream's hook sees after module 2
    cos, sin = seen["cos_sin"][2]
    query = int(np.nonzero(modality == TEXT)[0][-1])
    scores = ref_relevance(loaded.adapter.layers[2], hidden, cos, sin, query, "qwen3_omni")
    np.testing.assert_allclose(got["engine_scores"].double().numpy(), scores, rtol=1e-4, atol=1e-8)
