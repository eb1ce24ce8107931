"""Full tokens: the unpruned model (every hook keeps everything)."""

from __future__ import annotations

from methods import ModelInfo, MethodConfigError, register
from seats_exp.selection import BaseSelector


class FullTokens(BaseSelector):
    name = "full_tokens"


@register("full_tokens")
def build(params: dict, video_ratio: float, audio_ratio: float, model: ModelInfo) -> FullTokens:
    if params:
        raise MethodConfigError(f"method full_tokens takes no settings, got {sorted(params)}")
    return FullTokens()
