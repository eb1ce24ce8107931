"""Two engine defects on the decoding path after a cut:

(a) ``kv_scope=after_drop_only`` + an inner drop + ``on_decode``: the generated count came from cache
    layer 0 (which kept the dropped keys) and the cut crashed with an IndexError -> now refused at
    attach with a message naming the setting; ``all_executed`` still serves it.
(b) a non-prefill call with several new tokens (speculative / prompt-lookup decoding) after a cut
    ran without a causal mask -> now every layer gets a causal mask over its own cache length, so
    feeding three tokens at once equals feeding them one by one.
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import load_tiny, tiny_inputs

from seats_exp.engine import Engine
from seats_exp.selection import AUDIO, VIDEO, BaseSelector, KVSelection, Selection


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class InnerDropAndDecodeCut(BaseSelector):
    name = "inner_drop_and_decode_cut"

    def hook_layers(self, num_layers):
        return {2}

    def after_layer(self, layer, hidden, ctx):
        keep = torch.ones(ctx.length, dtype=torch.bool)
        keep[torch.nonzero(ctx.modality == VIDEO).flatten()[::2]] = False
        return Selection(keep=keep)

    def on_decode(self, step, ctx):
        return KVSelection(keep=ctx.modality != AUDIO) if step == 1 else None


def _generate(loaded, inputs, has_audio, n=3):
    loaded.thinker.model.rope_deltas = None
    with torch.no_grad():
        return loaded.thinker.generate(**inputs, use_audio_in_video=has_audio, max_new_tokens=n, do_sample=False)


def test_after_drop_only_with_inner_drop_and_decode_cut_is_refused_at_attach(tiny_qwen2_5, clips):
    loaded = load_tiny(tiny_qwen2_5, "qwen2_5_omni")
    inputs, has_audio = tiny_inputs(loaded, clips["av"])
    engine = Engine(loaded.thinker, loaded.adapter, InnerDropAndDecodeCut(), kv_scope="after_drop_only")
    with pytest.raises(ValueError, match="engine.kv_scope=after_drop_only cannot serve .*use engine.kv_scope=all_executed"):
        engine.attach()
    assert not loaded.thinker._forward_pre_hooks  # nothing left attached
    with Engine(loaded.thinker, loaded.adapter, InnerDropAndDecodeCut(), kv_scope="all_executed"):
        out = _generate(loaded, inputs, has_audio)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 3


class PreDrop(BaseSelector):
    """Drops every other video token before the LLM and every third audio token after layer 2."""

    name = "pre_drop"

    def hook_layers(self, num_layers):
        return {2}

    def before_llm(self, ctx):
        keep = torch.ones(ctx.length, dtype=torch.bool)
        keep[torch.nonzero(ctx.modality == VIDEO).flatten()[::2]] = False
        return Selection(keep=keep)

    def after_layer(self, layer, hidden, ctx):
        keep = torch.ones(ctx.length, dtype=torch.bool)
        keep[torch.nonzero(ctx.modality == AUDIO).flatten()[::3]] = False
        return Selection(keep=keep)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("scope", ["all_executed", "after_drop_only"])
def test_several_new_tokens_after_a_cut_equal_one_at_a_time(tiny_qwen2_5, clips, attn, scope):
    loaded = load_tiny(tiny_qwen2_5, "qwen2_5_omni", attn)
    inputs, has_audio = tiny_inputs(loaded, clips["av"])
    thinker = loaded.thinker
    prompt = inputs["input_ids"].shape[1]
    new = torch.tensor([[11, 12, 13]])
    with Engine(thinker, loaded.adapter, PreDrop(), kv_scope=scope), torch.no_grad():
        thinker.model.rope_deltas = None
        out = thinker(**inputs, use_audio_in_video=has_audio, use_cache=True)
        cache = out.past_key_values
        deltas = thinker.model.rope_deltas

        def call(tokens, cache, start):
            n = tokens.shape[1]
            pos = (torch.arange(start, start + n) + deltas.view(1)).view(1, 1, n).expand(3, 1, n)
            mask = torch.ones(1, start + n, dtype=torch.long)
            return thinker(input_ids=tokens, past_key_values=cache, attention_mask=mask, position_ids=pos,
                           cache_position=torch.arange(start, start + n), use_cache=True).logits[0]

        single_cache = copy.deepcopy(cache)
        one_by_one = torch.stack([call(new[:, j:j + 1], single_cache, prompt + j)[-1] for j in range(3)])
        at_once = call(new, cache, prompt)
    assert (at_once - one_by_one).abs().max().item() <= 1e-4
