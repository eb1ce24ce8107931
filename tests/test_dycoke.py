"""DyCoke (baselines-reference 5): TTM kept counts and choices, the K budget, DP while decoding
against an independent reference (per-step key masks on the unhooked model), per-sample state,
prefill DP and plan mode."""

from __future__ import annotations

import importlib

import pytest
import torch
from conftest import load_tiny, tiny_inputs

from methods import MethodConfigError, ModelInfo, build_selector
from methods.dycoke import DyCoke, ttm_keep, ttm_plan
from seats_exp.engine import Engine
from seats_exp.selection import PlanInput

INFO_7B = ModelInfo("qwen2_5_omni_7b", "qwen2_5_omni", 28, 25.0)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# =============================================================================================
# TTM
# =============================================================================================


def formula_counts(num_grids: int, tokens_per_grid: int, reduced: int, last_group="skip", odd="drop") -> list[int]:
    """Section 5.2 written per grid: grids 4m whole; odd grids reduced (stage A); grid 4m+2 reduced
    when 4m < F - 4 (stage B's loop bound; ``reduce``: always); an odd F loses its last grid."""
    out = []
    for f in range(num_grids):
        if num_grids % 2 and f == num_grids - 1 and odd == "drop":
            out.append(0)
        elif f % 2 == 1:
            out.append(reduced)
        elif f % 4 == 2 and (f - 2 < num_grids - 4 or last_group == "reduce"):
            out.append(reduced)
        else:
            out.append(tokens_per_grid)
    return out


@pytest.mark.parametrize("num_grids", [8, 9, 32])
@pytest.mark.parametrize("last_group,odd", [("skip", "drop"), ("reduce", "keep"), ("reduce", "drop")])
def test_ttm_kept_tokens_per_grid(num_grids, last_group, odd):
    tokens_per_grid, k = 6, 0.5  # reduced grids keep int(0.5 * 6) = 3
    video = torch.randn(num_grids * tokens_per_grid, 8)
    keep = ttm_keep(video, tokens_per_grid, k, last_group, odd).reshape(num_grids, tokens_per_grid)
    expected = formula_counts(num_grids, tokens_per_grid, 3, last_group, odd)
    assert keep.sum(1).tolist() == expected
    assert ttm_plan(num_grids, k, tokens_per_grid, last_group, odd) == expected


def test_ttm_quirks_spelled_out():
    # F = 32, faithful: grid 30 stays whole (loop bound), grids 0, 4, ..., 28 whole -> 9 whole, 23 reduced
    counts = ttm_plan(32, 0.5, 6)
    assert counts[30] == 6 and counts[26] == 3 and counts.count(6) == 9 and counts.count(3) == 23
    assert ttm_plan(32, 0.5, 6, last_group="reduce")[30] == 3
    # F = 9, faithful: the last grid is lost; with ttm_odd_last_grid=keep it stays whole
    assert ttm_plan(9, 0.5, 6)[8] == 0 and ttm_plan(9, 0.5, 6, odd_last_grid="keep")[8] == 6
    # F = 8: grid 6 whole (4 >= F - 4), grid 2 reduced
    assert ttm_plan(8, 0.5, 6)[2] == 3 and ttm_plan(8, 0.5, 6)[6] == 6


def test_ttm_keeps_the_least_similar_positions_in_sequence_order():
    base = torch.randn(4, 8)
    grid1 = base.clone()
    grid1[1] = -base[1]  # most changed
    grid1[3] = torch.randn(8)
    grid1[0] = base[0] * 2  # same direction: similarity 1
    video = torch.cat([base, grid1])  # F = 2, P = 4
    keep = ttm_keep(video, 4, 0.5)  # keep int(0.5 * 4) = 2 of grid 1
    assert keep[:4].all()
    assert keep[4:].tolist() == [False, True, False, True]
    # stage B compares grid i + 2 with grid i (original rows)
    grids = torch.randn(6, 4, 8)
    grids[2] = grids[0]
    grids[2, 2] = -grids[0, 2]
    keep = ttm_keep(grids.reshape(24, 8), 4, 0.75)  # int(0.25 * 4) = 1; F=6: i in {0}
    assert keep.reshape(6, 4)[2].tolist() == [False, False, True, False]


