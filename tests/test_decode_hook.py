"""Decode-time KV selection (``on_decode``): cutting cached video keys at the first decode step
equals cutting them right after the last decoder layer of the prefill (scope all_executed), where
every layer's cache is cut and the first token's logits are untouched."""

from __future__ import annotations

import pytest
import torch

from conftest import load_tiny, tiny_inputs
from seats_exp.engine import Engine
from seats_exp.selection import VIDEO, BaseSelector, KVSelection, Selection


class DropVideoAtDecode(BaseSelector):
    name = "drop_video_at_decode"

    def __init__(self):
        self.steps = []

    def on_decode(self, step, ctx):
        self.steps.append(step)
        if step == 1:
            return KVSelection(keep=ctx.modality != VIDEO)
        return None


class DropVideoAfterLastLayer(BaseSelector):
    name = "drop_video_after_last_layer"

    def hook_layers(self, num_layers):
        return {num_layers}

    def after_layer(self, layer, hidden, ctx):
        return Selection(keep=ctx.modality != VIDEO)


def _generate(loaded, inputs, has_audio):
    loaded.thinker.model.rope_deltas = None
    with torch.no_grad():
        out = loaded.thinker.generate(**inputs, use_audio_in_video=has_audio, max_new_tokens=6, do_sample=False,
                                      output_scores=True, return_dict_in_generate=True)
    return out.sequences[0, inputs["input_ids"].shape[1]:], torch.stack(out.scores)


@pytest.mark.parametrize("family", ["qwen2_5_omni", "qwen3_omni"])
def test_on_decode_cut_equals_cut_after_last_layer(family, tiny_qwen2_5, tiny_qwen3, clips):
    loaded = load_tiny(tiny_qwen2_5 if family == "qwen2_5_omni" else tiny_qwen3, family, attn="eager")
    inputs, has_audio = tiny_inputs(loaded, clips["av"])
    full_tokens, full_scores = _generate(loaded, inputs, has_audio)

    decode_selector = DropVideoAtDecode()
    with Engine(loaded.thinker, loaded.adapter, decode_selector):
        dec_tokens, dec_scores = _generate(loaded, inputs, has_audio)
    with Engine(loaded.thinker, loaded.adapter, DropVideoAfterLastLayer()):
        ref_tokens, ref_scores = _generate(loaded, inputs, has_audio)

    assert decode_selector.steps[:2] == [1, 2]  # called at every decode step
    assert torch.equal(dec_tokens, ref_tokens)
    assert (dec_scores - ref_scores).abs().max().item() <= 1e-5
    # the first token is decided before any decode-time cut
    assert (dec_scores[0] - full_scores[0]).abs().max().item() <= 1e-5
    # and the cut changes later steps (video keys really left the cache)
    assert (dec_scores[1:] - full_scores[1:]).abs().max().item() > 1e-6
