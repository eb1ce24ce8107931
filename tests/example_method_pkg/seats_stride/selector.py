# seats_stride/selector.py
import torch
from methods import MethodConfigError, register
from seats_exp.selection import AUDIO, VIDEO, BaseSelector, PlanCounts, Selection

MODALITIES = {"video": VIDEO, "audio": AUDIO}

def keep_count(ratio, total):
    return total if total == 0 or ratio >= 1.0 else min(total, max(1, round(ratio * total)))

class StrideSelector(BaseSelector):
    name = "stride"
    def __init__(self, ratios):
        self.ratios = ratios                       # {"video": 0.3, "audio": 0.65}
    def before_llm(self, ctx):                     # evenly spaced tokens of each thinned modality
        keep, cut = torch.ones_like(ctx.modality, dtype=torch.bool), False
        for modality, ratio in self.ratios.items():
            positions = torch.nonzero(ctx.modality == MODALITIES[modality]).flatten()
            total = positions.numel()
            k = keep_count(ratio, total)
            if k < total:
                keep[positions] = False
                keep[positions[torch.arange(k, device=positions.device) * total // k]] = True
                cut = True
        return Selection(keep=keep, label="stride") if cut else None
    def plan(self, inp):                           # what plan mode and the method matrix check
        counts = (keep_count(self.ratios.get("video", 1.0), inp.video_tokens),
                  keep_count(self.ratios.get("audio", 1.0), inp.audio_tokens))
        return PlanCounts(per_layer=[counts] * inp.num_layers)
    def describe(self):
        return {"name": self.name, "ratios": dict(self.ratios)}

@register("stride")
def build(params, video_ratio, audio_ratio, model):
    params = dict(params)
    modalities = params.pop("modalities", ["video", "audio"])
    if params:
        raise MethodConfigError(f"method stride has no settings {sorted(params)}; it takes: modalities")
    if isinstance(modalities, str) or not modalities or set(modalities) - set(MODALITIES):
        raise MethodConfigError(f"method.modalities={modalities!r}: give a non-empty list of {sorted(MODALITIES)}")
    ratio = {"video": video_ratio, "audio": audio_ratio}
    return StrideSelector({m: ratio[m] for m in MODALITIES if m in modalities})