def test_ttm_rejects_partial_grids():
    with pytest.raises(ValueError, match="whole grids"):
        ttm_keep(torch.randn(10, 4), 4, 0.5)


# =============================================================================================
# The K budget
# =============================================================================================


def test_k_from_target_ratio():
    selector = build_selector("dycoke", {}, 0.5, 1.0, INFO_7B)
    assert selector.ttm_k_for(0.5) == pytest.approx(4 * 0.5 / 3)
    assert selector.ttm_k_for(1.0) == 0.0 and selector.ttm_k_for(0.25) == pytest.approx(1.0)
    # the kept share of a 4-grid group matches the target: 1/4 + 3/4 (1 - K)
    k = selector.ttm_k_for(0.4)
    assert 0.25 + 0.75 * (1 - k) == pytest.approx(0.4)
    assert build_selector("dycoke", {"ttm_k": 0.7}, 0.1, 1.0, INFO_7B).ttm_k_for(0.1) == 0.7  # explicit K


@pytest.mark.parametrize("video", [0.2, 0.1])
def test_unreachable_target_is_a_configuration_error(video):
    with pytest.raises(MethodConfigError, match=r"outside the range TTM can reach, \[0.25, 1\]"):
        build_selector("dycoke", {}, video, 1.0, INFO_7B)


def test_reallocated_target_below_the_range_is_an_error_at_run_time():
    # (0.30, 0.65) is reallocated to about (0.24, 1.0): below 0.25 without prefill DP
    selector = build_selector("dycoke", {}, 0.30, 0.65, INFO_7B)
    with pytest.raises(MethodConfigError, match=r"\[0.25, 1\]"):
        selector.plan(_plan_input(4320, 750))
    # with dp_in_prefill the reachable range is scaled by (L + (N - L)(1 - P)) / N = 10.5 / 28
    prefill = build_selector("dycoke", {"dp_in_prefill": True}, 0.30, 0.65, INFO_7B)
    counts = prefill.plan(_plan_input(4320, 750))
    target = counts.details["dycoke"]["video_target"]
    assert target == pytest.approx((1783 - 750) / 4320)
    assert counts.details["dycoke"]["ttm_k"] == pytest.approx(4 * (1 - target * 28 / 10.5) / 3)
    with pytest.raises(MethodConfigError, match=r"\[0.09375, 0.375\] \(with dp_in_prefill\)"):
        build_selector("dycoke", {"dp_in_prefill": True}, 0.5, 1.0, INFO_7B)


@pytest.mark.parametrize("params,key", [({"dp_layer": 0}, "dp_layer"), ({"dp_layer": 28}, "dp_layer"),
                                        ({"dp_p": 1.5}, "dp_p"), ({"dp_threshold": "high"}, "dp_threshold"), ({"dp_on_stable": "x"}, "dp_on_stable"),
                                        ({"ttm_last_group": "x"}, "ttm_last_group"), ({"bogus": 1}, "bogus"),
                                        ({"ttm_k": 2}, "ttm_k"), ({"dp": "yes"}, "dp")])
def test_bad_settings_name_the_key(params, key):
    with pytest.raises(MethodConfigError, match=key):
        build_selector("dycoke", params, 0.5, 1.0, INFO_7B)


# =============================================================================================
# Plan mode
# =============================================================================================


