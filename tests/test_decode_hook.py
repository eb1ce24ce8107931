"""Decode-time KV selection (``on_decode``) against an independent reference.

The selector drops every cached video key at the first decode step.  The reference never goes
through the engine: the unhooked Thinker runs the full prefill, then decodes the same tokens one at
a time (teacher forcing) with a 2-D attention mask that is 0 on the video key columns, which
transformers turns into the same key mask in every layer -- what the engine's cut of every layer's
cache (scope ``all_executed``) must be equivalent to.  The first token comes from the unpruned
prefill in both."""

from __future__ import annotations

import pytest
import torch
from conftest import load_tiny, tiny_inputs

from seats_exp.engine import Engine
from seats_exp.selection import VIDEO, BaseSelector, KVSelection

STEPS = 6
TOL = 1e-4


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: intra-op threads only spin on a busy runner
    yield
    torch.set_num_threads(threads)


class DropVideoAtDecode(BaseSelector):
    name = "drop_video_at_decode"

    def __init__(self):
        self.steps = []

    def on_decode(self, step, ctx):
        self.steps.append(step)
        if step == 1:
            return KVSelection(keep=ctx.modality != VIDEO)
        return None


def _generate(loaded, inputs, has_audio):
    loaded.thinker.model.rope_deltas = None
    with torch.no_grad():
        out = loaded.thinker.generate(**inputs, use_audio_in_video=has_audio, max_new_tokens=STEPS, do_sample=False,
                                      output_scores=True, return_dict_in_generate=True)
    return out.sequences[0, inputs["input_ids"].shape[1]:], torch.stack(out.scores)[:, 0]


@torch.no_grad()
def masked_reference(loaded, inputs, has_audio, tokens: torch.Tensor, masked_keys: torch.Tensor) -> torch.Tensor:
    """Logits of the unhooked Thinker: full prefill, then one step per token of ``tokens`` (all but
    the last) with the prompt keys ``masked_keys`` masked out of every layer's attention."""
    thinker = loaded.thinker
    assert not thinker._forward_pre_hooks, "the reference must run on the unhooked model"
    thinker.model.rope_deltas = None
    out = thinker(**inputs, use_audio_in_video=has_audio, use_cache=True)
    cache, logits = out.past_key_values, [out.logits[0, -1]]
    prompt = inputs["input_ids"].shape[1]
    mask = torch.ones(1, prompt, dtype=torch.long)
    mask[0, masked_keys] = 0
    deltas = thinker.model.rope_deltas  # from the unpruned prompt, as generate() uses them
    for t, token in enumerate(tokens[:-1].tolist()):
        mask = torch.cat([mask, torch.ones(1, 1, dtype=torch.long)], dim=1)
        position = (prompt + t + deltas).reshape(1, 1, 1).expand(3, 1, 1)  # the same on all three M-RoPE axes
        out = thinker(input_ids=torch.tensor([[token]]), attention_mask=mask, past_key_values=cache, use_cache=True,
                      position_ids=position, cache_position=torch.tensor([prompt + t]))
        cache = out.past_key_values
        logits.append(out.logits[0, -1])
    return torch.stack(logits)


@pytest.mark.parametrize("family", ["qwen2_5_omni", "qwen3_omni"])
def test_on_decode_cut_equals_masked_unhooked_model(family, tiny_qwen2_5, tiny_qwen3, clips):
    loaded = load_tiny(tiny_qwen2_5 if family == "qwen2_5_omni" else tiny_qwen3, family, attn="eager")
    inputs, has_audio = tiny_inputs(loaded, clips["av"])
    video = torch.nonzero(inputs["input_ids"][0] == loaded.adapter.video_token_id).flatten()
    assert video.numel() > 0
    full_tokens, full_scores = _generate(loaded, inputs, has_audio)
    # the reference itself: with no key masked it is the unhooked model's own greedy decoding
    assert (masked_reference(loaded, inputs, has_audio, full_tokens, video[:0]) - full_scores).abs().max() <= TOL

    selector = DropVideoAtDecode()
    with Engine(loaded.thinker, loaded.adapter, selector):
        dec_tokens, dec_scores = _generate(loaded, inputs, has_audio)
    ref_scores = masked_reference(loaded, inputs, has_audio, dec_tokens, video)

    assert selector.steps == list(range(1, STEPS))  # consulted at every decode step
    assert (dec_scores - ref_scores).abs().max().item() <= TOL
    assert torch.equal(dec_tokens, ref_scores.argmax(-1))
    # the first token is decided by the unpruned prefill; later steps really lost the video keys
    assert (dec_scores[0] - full_scores[0]).abs().max().item() <= TOL
    assert (dec_scores[1:] - full_scores[1:]).abs().max().item() > 1e-3
