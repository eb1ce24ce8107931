"""``seats-exp mode=bench``: what every method really saves on a prefill, measured.

A random Qwen2.5-Omni Thinker (transformers' own class) is built from the widths of ``bench.text``,
``bench.vision`` and ``bench.audio`` (a preset under ``conf/bench/``: the real 7B widths for a
GPU, a documented scaled configuration for CPU, a tiny one for the test).  Its input has the real
audio-in-video layout of the processor: a text prefix, ``<vision_bos><audio_bos>``, per 2-s chunk
the video tokens of its temporal grids then its 50 audio tokens, ``<audio_eos><vision_eos>``, a
text suffix; random pixel patches and mel features go through the real ViT and audio encoder, and
the Thinker computes its own M-RoPE positions.  Nothing is synthetic about the prefill itself.

Variants: ``none`` (the unpatched Thinker, no engine) and every registered method x every
schedule in ``bench.schedules`` (``full_tokens`` once, it ignores the schedule), each method built
from its ``conf/method/<name>.yaml`` defaults (plus ``bench.method_overrides.<name>``) for the
bench model, through the same engine and statistics collector as a run.  For each input length:
one warm-up round on a short input, then ``bench.repeats`` rounds, the variant order rotated every
round so drifts of a shared machine hit every variant alike.

Timings: **thread CPU time** (``time.thread_time``, with ``torch.set_num_threads(bench.threads)``,
1 by default) on CPU; **CUDA events** on a GPU.  The engine splits each prefill into encoders,
encoder statistics, selection (before the LLM / inside it) and LLM prefill.  Peak memory: the
rise of the peak RSS over the RSS before the call (``/proc/self/clear_refs``) on CPU, the
allocator peak minus what was allocated before on a GPU.  FLOPs: the meter's figure
(``seats_exp.cost.prefill_flops``: full S^2 attention and the LM head on every remaining
position, the paper's convention) and a causal-adjusted one (attention on the causal half,
``prefill_flops_causal``) beside the measured time ratios.

Writes ``bench.json`` (every repeat, medians, spreads, ratios) and prints one table per length.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import re
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("seats_exp")

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"

# token ids of the bench model (any ids below the vocabulary size; they mirror the Qwen2.5 layout)
IDS = {"text": 100, "video": 7, "audio": 8, "image": 9, "vision_bos": 10, "vision_eos": 11, "audio_bos": 12,
       "audio_eos": 13, "im_start": 14, "pad": 15, "eos": 16}
TEXT_PREFIX, TEXT_SUFFIX = 60, 90  # 150 text tokens as in seats-reference section 11
POSITION_ID_PER_SECOND, SECONDS_PER_CHUNK = 25, 2  # Qwen2.5-Omni processor constants
MEL_FRAMES_PER_SECOND = 100  # Whisper features: 10 ms hop
SUPPORTED_FAMILIES = ("qwen2_5_omni",)


class BenchConfigError(ValueError):
    """An invalid ``bench.*`` setting; the message names the key."""


# =============================================================================================
# model and inputs
# =============================================================================================


def build_thinker(b: dict, device: torch.device, dtype: torch.dtype):
    """A random Qwen2.5-Omni Thinker with the preset's widths, created on ``device`` directly."""
    from transformers import Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration

    text = dict(b["text"])
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    section = [head_dim // 8, head_dim * 3 // 16, head_dim * 3 // 16]  # [16, 24, 24] at head_dim 128
    section[0] += head_dim // 2 - sum(section)
    text.update(max_position_embeddings=32768, eos_token_id=IDS["eos"], pad_token_id=IDS["pad"],
                tie_word_embeddings=False,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": section})
    vision = {"patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, "window_size": 112,
              **dict(b["vision"]), "out_hidden_size": text["hidden_size"]}
    vision.setdefault("fullatt_block_indexes", [vision["depth"] - 1])
    audio = {"n_window": 100, "num_mel_bins": 128, "max_source_positions": 1500, **dict(b["audio"]),
             "output_dim": text["hidden_size"]}
    config = Qwen2_5OmniThinkerConfig(
        text_config=text, vision_config=vision, audio_config=audio,
        audio_token_index=IDS["audio"], image_token_index=IDS["image"], video_token_index=IDS["video"],
        audio_start_token_id=IDS["audio_bos"], audio_end_token_id=IDS["audio_eos"],
        vision_start_token_id=IDS["vision_bos"], vision_end_token_id=IDS["vision_eos"],
        user_token_id=IDS["im_start"], position_id_per_seconds=POSITION_ID_PER_SECOND,
        seconds_per_chunk=SECONDS_PER_CHUNK,
    )
    torch.manual_seed(int(b.get("seed", 0)))
    with torch.device(device):
        thinker = Qwen2_5OmniThinkerForConditionalGeneration._from_config(
            config, dtype=dtype, attn_implementation=b["attn_implementation"])
    return thinker.eval()


@dataclass
class BenchInput:
    kwargs: dict
    tokens: int
    video: int
    audio: int
    text: int
    seconds: int


def _chunk_of(values: list[float], per_chunk: int) -> list[int]:
    return [int(v // per_chunk) for v in values]


def build_input(thinker, b: dict, target_tokens: int, device, dtype) -> BenchInput:
    """An audio-in-video prompt of about ``target_tokens`` tokens (the processor's layout)."""
    grid = b["grid"]
    gh, gw = int(grid["height_patches"]), int(grid["width_patches"])
    spg = float(grid["seconds_per_grid"])
    merge = thinker.config.vision_config.spatial_merge_size
    per_grid = gh * gw // (merge * merge)
    audio_per_second = POSITION_ID_PER_SECOND  # Qwen2.5: 25 LLM audio tokens per second
    per_second = per_grid / spg + audio_per_second
    media = max(1, target_tokens - TEXT_PREFIX - TEXT_SUFFIX - 4)
    seconds = max(2, round(media / per_second))
    grids = max(1, round(seconds / spg))
    frames = seconds * MEL_FRAMES_PER_SECOND
    feature_lengths = torch.tensor([frames])
    _, n_audio = thinker.model.audio_tower._get_feat_extract_output_lengths(feature_lengths)
    n_audio = int(n_audio[0])
    # chunking exactly as Qwen2_5OmniProcessor.replace_video_with_audio_token
    per_chunk = POSITION_ID_PER_SECOND * SECONDS_PER_CHUNK
    video_t = [g * spg * POSITION_ID_PER_SECOND for g in range(grids) for _ in range(per_grid)]
    video_chunk, audio_chunk = _chunk_of(video_t, per_chunk), _chunk_of(list(range(n_audio)), per_chunk)
    chunks = max(video_chunk[-1], audio_chunk[-1]) + 1
    body: list[int] = []
    for j in range(chunks):
        body += [IDS["video"]] * video_chunk.count(j)
        body += [IDS["audio"]] * audio_chunk.count(j)
    ids = ([IDS["text"]] * TEXT_PREFIX + [IDS["vision_bos"], IDS["audio_bos"]] + body
           + [IDS["audio_eos"], IDS["vision_eos"]] + [IDS["text"]] * TEXT_SUFFIX)
    vc = thinker.config.vision_config
    patch_dim = vc.in_channels * vc.temporal_patch_size * vc.patch_size ** 2
    gen = torch.Generator().manual_seed(int(b.get("seed", 0)) + target_tokens)
    pixels = torch.randn(grids * gh * gw, patch_dim, generator=gen)
    features = torch.randn(1, thinker.config.audio_config.num_mel_bins, frames, generator=gen)
    input_ids = torch.tensor([ids], device=device)
    kwargs = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "pixel_values_videos": pixels.to(device=device, dtype=dtype),
        "video_grid_thw": torch.tensor([[grids, gh, gw]], device=device),
        "video_second_per_grid": torch.tensor([spg], device=device),
        "input_features": features.to(device=device, dtype=dtype),
        "feature_attention_mask": torch.ones(1, frames, dtype=torch.long, device=device),
        "use_audio_in_video": True,
        "use_cache": True,
    }
    n_video = grids * per_grid
    return BenchInput(kwargs, len(ids), n_video, n_audio, len(ids) - n_video - n_audio, seconds)


# =============================================================================================
# methods
# =============================================================================================


def _method_yaml(name: str) -> dict:
    from omegaconf import OmegaConf

    path = CONF_DIR / "method" / f"{name}.yaml"
    if not path.exists():
        raise BenchConfigError(f"method {name!r} is registered but has no conf/method/{name}.yaml")
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)


def _schedule_pair(name: str, family: str) -> tuple[float, float]:
    from omegaconf import OmegaConf

    from seats_exp.config import ConfigError, _schedule

    path = CONF_DIR / "schedule" / f"{name}.yaml"
    if not path.exists():
        choices = sorted(p.stem for p in (CONF_DIR / "schedule").glob("*.yaml"))
        raise BenchConfigError(f"bench.schedules: no schedule {name!r}; choose from {choices}")
    try:
        s = _schedule(OmegaConf.to_container(OmegaConf.load(path), resolve=True), family)
    except ConfigError as exc:
        raise BenchConfigError(f"bench.schedules: {exc}") from exc
    return s.video, s.audio


def method_list(b: dict) -> list[str]:
    import methods

    registered = methods.available()
    wanted = b.get("methods", "all")
    if wanted in ("all", None):
        return registered
    wanted = [wanted] if isinstance(wanted, str) else list(wanted)
    unknown = sorted(set(wanted) - set(registered))
    if unknown:
        raise BenchConfigError(f"bench.methods: {unknown} are not registered methods; choose from {registered}")
    return wanted


def build_method(name: str, schedule: str, b: dict, model_info) -> Any:
    """The selector of ``name`` from its YAML defaults (+ ``bench.method_overrides``) for the bench model."""
    from methods import MethodConfigError, build_selector

    params = _method_yaml(name)
    params.pop("name", None)
    params.update(dict((b.get("method_overrides") or {}).get(name) or {}))
    video, audio = _schedule_pair(schedule, model_info.family)
    try:
        return build_selector(name, params, video, audio, model_info)
    except MethodConfigError as exc:
        raise BenchConfigError(f"method {name} (schedule {schedule}) does not build for the bench model "
                               f"{model_info.variant} ({model_info.num_layers} layers): {exc}; set "
                               f"bench.method_overrides.{name}.<key> or leave it out with bench.methods") from exc


# =============================================================================================
# measuring
# =============================================================================================


def _status_kib(key: str) -> int | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{key}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) if m else None


class Meter:
    """Times one call and its memory peak: thread CPU time / CUDA events; RSS peak / allocator peak."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.can_reset_rss = not self.cuda and os.access("/proc/self/clear_refs", os.W_OK)
        self.process_peak_kib = _status_kib("VmHWM")  # the largest peak RSS seen (model build included)

    def __call__(self, fn) -> tuple[float, int | None]:
        if self.cuda:
            torch.cuda.synchronize()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1000.0, int(torch.cuda.max_memory_allocated() - base)
        base = None
        if self.can_reset_rss:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
            base = _status_kib("VmRSS")
        t0 = time.thread_time()
        fn()
        dt = time.thread_time() - t0
        peak = _status_kib("VmHWM") if base is not None else None
        if peak is not None:
            self.process_peak_kib = max(self.process_peak_kib or 0, peak)
        return dt, (peak - base) * 1024 if peak is not None else None


@dataclass
class Variant:
    key: str  # "none", "full_tokens", "seats@r10"
    method: str
    schedule: str | None
    engine: Any = None
    selector: Any = None
    runs: list[dict] = field(default_factory=list)


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _spread(values):
    values = [v for v in values if v is not None]
    return [min(values), max(values)] if values else None


def _summarise(v: Variant, dims) -> dict:
    from seats_exp.cost import prefill_flops, prefill_flops_causal

    runs = v.runs
    out: dict[str, Any] = {"variant": v.key, "method": v.method, "schedule": v.schedule, "repeats": len(runs)}
    for key in ("total", "encoders", "encoder_stats", "selection", "selection_before_llm", "selection_in_llm",
                "llm_prefill", "peak_memory_bytes"):
        vals = [r.get(key) for r in runs]
        if any(x is not None for x in vals):
            out[key] = _median(vals)
            out[f"{key}_spread"] = _spread(vals)
    last = runs[-1] if runs else {}
    if last.get("layer_lengths"):
        out.update(layer_lengths=last["layer_lengths"], final_length=last["final_length"],
                   llm_input_length=last["llm_input_length"], events=last["events"])
        out["flops"] = prefill_flops(dims, last["layer_lengths"], last["final_length"])
        out["flops_causal"] = prefill_flops_causal(dims, last["layer_lengths"], last["final_length"])
    if v.selector is not None:
        out["settings"] = v.selector.describe()
    return out


def _ratios(rows: list[dict], input_tokens: int, dims) -> None:
    """Ratios against full_tokens (FLOPs, time) and the overheads, in place."""
    from seats_exp.cost import prefill_flops, prefill_flops_causal

    full_lengths = [input_tokens] * dims.num_layers
    flops_full, causal_full = prefill_flops(dims, full_lengths), prefill_flops_causal(dims, full_lengths)
    ref = next((r for r in rows if r["variant"] == "full_tokens"), None)
    none = next((r for r in rows if r["variant"] == "none"), None)
    for r in rows:
        if r.get("flops"):
            r["flops_ratio"] = flops_full / r["flops"]
            r["flops_ratio_causal"] = causal_full / r["flops_causal"]
        if ref is None:
            continue
        if r.get("total"):
            r["time_ratio_total"] = ref["total"] / r["total"]
        if r.get("llm_prefill"):
            r["time_ratio_llm"] = ref["llm_prefill"] / r["llm_prefill"]
            if r.get("flops_ratio_causal"):
                r["llm_ratio_vs_causal_flops"] = r["time_ratio_llm"] / r["flops_ratio_causal"]
        overhead = (r.get("encoder_stats") or 0.0) + (r.get("selection") or 0.0)
        if r.get("selection") is not None:
            r["selection_overhead"] = overhead
            r["overhead_vs_full_total"] = overhead / ref["total"]
            r["overhead_vs_full_llm"] = overhead / ref["llm_prefill"]
    if ref is not None and none is not None and none.get("total"):
        ref["engine_overhead_vs_none"] = ref["total"] / none["total"] - 1


def _record_fields(rec) -> dict:
    t = rec.timings
    split = getattr(rec, "selection_split", None) or {}
    return {
        "encoders": t.get("encoders"), "encoder_stats": t.get("encoder_stats"), "selection": t.get("selection"),
        "selection_before_llm": split.get("before_llm"), "selection_in_llm": split.get("after_layer"),
        "llm_prefill": t.get("llm_prefill"), "layer_lengths": list(rec.layer_lengths),
        "final_length": rec.final_length, "llm_input_length": rec.llm_input_length,
        "events": [list(e) for e in rec.events],
    }


# =============================================================================================
# the run
# =============================================================================================


def _fmt(x, spec: str, none: str = "-") -> str:
    return none if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


def format_table(result: dict) -> str:
    lines = []
    for length in result["lengths"]:
        inp = length["input"]
        lines.append(f"input: {inp['tokens']} tokens = {inp['text']} text + {inp['video']} video + {inp['audio']} "
                     f"audio ({inp['seconds']} s); times are medians of {result['repeats']} "
                     f"({result['timer']}), seconds")
        head = (f"{'variant':<18} {'total':>8} {'spread':>15} {'enc':>7} {'stats':>7} {'select':>7} {'llm':>8} "
                f"{'peakMiB':>8} {'FLOPs_x':>8} {'causal_x':>8} {'llm_x':>7} {'total_x':>7} {'ovh%':>6}")
        lines.append(head)
        for r in length["rows"]:
            spread = r.get("total_spread")
            peak = r.get("peak_memory_bytes")
            ovh = r.get("overhead_vs_full_total")
            lines.append(
                f"{r['variant']:<18} {_fmt(r.get('total'), '8.3f')} "
                f"{(f'{spread[0]:.3f}-{spread[1]:.3f}' if spread else '-'):>15} "
                f"{_fmt(r.get('encoders'), '7.3f'):>7} {_fmt(r.get('encoder_stats'), '7.3f'):>7} "
                f"{_fmt(r.get('selection'), '7.3f'):>7} {_fmt(r.get('llm_prefill'), '8.3f'):>8} "
                f"{_fmt(None if peak is None else peak / 2**20, '8.0f'):>8} "
                f"{_fmt(r.get('flops_ratio'), '8.2f'):>8} {_fmt(r.get('flops_ratio_causal'), '8.2f'):>8} "
                f"{_fmt(r.get('time_ratio_llm'), '7.2f'):>7} {_fmt(r.get('time_ratio_total'), '7.2f'):>7} "
                f"{_fmt(None if ovh is None else 100 * ovh, '6.2f'):>6}")
        ref = next((r for r in length["rows"] if r["variant"] == "full_tokens"), None)
        if ref is not None and ref.get("engine_overhead_vs_none") is not None:
            lines.append(f"engine attached with full_tokens vs no engine: {100 * ref['engine_overhead_vs_none']:+.2f}% "
                         "(total time)")
        lines.append("")
    for skipped in result.get("not_run") or []:
        lines.append(f"not run: {skipped['variant']}: {skipped['reason']}")
    if result.get("host_syncs"):
        lines.append(f"host-sync calls per prefill ({result['warmup_tokens']}-token input; repository code; at the cuts / "
                     "outside): " + ", ".join(f"{k} {h['total']} ({h['at_cuts']}/{h['outside_cuts']})"
                                             for k, h in result["host_syncs"].items()))
    if result.get("process_peak_rss_bytes"):
        lines.append(f"process peak RSS: {result['process_peak_rss_bytes'] / 2**30:.2f} GiB; "
                     f"wall time {result['wall_seconds']:.0f} s")
    lines.append("FLOPs_x: meter ratio full/method (full S^2 attention, LM head on every remaining position); "
                 "causal_x: the same with causal-half attention; llm_x / total_x: measured LLM-prefill / whole-"
                 "forward time ratio full_tokens/method; ovh%: (encoder statistics + selection) / full_tokens "
                 "whole-forward time")
    return "\n".join(lines)


def _validate(b: dict) -> None:
    if b.get("family", "qwen2_5_omni") not in SUPPORTED_FAMILIES:
        raise BenchConfigError(f"bench.family={b.get('family')!r}: the bench builds Qwen2.5-Omni Thinkers only "
                               f"(supported: {', '.join(SUPPORTED_FAMILIES)})")
    for key in ("repeats", "warmup"):
        value = b.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < (1 if key == "repeats" else 0):
            raise BenchConfigError(f"bench.{key}={value!r} must be an integer >= {1 if key == 'repeats' else 0}")
    tokens = b.get("tokens")
    if not tokens or any(isinstance(t, bool) or not isinstance(t, int) or t < 300 for t in tokens):
        raise BenchConfigError(f"bench.tokens={tokens!r} must be a list of input lengths >= 300 tokens")
    if b.get("dtype") not in ("float32", "bfloat16", "float16"):
        raise BenchConfigError(f"bench.dtype={b.get('dtype')!r}; choose float32, bfloat16 or float16")
    device = str(b.get("device", "cpu"))
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BenchConfigError(f"bench.device={device}: no CUDA device is available (use bench=cpu_scaled)")


def run_bench(b: dict, out_dir: str | Path) -> dict:
    """Measure every variant; write ``bench.json`` under ``out_dir``; print and return the result."""
    from methods import ModelInfo
    from seats_exp.engine import Engine
    from seats_exp.stats import EncoderStatsCollector

    _validate(b)
    device = torch.device(b.get("device", "cpu"))
    dtype = getattr(torch, b["dtype"])
    if b.get("threads"):
        torch.set_num_threads(int(b["threads"]))
    started = time.perf_counter()
    thinker = build_thinker(b, device, dtype)
    from seats_exp.models.adapters import adapter_for

    adapter = adapter_for(thinker)
    dims = adapter.dims()
    info = ModelInfo(variant=str(b["variant"]), family=adapter.family, num_layers=adapter.num_layers,
                     audio_tokens_per_second=adapter.audio_tokens_per_second)
    names = method_list(b)
    schedules = list(b.get("schedules") or ["r10"])
    variants = [Variant("none", "none", None)] if b.get("baseline", True) else []
    cpu_timer = None if device.type == "cuda" else time.thread_time
    not_run: list[dict] = []  # (method, schedule) pairs whose budget the method cannot reach
    for name in names:
        for schedule in (schedules if name != "full_tokens" else schedules[:1]):
            try:
                selector = build_method(name, schedule, b, info)
            except BenchConfigError as exc:
                if b.get("unbuildable", "skip") != "skip":
                    raise
                not_run.append({"variant": f"{name}@{schedule}", "reason": str(exc)})
                log.warning("bench: not run: %s", exc)
                continue
            stats = EncoderStatsCollector(adapter, selector.needs, selector.stats_request) if selector.needs else None
            engine = Engine(thinker, adapter, selector, kv_scope=b.get("kv_scope", "all_executed"), stats=stats,
                            cpu_timer=cpu_timer)
            key = name if name == "full_tokens" else f"{name}@{schedule}"
            variants.append(Variant(key, name, None if name == "full_tokens" else schedule, engine, selector))
    built = time.perf_counter() - started
    meter = Meter(device)

    def one(variant: Variant, inp: BenchInput, counter: HostSyncCounter | None = None) -> dict:
        def forward():
            thinker.model.rope_deltas = None
            with torch.inference_mode(), (counter or contextlib.nullcontext()):
                out = thinker(**inp.kwargs)
            del out

        if variant.engine is None:
            total, peak = meter(forward)
            return {"total": total, "peak_memory_bytes": peak}
        with variant.engine:
            total, peak = meter(forward)
            (rec,) = variant.engine.pop_records()
        return {"total": total, "peak_memory_bytes": peak, **_record_fields(rec)}

    lengths_out = []
    host_syncs: dict[str, dict] = {}
    warm = build_input(thinker, b, int(b.get("warmup_tokens") or min(b["tokens"])), device, dtype)
    for tokens in b["tokens"]:
        inp = build_input(thinker, b, int(tokens), device, dtype)
        for v in variants:
            v.runs = []
        for _ in range(int(b["warmup"])):
            for v in variants:
                one(v, warm)
        if b.get("count_host_syncs", True) and not host_syncs:
            for v in variants:  # one untimed prefill of the warm-up input per variant, counted
                one(v, warm)  # (the first prefill of a grid shape also builds cached layouts)
                counter = HostSyncCounter()
                one(v, warm, counter)  # counts the forward only (the record is read after it)
                host_syncs[v.key] = {"total": counter.total(), "at_cuts": counter.at_cuts,
                                     "outside_cuts": counter.outside_cuts, "library": counter.counts.get("library", 0),
                                     "by_site": {k: n for k, n in counter.counts.items() if k != "library"}}
        for rnd in range(int(b["repeats"])):
            shift = rnd % len(variants)
            for v in variants[shift:] + variants[:shift]:
                v.runs.append(one(v, inp))
        rows = [_summarise(v, dims) for v in variants]
        _ratios(rows, inp.tokens, dims)
        lengths_out.append({
            "input": {"tokens": inp.tokens, "video": inp.video, "audio": inp.audio, "text": inp.text,
                      "seconds": inp.seconds},
            "rows": rows,
            "runs": {v.key: v.runs for v in variants},
        })
        log.info("bench: %d tokens done", inp.tokens)

    result = {
        "preset": b.get("name"),
        "machine": {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
                    or platform.machine(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__, "python": platform.python_version(),
                    "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None},
        "timer": "CUDA events" if device.type == "cuda" else "thread CPU time",
        "memory": "allocator peak minus allocated before" if device.type == "cuda" else "peak RSS rise",
        "model": {"family": adapter.family, "variant": info.variant, "dtype": b["dtype"],
                  "attn_implementation": b["attn_implementation"], "text": dict(b["text"]),
                  "vision": dict(b["vision"]), "audio": dict(b["audio"])},
        "dims": vars(dims) | {"moe_layers": list(dims.moe_layers)},
        "methods": names, "schedules": schedules, "repeats": int(b["repeats"]), "warmup": int(b["warmup"]),
        "warmup_tokens": warm.tokens, "build_seconds": built,
        "not_run": not_run,  # variants that could not be built (e.g. a schedule outside a method's reach)
        "host_syncs": host_syncs,  # per variant, one prefill of the warm-up input (HostSyncCounter)
        "process_peak_rss_bytes": None if meter.process_peak_kib is None else meter.process_peak_kib * 1024,
        "lengths": lengths_out,
        "wall_seconds": time.perf_counter() - started,
    }
    out = Path(out_dir) / str(b.get("json_name") or "bench.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(format_table(result))
    print(f"bench JSON: {out}")
    return result


# =============================================================================================
# host-sync counting
# =============================================================================================

# Tensor operations that make the host wait for the device on a GPU: reading a value
# (item/bool/int/float/index/tolist), ops whose output size depends on the data (nonzero,
# masked_select, unique, bincount, repeat_interleave with tensor repeats), and boolean-mask indexing.
_READS = {"item", "tolist", "__bool__", "__int__", "__float__", "__index__"}
_DATA_DEPENDENT = {"nonzero", "argwhere", "masked_select", "unique", "unique_consecutive", "bincount"}
_INDEXING = {"__getitem__", "__setitem__", "index_put", "index_put_"}


def _has_bool_index(args) -> bool:
    stack = list(args[1:2]) if args else []
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor) and item.dtype == torch.bool:
            return True
        if isinstance(item, (tuple, list)):
            stack.extend(item)
    return False


class HostSyncCounter(torch.overrides.TorchFunctionMode):
    """Counts host-sync calls (see ``_READS``/``_DATA_DEPENDENT``/boolean-mask indexing) by call site.

    ``counts`` maps "file:function" of the innermost frame inside this repository's packages
    (seats_exp/, methods/, evaluation/) to the number of calls; calls made only from library code (transformers, torch) are
    grouped under "library".  ``at_cuts`` / ``outside_cuts`` split the repository's calls: at a cut
    = inside a selector hook the engine times, or the engine applying its result (``post``,
    ``_cut_llm_inputs``); outside = everything else (engine bookkeeping, encoder statistics, layer
    pre-hooks).  Works on CPU tensors too: it counts the calls, not the waits.
    """

    _CUT_FRAMES = {"_timed", "post", "_cut_llm_inputs"}

    def __init__(self):
        super().__init__()
        self.counts: dict[str, int] = {}
        self.at_cuts = 0
        self.outside_cuts = 0
        self._root = str(Path(__file__).resolve().parent.parent)
        self._packages = tuple(os.path.join(self._root, d) + os.sep for d in ("seats_exp", "methods", "evaluation"))
        self._engine = str(Path(__file__).resolve().parent / "engine.py")

    def _ours(self, name: str) -> bool:
        return (name.startswith(self._packages)
                and not name.endswith(("seats_exp/bench.py", "seats_exp/cli.py")))

    def _site(self) -> tuple[str, bool | None]:
        import sys

        frame, site = sys._getframe(2), None
        while frame is not None:
            name = frame.f_code.co_filename
            if site is None and self._ours(name):
                site = f"{os.path.relpath(name, self._root)}:{frame.f_code.co_name}"
            if name == self._engine and frame.f_code.co_name in self._CUT_FRAMES:
                return site, True
            frame = frame.f_back
        return site or "library", (False if site else None)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        sync = (name in _READS or name in _DATA_DEPENDENT
                or (name == "repeat_interleave" and len(args) > 1 and isinstance(args[1], torch.Tensor))
                or (name in _INDEXING and _has_bool_index(args)))
        if sync:
            site, at_cut = self._site()
            self.counts[site] = self.counts.get(site, 0) + 1
            if at_cut:
                self.at_cuts += 1
            elif at_cut is False:
                self.outside_cuts += 1
        return func(*args, **kwargs)

    def total(self, include_library: bool = False) -> int:
        return sum(n for site, n in self.counts.items() if include_library or site != "library")
