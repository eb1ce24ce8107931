"""Random: keep a uniformly random subset of each modality before the LLM (seats-reference 12.2).

Per modality over all its tokens (no windows): ratio 1.0 or no tokens -> keep all; otherwise
k = min(T, max(floor(ratio * T), 1)) tokens, the first k of a random permutation.  Upstream draws
the permutation from the unseeded global generator; here it comes from ``ctx.generator``, seeded
per sample by the engine from the run seed and the sample id, so runs are reproducible.
"""

from __future__ import annotations

import math

import torch

from methods import MethodConfigError, ModelInfo, register
from seats_exp.selection import AUDIO, VIDEO, BaseSelector, PlanCounts, PlanInput, Selection, SelectionContext


def random_keep_count(ratio: float, total: int) -> int:
    """floor-based count (upstream Random uses floor where SEATS/FastV use round, section 2 item 18)."""
    if total == 0 or ratio >= 1.0:
        return total
    if ratio <= 0.0:
        return 0
    return min(total, max(math.floor(ratio * total), 1))


class RandomSelector(BaseSelector):
    name = "random"

    def __init__(self, video_ratio: float, audio_ratio: float):
        self.video_ratio = video_ratio
        self.audio_ratio = audio_ratio

    def before_llm(self, ctx: SelectionContext) -> Selection | None:
        if self.video_ratio >= 1.0 and self.audio_ratio >= 1.0:
            return None
        keep = torch.ones_like(ctx.modality, dtype=torch.bool)
        for code, ratio in ((VIDEO, self.video_ratio), (AUDIO, self.audio_ratio)):
            positions = torch.nonzero(ctx.modality == code).flatten()
            k = random_keep_count(ratio, positions.numel())
            if k == positions.numel():
                continue
            perm = torch.randperm(positions.numel(), generator=ctx.generator, device=positions.device)
            keep[positions] = False
            keep[positions[perm[:k]]] = True
        return Selection(keep=keep, label="random")

    def plan(self, inp: PlanInput) -> PlanCounts:
        counts = (random_keep_count(self.video_ratio, inp.video_tokens), random_keep_count(self.audio_ratio, inp.audio_tokens))
        return PlanCounts(per_layer=[counts] * inp.num_layers)

    def describe(self) -> dict:
        return {"name": self.name, "video_ratio": self.video_ratio, "audio_ratio": self.audio_ratio}


@register("random")
def build(params: dict, video_ratio: float, audio_ratio: float, model: ModelInfo) -> RandomSelector:
    if params:
        raise MethodConfigError(f"method random takes no settings beyond the schedule, got {sorted(params)}")
    return RandomSelector(video_ratio, audio_ratio)
