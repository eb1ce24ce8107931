"""Tiny random Qwen-Omni checkpoints, saved in the layout of the published ones.

``build_tiny_checkpoint`` writes a folder holding the *whole* Omni model (Thinker, talker and, for
Qwen2.5-Omni, token2wav) with random weights at toy widths, plus a processor built offline
(``processor_parts``).  Users and tests then load it through exactly the ``from_pretrained``
path a real checkpoint takes (``seats_exp.models.loading``), which extracts only the Thinker.

Widths are chosen so that CPU forward/generate take milliseconds while every structural feature
the engine relies on is present: GQA (2 query heads per KV head), multi-axis M-RoPE with a
non-trivial ``mrope_section``, a windowed ViT with full-attention blocks (the last one
included), and (Qwen3) DeepStack visual injection and a sparse MoE MLP.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from seats_exp.models.processor_parts import build_processor
from seats_exp.store import replace_folder

TINY_LAYERS = 8  # decoder depth of both tiny families (SEATS defaults for them: drops 3-4-5, late 7)
STAMP = "seats_tiny.json"


def _vocab_size(tokenizer) -> int:
    return ((len(tokenizer) + 63) // 64) * 64


def _qwen2_5_config(tokenizer):
    from transformers import Qwen2_5OmniConfig

    ids = {k: tokenizer.convert_tokens_to_ids(v) for k, v in {
        "audio": "<|AUDIO|>", "image": "<|IMAGE|>", "video": "<|VIDEO|>", "audio_bos": "<|audio_bos|>",
        "audio_eos": "<|audio_eos|>", "vision_bos": "<|vision_bos|>", "vision_eos": "<|vision_eos|>",
        "im_start": "<|im_start|>", "pad": "<|endoftext|>", "eos": "<|im_end|>"}.items()}
    vocab = _vocab_size(tokenizer)
    hidden = 64
    text = dict(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=128, num_hidden_layers=TINY_LAYERS,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32768,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
        eos_token_id=ids["eos"], pad_token_id=ids["pad"], tie_word_embeddings=False,
    )
    vision = dict(depth=4, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden,
                  fullatt_block_indexes=[1, 3], window_size=112, patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2)
    audio = dict(encoder_layers=2, d_model=32, encoder_attention_heads=2, encoder_ffn_dim=64,
                 output_dim=hidden, n_window=100, num_mel_bins=128, max_source_positions=1500)
    thinker = dict(
        text_config=text, vision_config=vision, audio_config=audio,
        audio_token_index=ids["audio"], image_token_index=ids["image"], video_token_index=ids["video"],
        audio_start_token_id=ids["audio_bos"], audio_end_token_id=ids["audio_eos"],
        vision_start_token_id=ids["vision_bos"], vision_end_token_id=ids["vision_eos"],
        user_token_id=ids["im_start"], position_id_per_seconds=25, seconds_per_chunk=2,
    )
    talker = dict(
        vocab_size=96, embedding_size=hidden, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, head_dim=16,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
        audio_token_index=ids["audio"], image_token_index=ids["image"], video_token_index=ids["video"],
        audio_start_token_id=ids["audio_bos"], audio_end_token_id=ids["audio_eos"],
        vision_start_token_id=ids["vision_bos"], vision_end_token_id=ids["vision_eos"],
        tts_text_start_token_id=ids["im_start"], tts_text_end_token_id=ids["eos"], tts_text_pad_token_id=ids["pad"],
        tts_codec_start_token_id=90, tts_codec_end_token_id=91, tts_codec_pad_token_id=92, tts_codec_mask_token_id=93,
    )
    token2wav = dict(
        dit_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, head_dim=16, emb_dim=16,
                        enc_emb_dim=16, enc_dim=16, enc_channels=[16, 16, 16, 16, 48], enc_attention_channels=8,
                        enc_se_channels=8, num_embeds=96, look_ahead_layers=[0], look_backward_layers=[0]),
        bigvgan_config=dict(upsample_initial_channel=16, resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3, 5]],
                            upsample_rates=[2, 2], upsample_kernel_sizes=[4, 4]),
    )
    return Qwen2_5OmniConfig(thinker_config=thinker, talker_config=talker, token2wav_config=token2wav)


def _qwen3_config(tokenizer):
    from transformers import Qwen3OmniMoeConfig

    ids = {k: tokenizer.convert_tokens_to_ids(v) for k, v in {
        "audio": "<|audio_pad|>", "image": "<|image_pad|>", "video": "<|video_pad|>",
        "audio_bos": "<|audio_start|>", "audio_eos": "<|audio_end|>", "vision_bos": "<|vision_start|>",
        "vision_eos": "<|vision_end|>", "im_start": "<|im_start|>", "pad": "<|endoftext|>", "eos": "<|im_end|>"}.items()}
    vocab = _vocab_size(tokenizer)
    hidden = 64
    text = dict(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=128, moe_intermediate_size=32,
        num_hidden_layers=TINY_LAYERS, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        num_experts=4, num_experts_per_tok=2, decoder_sparse_step=1, mlp_only_layers=[],
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3],
                         "mrope_interleaved": True},
        eos_token_id=ids["eos"], pad_token_id=ids["pad"], tie_word_embeddings=False,
    )
    vision = dict(depth=4, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden,
                  patch_size=16, spatial_merge_size=2, temporal_patch_size=2, deepstack_visual_indexes=[0, 1, 2],
                  num_position_embeddings=64)
    audio = dict(encoder_layers=2, d_model=32, encoder_attention_heads=2, encoder_ffn_dim=64, output_dim=hidden,
                 n_window=50, n_window_infer=800, num_mel_bins=128, max_source_positions=1500,
                 downsample_hidden_size=16, conv_chunksize=500)
    thinker = dict(
        text_config=text, vision_config=vision, audio_config=audio,
        audio_token_id=ids["audio"], image_token_id=ids["image"], video_token_id=ids["video"],
        audio_start_token_id=ids["audio_bos"], vision_start_token_id=ids["vision_bos"],
        user_token_id=ids["im_start"], position_id_per_seconds=13,
    )
    talker = dict(
        text_config=dict(vocab_size=96, hidden_size=32, intermediate_size=64, moe_intermediate_size=16,
                         shared_expert_intermediate_size=16, num_hidden_layers=1, num_attention_heads=2,
                         num_key_value_heads=1, head_dim=16, num_experts=2, num_experts_per_tok=1,
                         rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                          "mrope_section": [2, 3, 3], "mrope_interleaved": True}),
        code_predictor_config=dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                   num_attention_heads=2, num_key_value_heads=1, head_dim=16, num_code_groups=2),
        thinker_hidden_size=hidden, num_code_groups=2, accept_hidden_layer=1, spatial_merge_size=2,
        audio_token_id=ids["audio"], image_token_id=ids["image"], video_token_id=ids["video"],
        vision_start_token_id=ids["vision_bos"], audio_start_token_id=ids["audio_bos"],
        codec_eos_token_id=91, codec_nothink_id=92, codec_think_bos_id=93, codec_think_eos_id=94,
        codec_pad_id=90, codec_bos_id=89,
    )
    code2wav = dict(codebook_size=96, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                    num_key_value_heads=1, intermediate_size=64, num_quantizers=2, decoder_dim=32,
                    upsample_rates=[2, 2], upsampling_ratios=[2, 2], sliding_window=8)
    return Qwen3OmniMoeConfig(thinker_config=thinker, talker_config=talker, code2wav_config=code2wav,
                              enable_audio_output=True)


def build_tiny_checkpoint(family: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny random Omni checkpoint (config, weights, processor) to ``out_dir``.

    Idempotent: a folder already holding a tiny checkpoint of the same family and seed is reused.
    Safe under concurrency (first use by several points or array tasks at once): built under a file
    lock next to ``out_dir`` (``.<name>.lock``), checked again once the lock is held, written to a
    temporary sibling folder and renamed into place, so a reader never sees a half-written checkpoint.
    """
    from filelock import FileLock

    out = Path(out_dir)
    stamp = {"family": family, "seed": seed, "layers": TINY_LAYERS, "format": 1}
    if _stamped(out, stamp):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out.parent / f".{out.name}.lock")):
        if _stamped(out, stamp):  # another process built it while this one waited
            return out
        if out.exists() and not (out / STAMP).exists() and (not out.is_dir() or any(out.iterdir())):
            raise FileExistsError(f"{out} already has content but no {STAMP}; refusing to replace it with a tiny "
                                  "checkpoint -- choose an empty or new folder")
        from transformers import Qwen2_5OmniForConditionalGeneration, Qwen3OmniMoeForConditionalGeneration

        tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        processor = build_processor(family)
        config = _qwen3_config(processor.tokenizer) if family == "qwen3_omni" else _qwen2_5_config(processor.tokenizer)
        cls = Qwen3OmniMoeForConditionalGeneration if family == "qwen3_omni" else Qwen2_5OmniForConditionalGeneration
        torch.manual_seed(seed)
        model = cls(config)
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / STAMP).write_text(json.dumps(stamp))
        replace_folder(tmp, out)  # an older tiny checkpoint (other seed or format) is swapped out
    return out


def _stamped(out: Path, stamp: dict) -> bool:
    try:
        return json.loads((out / STAMP).read_text()) == stamp
    except (OSError, ValueError):
        return False