def _plan_input(video: int, audio: int, per_grid: int = 144, text: int = 50, layers: int = 28) -> PlanInput:
    return PlanInput(video_tokens=video, audio_tokens=audio, text_tokens=text, video_tokens_per_grid=per_grid,
                     num_grids=video // per_grid, audio_tokens_per_second=25.0, num_layers=layers)


def test_plan_counts_with_and_without_prefill_dp():
    inp = _plan_input(32 * 144, 0)  # no audio: the target is the schedule's video ratio
    plain = build_selector("dycoke", {}, 0.5, 1.0, INFO_7B).plan(inp)
    per_grid = ttm_plan(32, 4 * 0.5 / 3, 144)
    assert plain.per_layer == [(sum(per_grid), 0)] * 28
    prefill = build_selector("dycoke", {"dp_in_prefill": True, "ttm_k": 0.5}, 0.3, 1.0, INFO_7B).plan(inp)
    ttm = sum(ttm_plan(32, 0.5, 144))
    assert prefill.per_layer[:3] == [(ttm, 0)] * 3
    assert prefill.per_layer[3:] == [(int(ttm * 0.3), 0)] * 25


# =============================================================================================
# DP while decoding, against an independent reference
# =============================================================================================


class Recorder(DyCoke):
    """DyCoke that records what the engine hands to decode_view."""

    def __init__(self, built: DyCoke):
        super().__init__(built.settings)
        self.calls = []

    def decode_view(self, step, attention, ctx):
        self.calls.append({"step": step, "fresh": not ctx.scratch, "length": int(attention.shape[0]),
                           "attention": attention.clone(), "original_index": ctx.original_index.clone()})
        return super().decode_view(step, attention, ctx)


def _rotary_fn(family):
    mod = "qwen2_5_omni.modeling_qwen2_5_omni" if family == "qwen2_5_omni" else "qwen3_omni_moe.modeling_qwen3_omni_moe"
    return importlib.import_module(f"transformers.models.{mod}").apply_rotary_pos_emb


@torch.no_grad()
def dp_reference(loaded, inputs, has_audio, steps: int, dp_layer: int, dp_p: float, threshold: float,
                 on_stable: str, attn: str):
    """Greedy decoding of the UNHOOKED model with DyCoke DP as explicit per-step key masks.

    Prefill: the plain Thinker forward (TTM keeps everything here, ttm_k = 0).  Every decoding step
    is a hand loop over the decoder layers: modules < L without a mask (full cache); the signal is
    module L-1's head-mean attention of the new token -- under eager read from the attention module
    itself, under sdpa computed from q_proj / the cached keys; restricted to the video entries
    (boolean indexing), cosine with the previous step (first step 0); below the threshold the top
    int(N_vis (1 - P)) video entries plus every non-video entry stay visible to modules >= L (a
    -inf mask on the others), else the whole cache (full_cache) or the previous selection.
    """
    thinker = loaded.thinker
    lm = loaded.adapter.language_model
    layers = lm.layers
    thinker.model.rope_deltas = None
    out = thinker(**inputs, use_audio_in_video=has_audio, use_cache=True)
    cache = out.past_key_values
    ids = inputs["input_ids"][0]
    video = ids == loaded.adapter.video_token_id  # prompt entries
    num_video = int(video.sum())
    count = int(num_video * (1 - dp_p))
    rope_deltas = thinker.model.rope_deltas
    prompt_len = ids.shape[0]
    tokens = [int(out.logits[0, -1].argmax())]
    step_logits = [out.logits[0, -1]]
    captured = {}
    handle = None
    if attn == "eager":
        handle = layers[dp_layer - 1].self_attn.register_forward_hook(
            lambda m, a, o: captured.__setitem__("weights", o[1]))
    rotary = _rotary_fn(loaded.adapter.family)
    previous, previous_keep, sims = None, None, []
    try:
        for t in range(steps):
            h = thinker.model.get_input_embeddings()(torch.tensor([[tokens[-1]]]))
            pos = torch.full((3, 1, 1), prompt_len + t) + rope_deltas.view(1, 1, 1)
            pe = lm.rotary_emb(h, pos)
            mask = None
            for l, layer in enumerate(layers):
                if l == dp_layer - 1:
                    h_in = h
                if l == dp_layer:
                    if attn == "eager":
                        probs = captured["weights"].float().mean(1)[0, 0]
                    else:
                        a = layers[dp_layer - 1].self_attn
                        x = layers[dp_layer - 1].input_layernorm(h_in)
                        q = a.q_proj(x).view(1, 1, -1, a.head_dim)
                        if hasattr(a, "q_norm"):
                            q = a.q_norm(q)
                        q = q.transpose(1, 2)
                        q, _ = rotary(q, q, *pe)
                        k = cache.layers[dp_layer - 1].keys
                        k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
                        probs = torch.softmax((q @ k.transpose(-1, -2)).float() * a.scaling, -1).mean(1)[0, 0]
                    total = probs.shape[0]
                    vis = torch.cat([video, torch.zeros(total - prompt_len, dtype=torch.bool)])
                    a_t = probs[vis]
                    sim = 0.0 if previous is None else float(torch.nn.functional.cosine_similarity(a_t, previous, dim=0))
                    sims.append(sim)
                    previous = a_t
                    if sim < threshold:
                        top = torch.sort(a_t, descending=True, stable=True).indices[:count]
                        vis_keep = torch.zeros(num_video, dtype=torch.bool)
                        vis_keep[top] = True
                    elif on_stable == "reuse_previous":
                        vis_keep = previous_keep
                    else:
                        vis_keep = torch.ones(num_video, dtype=torch.bool)
                    previous_keep = vis_keep
                    hidden_cols = torch.zeros(total, dtype=torch.bool)
                    hidden_cols[torch.nonzero(vis).flatten()[~vis_keep]] = True
                    mask = torch.zeros(1, 1, 1, total).masked_fill(hidden_cols, float("-inf"))
                h = layer(h, attention_mask=mask if l >= dp_layer else None, position_embeddings=pe,
                          position_ids=None, past_key_values=cache, use_cache=True)
            logits = thinker.lm_head(lm.norm(h))[0, -1]
            step_logits.append(logits)
            tokens.append(int(logits.argmax()))
    finally:
        if handle is not None:
            handle.remove()
    return torch.tensor(tokens), torch.stack(step_logits), sims


def _generate(loaded, inputs, has_audio, new_tokens):
    loaded.thinker.model.rope_deltas = None
    with torch.no_grad():
        return loaded.thinker.generate(**inputs, use_audio_in_video=has_audio, max_new_tokens=new_tokens,
                                       do_sample=False, output_scores=True, return_dict_in_generate=True)


_LOADED = {}


def _case(request, family, attn):
    key = (family, attn)
    if key not in _LOADED:
        path = request.getfixturevalue("tiny_qwen2_5" if family == "qwen2_5_omni" else "tiny_qwen3")
        loaded = load_tiny(path, family, attn)
        inputs, has_audio = tiny_inputs(loaded, request.getfixturevalue("clips")["av"])
        _LOADED[key] = (loaded, inputs, has_audio)
    return _LOADED[key]


def _tiny_info(loaded):
    a = loaded.adapter
    return ModelInfo("tiny_" + a.family, a.family, a.num_layers, a.audio_tokens_per_second)


STEPS = 8  # decoding steps (the first generated token comes from the prefill)


DP_CASES = [pytest.param(f, a, o, t, id=f"{f}-{a}-{o}-{t}") for f, a, o, t in (
    *[("qwen2_5_omni", a, o, t) for a in ("sdpa", "eager")
      for o, t in (("full_cache", 0.9), ("reuse_previous", 0.9), ("full_cache", 1.5))],
    ("qwen3_omni", "sdpa", "reuse_previous", 0.9), ("qwen3_omni", "eager", "full_cache", 0.9))]


@pytest.mark.parametrize("family,attn,on_stable,threshold", DP_CASES)
def test_dp_equals_per_step_key_masks_on_the_unhooked_model(request, family, attn, on_stable, threshold):
    loaded, inputs, has_audio = _case(request, family, attn)
    ref_tokens, ref_logits, sims = dp_reference(loaded, inputs, has_audio, STEPS, 3, 0.7, threshold, on_stable, attn)
    params = {"ttm_k": 0.0, "dp_layer": 3, "dp_p": 0.7, "dp_threshold": threshold, "dp_on_stable": on_stable}
    selector = Recorder(build_selector("dycoke", params, 1.0, 1.0, _tiny_info(loaded)))
    with Engine(loaded.thinker, loaded.adapter, selector):
        out = _generate(loaded, inputs, has_audio, STEPS + 1)
    tokens = out.sequences[0, inputs["input_ids"].shape[1]:]
    got = torch.stack([s[0] for s in out.scores])
    assert torch.equal(tokens, ref_tokens)
    assert (got - ref_logits).abs().max().item() <= 1e-4
    assert [c["step"] for c in selector.calls] == list(range(1, STEPS + 1))
    # DP really acted: some step differs from the plain model's logits
    full = _generate(loaded, inputs, has_audio, STEPS + 1)
    full_logits = torch.stack([s[0] for s in full.scores])
    assert (got[0] - full_logits[0]).abs().max().item() <= 1e-5  # the prefill token is untouched
    assert (got[1:] - full_logits[1:]).abs().max().item() > 1e-4
    # the cache stays whole: every layer holds the prompt and every decoded token
    cache = out.past_key_values
    assert {cache.layers[j].keys.shape[-2] for j in range(len(cache.layers))} == {inputs["input_ids"].shape[1] + STEPS}
    assert sims[0] == 0.0  # the first step of a sample always refreshes
    if threshold == 0.9:  # later steps are stable on the tiny model, so dp_on_stable decides them
        assert min(sims[1:]) >= threshold
    else:  # above 1: every step refreshes
        assert max(sims) < threshold


def test_dp_on_stable_choices_differ(request):
    loaded, inputs, has_audio = _case(request, "qwen2_5_omni", "sdpa")
    results = {}
    for on_stable in ("full_cache", "reuse_previous"):
        params = {"ttm_k": 0.0, "dp_threshold": 0.9, "dp_on_stable": on_stable}
        with Engine(loaded.thinker, loaded.adapter, build_selector("dycoke", params, 1.0, 1.0, _tiny_info(loaded))):
            out = _generate(loaded, inputs, has_audio, STEPS + 1)
        results[on_stable] = torch.stack([s[0] for s in out.scores])
    assert (results["full_cache"] - results["reuse_previous"]).abs().max().item() > 1e-4


def test_dp_state_is_per_sample(request):
    """A second prompt on the same engine starts with no reference vector, and decodes exactly as a
    fresh engine would."""
    loaded, inputs, has_audio = _case(request, "qwen2_5_omni", "sdpa")
    selector = Recorder(build_selector("dycoke", {"ttm_k": 0.0}, 1.0, 1.0, _tiny_info(loaded)))
    with Engine(loaded.thinker, loaded.adapter, selector):
        first = _generate(loaded, inputs, has_audio, 4)
        second = _generate(loaded, inputs, has_audio, 4)
    starts = [c for c in selector.calls if c["step"] == 1]
    assert len(starts) == 2 and all(c["fresh"] for c in starts)
    assert [c["step"] for c in selector.calls] == [1, 2, 3, 1, 2, 3]
    assert torch.equal(first.sequences, second.sequences)


@pytest.mark.parametrize("family", ["qwen2_5_omni", "qwen3_omni"])
def test_ttm_and_prefill_dp_lengths_match_plan(request, family):
    """A real run's per-layer lengths equal plan mode for the sample's layout (TTM + prefill DP)."""
    loaded, inputs, has_audio = _case(request, family, "sdpa")
    info = _tiny_info(loaded)
    selector = build_selector("dycoke", {"ttm_k": 0.5, "dp_in_prefill": True, "dp_layer": 3}, 0.3, 1.0, info)
    with Engine(loaded.thinker, loaded.adapter, selector) as engine:
        out = _generate(loaded, inputs, has_audio, 3)
        record = engine.pop_records()[0]
    ids = inputs["input_ids"][0]
    grid = inputs["video_grid_thw"][0]
    per_grid = int(grid[1] * grid[2]) // 4
    num_video = int((ids == loaded.adapter.video_token_id).sum())
    num_audio = int((ids == loaded.adapter.audio_token_id).sum())
    text = ids.shape[0] - num_video - num_audio
    plan = selector.plan(PlanInput(num_video, num_audio, text, per_grid, num_video // per_grid,
                                   info.audio_tokens_per_second, info.num_layers))
    assert record.layer_lengths == [v + a + text for v, a in plan.per_layer]
    assert record.layer_lengths[3] < record.layer_lengths[2] < ids.shape[0]
    assert out.sequences.shape[1] == ids.shape[0] + 3


@pytest.mark.parametrize("scope", ["all_executed", "after_drop_only"])
def test_dp_signal_is_the_eager_attention_of_module_l_minus_1(request, scope):
    """The attention handed to DP is the model's own (eager) head-mean attention of module L-1,
    restricted to what modules L.. hold: after a prefill drop under after_drop_only module L-1
    still caches every LLM input token, and the engine maps its attention to the current ones."""
    loaded, inputs, has_audio = _case(request, "qwen2_5_omni", "eager")
    selector = Recorder(build_selector("dycoke", {"ttm_k": 0.0, "dp_in_prefill": True, "ttm_last_group": "skip"},
                                       0.3, 1.0, _tiny_info(loaded)))
    weights = []
    handle = loaded.adapter.layers[2].self_attn.register_forward_hook(
        lambda m, a, o: weights.append(o[1].float().mean(1)[0, -1]) if o[1].shape[2] == 1 else None)
    try:
        with Engine(loaded.thinker, loaded.adapter, selector, kv_scope=scope):
            _generate(loaded, inputs, has_audio, 4)
    finally:
        handle.remove()
    prompt = inputs["input_ids"].shape[1]
    assert len(weights) == len(selector.calls) == 3
    for step, (call, full) in enumerate(zip(selector.calls, weights), 1):
        current = call["original_index"].shape[0] - step  # prompt tokens modules 3.. hold
        assert current < prompt  # the prefill drop happened
        if scope == "after_drop_only":  # module 2 cached all prompt tokens: pick the current ones
            assert full.shape[0] == prompt + step
            expected = torch.cat([full[call["original_index"][:current]], full[prompt:]])
        else:  # every cache was cut: module 2 attends to the current tokens only
            assert full.shape[0] == current + step
            expected = full
        assert call["attention"].shape == expected.shape
        assert (call["attention"] - expected).abs().max().item() <= 1e-6


def test_dp_rejects_several_new_tokens_per_step(request):
    loaded, inputs, has_audio = _case(request, "qwen2_5_omni", "sdpa")
    selector = build_selector("dycoke", {"ttm_k": 0.0}, 1.0, 1.0, _tiny_info(loaded))
    with Engine(loaded.thinker, loaded.adapter, selector):
        loaded.thinker.model.rope_deltas = None
        with torch.no_grad():
            out = loaded.thinker(**inputs, use_audio_in_video=has_audio, use_cache=True)
            with pytest.raises(ValueError, match="one new token per step"):
                loaded.thinker(input_ids=torch.tensor([[5, 6]]), past_key_values=out.past_key_values,
                               attention_mask=torch.ones(1, inputs["input_ids"].shape[1] + 2, dtype=torch.long))


def test_dp_view_needs_a_mask_taking_attention(request):
    loaded, _, _ = _case(request, "qwen2_5_omni", "sdpa")
    selector = build_selector("dycoke", {"ttm_k": 0.0}, 1.0, 1.0, _tiny_info(loaded))
    config = loaded.adapter.language_model.config
    saved = config._attn_implementation
    try:
        config._attn_implementation = "flash_attention_2"
        with pytest.raises(ValueError, match="sdpa or eager"):
            Engine(loaded.thinker, loaded.adapter, selector).attach()
    finally:
        config._attn_implementation = saved


# =============================================================================================
# Plan mode through the CLI (all three new methods)
# =============================================================================================


def _plan_cli(tmp_path, *args):
    import json
    import os
    import subprocess

    from conftest import REPO

    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "HYDRA_"))}
    proc = subprocess.run([str(REPO / ".venv" / "bin" / "seats-exp"), f"paths.root={tmp_path}", "mode=plan",
                           "model=qwen2_5_omni_7b", "plan.json=true", "plan.video_seconds=64", "plan.fps=2",
                           "plan.tokens_per_grid=144", "plan.audio_seconds=64", "plan.text_tokens=100", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc, (json.loads(lines[-1]) if lines else None)


def test_plan_mode_cli_for_the_new_methods(tmp_path):
    # DyCoke, r35 with prefill DP: TTM tokens in modules 0..2, int(x 0.3) from module 3 on
    proc, plan = _plan_cli(tmp_path, "method=dycoke", "schedule=r35", "method.dp_in_prefill=true")
    assert proc.returncode == 0, proc.stderr
    ttm = plan["dycoke"]["ttm_video_kept"]
    assert [row["video"] for row in plan["layers"]] == [ttm] * 3 + [int(ttm * 0.3)] * 25
    assert all(row["audio"] == 1600 for row in plan["layers"])  # audio intact
    assert plan["flops"] < plan["flops_full"]
    # DivPrune: (0.30, 0.65) reallocated to (floor(9216*0.3 + 1600*0.65) - 1600) / 9216, audio whole
    proc, plan = _plan_cli(tmp_path, "method=divprune", "schedule=r35")
    assert proc.returncode == 0, proc.stderr
    assert plan["layers"][0]["video"] == round((3804 - 1600) / 9216 * 9216) and plan["layers"][0]["audio"] == 1600
    # DivPrune-om with SEATS' windows: 32 windows of 288 keep round(0.3 * 288) = 86; 32 of 50 keep 32
    proc, plan = _plan_cli(tmp_path, "method=divprune_omni", "schedule=r35", "method.window=video_grids:2+audio_seconds:2")
    assert proc.returncode == 0, proc.stderr
    assert (plan["layers"][-1]["video"], plan["layers"][-1]["audio"]) == (32 * 86, 32 * 32)
    # an unreachable DyCoke target: one line, exit code 2
    proc, plan = _plan_cli(tmp_path, "method=dycoke", "schedule=r35")
    assert proc.returncode == 2 and plan is None
    assert "outside the range TTM can reach, [0.25, 1]" in proc.stderr and "Traceback" not in proc.stderr


def test_describe_records_the_resolved_settings():
    assert build_selector("dycoke", {"ttm_k": 0.0}, 1.0, 1.0, INFO_7B).describe()["ttm_k"] == 0.0
    described = build_selector("dycoke", {}, 0.5, 1.0, INFO_7B).describe()
    assert described["ttm_k"] == "auto" and described["dp_layer"] == 3 and described["dp_on_stable"] == "full_cache"


@pytest.mark.parametrize("model", ["qwen2_5_omni_7b", "qwen3_omni_30b_a3b"])
def test_paper_cell_uses_prefill_dp_and_is_reachable(model, tmp_path):
    """The published DyCoke cell (R=35) composes with dp_in_prefill=true, and its plan for a
    WorldSense-sized input runs (the reallocated target is inside the prefill-DP range)."""
    from hydra import compose, initialize_config_dir
    from conftest import REPO

    from seats_exp.config import build_selector_for, validate

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment=paper_{model}", f"+paper_cell/{model}=dycoke_r35",
                                           "benchmark=worldsense", f"paths.root={tmp_path}"])
    rc = validate(cfg, check_data=False)
    assert rc.method.name == "dycoke" and rc.method.params["dp_in_prefill"] is True
    selector = build_selector_for(rc)
    rate = 25 if model.startswith("qwen2_5") else 13
    counts = selector.plan(PlanInput(64 * 144, 128 * rate, 100, 144, 64, rate, rc.model.num_layers))
    assert counts.per_layer[-1][0] < counts.per_layer[0][0] < 64 * 144
