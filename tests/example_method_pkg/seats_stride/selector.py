"""``stride``: keep k = max(1, round(ratio * T)) evenly spaced tokens of each thinned modality.

Registered with seats-exp through the ``seats_exp.methods`` entry point of this package.
"""

from __future__ import annotations

import torch

from methods import MethodConfigError, ModelInfo, register
from seats_exp.selection import AUDIO, VIDEO, BaseSelector, PlanCounts, PlanInput, Selection, SelectionContext

MODALITIES = {"video": VIDEO, "audio": AUDIO}


def keep_count(ratio: float, total: int) -> int:
    if total == 0 or ratio >= 1.0:
        return total
    return min(total, max(1, round(ratio * total)))


class StrideSelector(BaseSelector):
    name = "stride"

    def __init__(self, ratios: dict[str, float]):
        self.ratios = ratios  # modality name -> retention ratio, for the thinned modalities only

    def before_llm(self, ctx: SelectionContext) -> Selection | None:
        keep = torch.ones_like(ctx.modality, dtype=torch.bool)
        cut = False
        for modality, ratio in self.ratios.items():
            positions = torch.nonzero(ctx.modality == MODALITIES[modality]).flatten()
            total = positions.numel()
            k = keep_count(ratio, total)
            if k == total:
                continue
            picks = torch.arange(k, device=positions.device) * total // k  # distinct, evenly spaced
            keep[positions] = False
            keep[positions[picks]] = True
            cut = True
        return Selection(keep=keep, label="stride") if cut else None

    def plan(self, inp: PlanInput) -> PlanCounts:
        video = keep_count(self.ratios.get("video", 1.0), inp.video_tokens)
        audio = keep_count(self.ratios.get("audio", 1.0), inp.audio_tokens)
        return PlanCounts(per_layer=[(video, audio)] * inp.num_layers)

    def describe(self) -> dict:
        return {"name": self.name, "ratios": dict(self.ratios)}


@register("stride")
def build(params: dict, video_ratio: float, audio_ratio: float, model: ModelInfo) -> StrideSelector:
    params = dict(params)
    modalities = params.pop("modalities", ["video", "audio"])
    if params:
        raise MethodConfigError(f"method stride has no settings {sorted(params)}; it takes: modalities")
    if isinstance(modalities, str) or not modalities or set(modalities) - set(MODALITIES):
        raise MethodConfigError(f"method.modalities={modalities!r}: give a non-empty list of {sorted(MODALITIES)}")
    ratio = {"video": video_ratio, "audio": audio_ratio}
    return StrideSelector({m: ratio[m] for m in MODALITIES if m in modalities})
