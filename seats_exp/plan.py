"""``seats-exp mode=plan``: what a configuration does to a described input, without weights.

The input is described by ``plan.video_seconds``, ``plan.fps``, ``plan.tokens_per_grid``,
``plan.audio_seconds`` and ``plan.text_tokens``: ``video_seconds * fps / 2`` temporal grids (two
frames per grid) of ``tokens_per_grid`` tokens, ``audio_seconds * rate`` audio tokens (25/s on
Qwen2.5-Omni, 13/s on Qwen3-Omni).  The method's ``plan`` gives the (video, audio) tokens entering
every layer; FLOPs use the model config's ``dims`` and the same meter as a real run.
"""

from __future__ import annotations

import json
import math

from seats_exp.config import RunConfig, build_selector_for, model_info
from seats_exp.cost import prefill_flops
from seats_exp.models.adapters import ModelDims
from seats_exp.selection import PlanInput


def dims_from_config(rc: RunConfig) -> ModelDims:
    d = dict(rc.model.dims or {})
    if not d:
        raise ValueError(f"model.dims is not set for model={rc.model.name}; plan mode needs the decoder dimensions")
    moe = d.get("experts_per_token", 0)
    return ModelDims(num_layers=int(rc.model.num_layers), moe_layers=tuple(range(int(rc.model.num_layers))) if moe else (),
                     **d)


def plan_input(rc: RunConfig) -> PlanInput:
    p = rc.plan
    info = model_info(rc)
    grids = int(math.floor(float(p["video_seconds"]) * float(p["fps"]) / 2))
    tokens_per_grid = int(p["tokens_per_grid"])
    audio = int(round(float(p["audio_seconds"]) * info.audio_tokens_per_second))
    return PlanInput(video_tokens=grids * tokens_per_grid, audio_tokens=audio, text_tokens=int(p["text_tokens"]),
                     video_tokens_per_grid=tokens_per_grid, num_grids=grids,
                     audio_tokens_per_second=info.audio_tokens_per_second, num_layers=info.num_layers)


def make_plan(rc: RunConfig) -> dict:
    selector = build_selector_for(rc)
    inp = plan_input(rc)
    counts = selector.plan(inp)
    dims = dims_from_config(rc)
    layers = [{"layer": i + 1, "video": v, "audio": a, "text": inp.text_tokens, "exact": how}
              for i, ((v, a), how) in enumerate(zip(counts.per_layer, counts.layer_exactness()))]
    lengths = [row["video"] + row["audio"] + row["text"] for row in layers]
    full_len = inp.video_tokens + inp.audio_tokens + inp.text_tokens
    flops = prefill_flops(dims, lengths)
    flops_full = prefill_flops(dims, [full_len] * dims.num_layers)
    out = {
        "model": rc.model.name, "method": rc.method.name, "schedule_name": rc.schedule.name,
        "ratios": {"video": rc.schedule.video, "audio": rc.schedule.audio},
        "input": {"video": inp.video_tokens, "audio": inp.audio_tokens, "text": inp.text_tokens,
                  "grids": inp.num_grids, "tokens_per_grid": inp.video_tokens_per_grid},
        "layers": layers,
        "avg_retention": {
            "video": sum(r["video"] for r in layers) / (len(layers) * inp.video_tokens) if inp.video_tokens else None,
            "audio": sum(r["audio"] for r in layers) / (len(layers) * inp.audio_tokens) if inp.audio_tokens else None,
        },
        "flops": flops, "flops_full": flops_full, "flops_ratio": flops_full / flops,
    }
    out.update(counts.details)
    return out


def format_plan(plan: dict) -> str:
    lines = [f"plan: model={plan['model']} method={plan['method']} schedule={plan['schedule_name']} "
             f"(video {plan['ratios']['video']}, audio {plan['ratios']['audio']})",
             f"input: {plan['input']['video']} video ({plan['input']['grids']} grids x {plan['input']['tokens_per_grid']}), "
             f"{plan['input']['audio']} audio, {plan['input']['text']} text tokens",
             f"{'layer':>5} {'video':>7} {'audio':>7} {'text':>6} {'total':>7}"]
    for r in plan["layers"]:
        lines.append(f"{r['layer']:>5} {r['video']:>7} {r['audio']:>7} {r['text']:>6} {r['video'] + r['audio'] + r['text']:>7}")
    lines.append(f"prefill FLOPs: {plan['flops'] / 1e12:.2f} TFLOPs vs full {plan['flops_full'] / 1e12:.2f} "
                 f"TFLOPs -> {plan['flops_ratio']:.2f}x fewer")
    if "schedule" in plan and isinstance(plan["schedule"], dict):
        s = plan["schedule"]
        lines.append(f"schedule: video_keep={s.get('video_keep')} audio_keep={s.get('audio_keep')}")
    if isinstance(plan.get("settings"), dict):  # method-specific resolved settings (e.g. FastV's ratios)
        lines.append("settings: " + " ".join(f"{k}={v}" for k, v in plan["settings"].items()))
    if any(r.get("exact", "exact") != "exact" for r in plan["layers"]):
        lines.append("counts per layer are exact except where the plan can only give the total (total) or an "
                     "estimate (approximate): " + ", ".join(f"{r['layer']}:{r['exact']}" for r in plan["layers"]
                                                            if r.get("exact", "exact") != "exact"))
    for warning in plan.get("warnings", []):
        lines.append(f"warning: {warning}")
    return "\n".join(lines)


def run_plan(rc: RunConfig) -> dict:
    plan = make_plan(rc)
    print(json.dumps(plan) if rc.plan.get("json") else format_plan(plan))
    return plan
