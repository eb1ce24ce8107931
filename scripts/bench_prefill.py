#!/usr/bin/env python
"""Prefill latency: full tokens vs. a 90% media drop after layer 2, through the real engine.

A random Qwen2.5-Omni Thinker (transformers' own class) is built from a config with toy vision and
audio towers and a scaled text model.  The prompt is ~N token ids laid out like an audio-in-video
prompt (150 text tokens around an interleaved body of 288 "video" placeholders + 50 "audio"
placeholders per 2-s chunk).  The encoders are not run: the placeholders keep their token
embeddings, which costs the LLM exactly the same.  Positions are plain text positions on the three
M-RoPE axes (they do not change the cost).

Three variants, each repeated ``--repeats`` times after a warm-up, interleaved so drifts hit all:

* ``full``     -- the unpatched Thinker;
* ``engine``   -- (``--engine-overhead``) the engine attached with a keep-everything selector;
* ``drop90``   -- ``seats_exp.engine.Engine`` with a selector that keeps all text and 10% of the
                  media tokens after layer 2 (KV scope ``all_executed``).

Reported: median wall time of the Thinker forward (CUDA events on a GPU, perf_counter on CPU),
the engine's own split (selection vs. LLM), the time ratio and the FLOPs ratio from
``seats_exp.cost.prefill_flops`` on the lengths the engine recorded.

    python scripts/bench_prefill.py                                   # CPU, < ~60 s
    python scripts/bench_prefill.py --device cuda --dtype bfloat16 --real-7b-widths --tokens 12000
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from seats_exp.cost import prefill_flops
from seats_exp.engine import Engine
from seats_exp.models.adapters import adapter_for
from seats_exp.selection import TEXT, BaseSelector, Selection

# token ids of the scaled model (any ids below the vocabulary size work; these mirror the layout)
IDS = {"text": 100, "video": 7, "audio": 8, "image": 9, "vision_bos": 10, "vision_eos": 11, "audio_bos": 12,
       "audio_eos": 13, "im_start": 14, "pad": 15, "eos": 16}
TEXT_TOKENS = 150  # as in seats-reference section 11 (60 + 90)
VIDEO_PER_CHUNK, AUDIO_PER_CHUNK = 288, 50  # Qwen2.5: 2 grids x 144 tokens, 2 s x 25 tokens/s


class KeepTextAndTenthOfMedia(BaseSelector):
    """After layer ``layer``: keep every text token and 10% of the media tokens.

    ``mode="strided"`` keeps every 10th media token; ``mode="attention"`` keeps the 10% with the
    highest last-text-token attention at that layer (FastV-like, includes the scoring cost).
    """

    name = "keep_text_and_tenth_of_media"

    def __init__(self, layer: int = 2, ratio: float = 0.1, mode: str = "strided"):
        self.layer, self.ratio, self.mode = layer, ratio, mode

    def hook_layers(self, num_layers: int) -> set[int]:
        return {self.layer}

    def after_layer(self, layer: int, hidden: torch.Tensor, ctx) -> Selection | None:
        media = torch.nonzero(ctx.modality != TEXT).flatten()
        k = max(1, int(self.ratio * media.numel()))
        keep = ctx.modality == TEXT
        if self.mode == "attention":
            scores = ctx.score_last_text(layer - 1, hidden)[media]
            chosen = media[torch.topk(scores.float(), k).indices]
        else:
            chosen = media[:: max(1, round(1 / self.ratio))][:k]
        keep[chosen] = True
        return Selection(keep=keep, label=f"drop90_after_{layer}")


class KeepEverything(BaseSelector):
    name = "keep_everything"

    def hook_layers(self, num_layers: int) -> set[int]:
        return {2}

    def after_layer(self, layer, hidden, ctx):
        return Selection(keep=torch.ones(ctx.length, dtype=torch.bool, device=hidden.device))


def build_config(args):
    from transformers import Qwen2_5OmniThinkerConfig

    if args.real_7b_widths:
        text = {"hidden_size": 3584, "intermediate_size": 18944, "num_attention_heads": 28,
                "num_key_value_heads": 4, "vocab_size": 152064, "num_hidden_layers": args.layers or 28}
    else:
        text = {"hidden_size": 1024, "intermediate_size": 2816, "num_attention_heads": 16,
                "num_key_value_heads": 2, "vocab_size": args.vocab, "num_hidden_layers": args.layers or 8}
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    section = [head_dim // 8, head_dim * 3 // 16, head_dim * 3 // 16]  # [16, 24, 24] at head_dim 128
    text.update(max_position_embeddings=32768, eos_token_id=IDS["eos"], pad_token_id=IDS["pad"],
                tie_word_embeddings=False,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": section})
    vision = {"depth": 1, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
              "out_hidden_size": text["hidden_size"], "fullatt_block_indexes": [0], "window_size": 112,
              "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2}
    audio = {"encoder_layers": 1, "d_model": 32, "encoder_attention_heads": 2, "encoder_ffn_dim": 64,
             "output_dim": text["hidden_size"], "n_window": 100, "num_mel_bins": 128, "max_source_positions": 1500}
    return Qwen2_5OmniThinkerConfig(
        text_config=text, vision_config=vision, audio_config=audio,
        audio_token_index=IDS["audio"], image_token_index=IDS["image"], video_token_index=IDS["video"],
        audio_start_token_id=IDS["audio_bos"], audio_end_token_id=IDS["audio_eos"],
        vision_start_token_id=IDS["vision_bos"], vision_end_token_id=IDS["vision_eos"],
        user_token_id=IDS["im_start"], position_id_per_seconds=25, seconds_per_chunk=2,
    )


def build_prompt(tokens: int, device) -> torch.Tensor:
    """Text prefix, <vision_bos><audio_bos>, interleaved video/audio chunks, <audio_eos><vision_eos>, text."""
    media = max(0, tokens - TEXT_TOKENS - 4)
    body: list[int] = []
    while len(body) < media:
        body += [IDS["video"]] * min(VIDEO_PER_CHUNK, media - len(body))
        body += [IDS["audio"]] * min(AUDIO_PER_CHUNK, media - len(body))
    ids = ([IDS["text"]] * 60 + [IDS["vision_bos"], IDS["audio_bos"]] + body
           + [IDS["audio_eos"], IDS["vision_eos"]] + [IDS["text"]] * (TEXT_TOKENS - 60))
    return torch.tensor([ids], device=device)


class Timer:
    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def __call__(self, fn) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1000.0
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--attn", default="sdpa", help="attention implementation (sdpa, eager, flash_attention_2)")
    p.add_argument("--tokens", type=int, default=4000)
    p.add_argument("--layers", type=int, default=0, help="decoder layers (default 8; 28 with --real-7b-widths)")
    p.add_argument("--vocab", type=int, default=8192, help="vocabulary of the scaled model (7B widths: 152064)")
    p.add_argument("--real-7b-widths", action="store_true", help="Qwen2.5-Omni-7B text widths, random weights")
    p.add_argument("--drop-after", type=int, default=2)
    p.add_argument("--selection", default="strided", choices=["strided", "attention"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--warmup-tokens", type=int, default=-1,
                   help="prompt length of the warm-up passes (default: 512 on CPU, the full prompt on a GPU)")
    p.add_argument("--engine-overhead", action="store_true", help="also time the engine with a keep-all selector")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from transformers import Qwen2_5OmniThinkerForConditionalGeneration

    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t_build = time.perf_counter()
    config = build_config(args)
    with torch.device(device):  # weights are created on the target device directly
        thinker = Qwen2_5OmniThinkerForConditionalGeneration._from_config(
            config, dtype=dtype, attn_implementation=args.attn).eval()
    adapter = adapter_for(thinker)
    dims = adapter.dims()
    ids = build_prompt(args.tokens, device)
    seq = ids.shape[1]
    n_video, n_audio = int((ids == IDS["video"]).sum()), int((ids == IDS["audio"]).sum())
    positions = torch.arange(seq, device=device).view(1, 1, -1).expand(3, 1, -1)
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "position_ids": positions, "use_cache": True}
    t_build = time.perf_counter() - t_build

    warm_tokens = args.warmup_tokens if args.warmup_tokens >= 0 else (512 if device.type == "cpu" else args.tokens)
    warm_ids = build_prompt(max(min(warm_tokens, args.tokens), TEXT_TOKENS + 20), device)
    warm_positions = torch.arange(warm_ids.shape[1], device=device).view(1, 1, -1).expand(3, 1, -1)
    warm_inputs = {"input_ids": warm_ids, "attention_mask": torch.ones_like(warm_ids),
                   "position_ids": warm_positions, "use_cache": True}
    current = {"inputs": inputs}

    def forward():
        with torch.inference_mode():
            thinker.model.rope_deltas = None
            thinker(**current["inputs"])

    engines = {"drop90": Engine(thinker, adapter, KeepTextAndTenthOfMedia(args.drop_after, 0.1, args.selection))}
    if args.engine_overhead:
        engines["engine"] = Engine(thinker, adapter, KeepEverything())
    variants = ["full"] + (["engine"] if args.engine_overhead else []) + ["drop90"]
    timer = Timer(device)
    times: dict[str, list[float]] = {v: [] for v in variants}
    records: dict[str, list] = {v: [] for v in variants}

    def run(variant: str) -> float:
        engine = engines.get(variant)
        if engine is None:
            return timer(forward)
        with engine:
            dt = timer(forward)
        records[variant].extend(engine.pop_records())
        return dt

    current["inputs"] = warm_inputs
    for _ in range(args.warmup):
        for v in variants:
            run(v)
    current["inputs"] = inputs
    for v in variants:
        records[v].clear()
    for _ in range(args.repeats):
        for v in variants:
            times[v].append(run(v))

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {gpu}; dtype {args.dtype}; attention {args.attn}; torch {torch.__version__}")
    print(f"model: random Qwen2.5-Omni Thinker, text {dims.num_layers} layers, hidden {dims.hidden}, "
          f"intermediate {dims.intermediate}, heads {dims.heads}/{dims.kv_heads} (head_dim {dims.head_dim}), "
          f"vocab {dims.vocab}; built in {t_build:.1f} s")
    print(f"prompt: {seq} tokens = {seq - n_video - n_audio} text + {n_video} video + {n_audio} audio placeholders")
    print(f"selection: keep all text + 10% of media after layer {args.drop_after} ({args.selection}), "
          f"kv_scope all_executed; {args.repeats} timed repeats after {args.warmup} warm-up "
          f"({warm_ids.shape[1]} tokens)")

    full_lengths = [seq] * dims.num_layers
    flops = {"full": prefill_flops(dims, full_lengths)}
    rec = records["drop90"][-1]
    flops["drop90"] = prefill_flops(dims, rec.layer_lengths, rec.final_length)
    if args.engine_overhead:
        r = records["engine"][-1]
        flops["engine"] = prefill_flops(dims, r.layer_lengths, r.final_length)
    print(f"layer lengths (drop90): {rec.layer_lengths}  events {[(l, n) for l, n, _ in rec.events]}")
    print()
    print(f"{'variant':<8} {'median s':>9} {'min s':>8} {'max s':>8} {'selection s':>12} {'llm s':>8} {'TFLOPs':>8}")
    for v in variants:
        ts = times[v]
        sel = llm = float("nan")
        if records[v]:
            sel = statistics.median(r.timings["selection"] for r in records[v])
            llm = statistics.median(r.timings["llm_prefill"] for r in records[v])
        print(f"{v:<8} {statistics.median(ts):>9.4f} {min(ts):>8.4f} {max(ts):>8.4f} {sel:>12.5f} {llm:>8.4f} "
              f"{flops[v] / 1e12:>8.3f}")
    speed = statistics.median(times["full"]) / statistics.median(times["drop90"])
    print()
    print(f"time ratio full/drop90:  {speed:.2f}x")
    print(f"FLOPs ratio full/drop90: {flops['full'] / flops['drop90']:.2f}x")
    if args.engine_overhead:
        over = statistics.median(times["engine"]) / statistics.median(times["full"]) - 1
        print(f"engine overhead (keep-all vs unpatched): {100 * over:+.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
