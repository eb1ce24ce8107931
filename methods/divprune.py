"""DivPrune and DivPrune-om: greedy max-min diversity on the LLM input embeddings, before the LLM
(baselines-reference 4).

Signal: cosine distance ``1 - cos(x_i, x_j)`` between the rows of the LLM input embeddings of one
modality.  Selection: the farthest-point kernel shared with SEATS Stage I
(``methods.diversity.farthest_point_keep``), unweighted: first pick = argmax of every column's
second-smallest distance, then the token farthest from everything picked so far; lowest index on
ties; kept indices in sequence order (a keep-mask, so original M-RoPE positions stay).

* ``divprune`` (video only, SEATS' "audio-intact" rows such as "35 (24-100)"): the schedule pair is
  reallocated per sample with ``audio_intact_reallocate`` (the kept total preferentially to audio);
  video keeps ``M = round(r_v' * N_v)``; audio is kept whole unless the reallocation had to lower
  ``r_a' < 1`` (very low budgets), then dropped uniformly at random (floor count, as Random).
* ``divprune_omni`` ("-om" rows, "35 (30-65)"): each modality with its own schedule ratio.

Settings (``conf/method/divprune*.yaml``):

* ``window``: ``none`` (default, faithful to the original: one global selection per modality) or
  ``video_grids:<k>`` and/or ``audio_seconds:<s>`` (joined by ``+``), consecutive windows of ``k``
  temporal grids / ``round(s x audio tokens per second)`` tokens, each keeping
  ``max(1, min(n, round(r * n)))`` -- exactly SEATS Stage I without attention weighting
  (baselines-reference 4.2).  ``audio_seconds`` is only meaningful for ``divprune_omni``.

Distances are computed in float32 (the original runs in the model dtype; float32 is the spec's
recommendation for determinism, recorded in ``describe``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from methods import MethodConfigError, ModelInfo, register, with_defaults
from methods.budget import audio_intact_reallocate
from methods.diversity import windowed_keep_mask
from methods.random import random_keep_count
from seats_exp.selection import AUDIO, VIDEO, BaseSelector, PlanCounts, PlanInput, Selection, SelectionContext


def global_keep_count(ratio: float, total: int) -> int:
    """DivPrune's budget over all N tokens: ``M = int(round(r * N))`` (Python rounding), at most N."""
    return min(total, int(round(ratio * total)))


def window_keep_count(ratio: float, length: int) -> int:
    """Windowed mode (SEATS Stage I's count): ``max(1, min(n, round(r * n)))``."""
    return max(1, min(length, round(ratio * length)))


@dataclass(frozen=True)
class Window:
    video_grids: int | None = None  # None: one global video selection
    audio_seconds: float | None = None  # None: one global audio selection

    def text(self) -> str:
        parts = []
        if self.video_grids is not None:
            parts.append(f"video_grids:{self.video_grids}")
        if self.audio_seconds is not None:
            parts.append(f"audio_seconds:{self.audio_seconds:g}")
        return "+".join(parts) or "none"


def parse_window(value, *, audio_allowed: bool) -> Window:
    allowed = "none, video_grids:<k>, audio_seconds:<s> or both joined by '+'" if audio_allowed else \
        "none or video_grids:<k>"
    if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
        return Window()
    if not isinstance(value, str):
        raise MethodConfigError(f"method.window: expected {allowed}, got {value!r}")
    video, audio = None, None
    for part in (p.strip() for p in re.split(r"[+,]", value) if p.strip()):
        m = re.fullmatch(r"(video_grids|audio_seconds):\s*([0-9.]+)", part)
        if not m:
            raise MethodConfigError(f"method.window: expected {allowed}, got {value!r}")
        key, number = m.group(1), m.group(2)
        if key == "video_grids":
            if video is not None or not re.fullmatch(r"[0-9]+", number) or int(number) < 1:
                raise MethodConfigError(f"method.window: video_grids takes one positive integer, got {value!r}")
            video = int(number)
        else:
            if not audio_allowed:
                raise MethodConfigError(f"method.window: divprune keeps audio intact, so audio_seconds has no "
                                        f"effect; expected {allowed}, got {value!r}")
            if audio is not None or float(number) <= 0:
                raise MethodConfigError(f"method.window: audio_seconds takes one positive number, got {value!r}")
            audio = float(number)
    return Window(video, audio)


def divprune_keep(features: torch.Tensor, ratio: float, window_tokens: int | None) -> torch.Tensor:
    """DivPrune keep mask [N] over one modality's rows ``features`` [N, D] (global or windowed)."""
    num = features.shape[0]
    if window_tokens is None:
        return windowed_keep_mask(features, None, max(num, 1), lambda n: global_keep_count(ratio, n))
    return windowed_keep_mask(features, None, window_tokens, lambda n: window_keep_count(ratio, n))


def planned_count(total: int, ratio: float, window_tokens: int | None) -> int:
    if total == 0 or ratio >= 1.0:
        return total
    if window_tokens is None:
        return global_keep_count(ratio, total)
    window_tokens = max(1, min(window_tokens, total))
    full, last = divmod(total, window_tokens)
    return full * window_keep_count(ratio, window_tokens) + (window_keep_count(ratio, last) if last else 0)


class DivPrune(BaseSelector):
    """``omni=False``: video only with audio-intact reallocation; ``omni=True``: both modalities."""

    def __init__(self, video_ratio: float, audio_ratio: float, window: Window, omni: bool, audio_tokens_per_second: float):
        self.name = "divprune_omni" if omni else "divprune"
        self.video_ratio = video_ratio
        self.audio_ratio = audio_ratio
        self.window = window
        self.omni = omni
        self.audio_window_tokens = (None if window.audio_seconds is None
                                    else max(1, round(window.audio_seconds * audio_tokens_per_second)))

    def _video_window_tokens(self, tokens_per_grid: int) -> int | None:
        if self.window.video_grids is None:
            return None
        return self.window.video_grids * tokens_per_grid

    def ratios(self, num_video: int, num_audio: int) -> tuple[float, float]:
        """The (video, audio) ratios applied to a sample with these token counts."""
        if self.omni:
            return self.video_ratio, self.audio_ratio
        if num_video == 0:
            return self.video_ratio, 1.0  # nothing to reallocate to: audio stays intact
        return audio_intact_reallocate(self.video_ratio, self.audio_ratio, num_video, num_audio)

    def before_llm(self, ctx: SelectionContext) -> Selection | None:
        if ctx.embeds is None:
            return None
        video = ctx.modality == VIDEO
        audio = ctx.modality == AUDIO
        num_video, num_audio = int(video.sum()), int(audio.sum())
        video_ratio, audio_ratio = self.ratios(num_video, num_audio)
        keep = torch.ones(ctx.length, dtype=torch.bool, device=ctx.modality.device)
        if num_video and video_ratio < 1.0:
            window = self._video_window_tokens(ctx.video_tokens_per_grid)
            if window is not None and window <= 0:
                raise ValueError("divprune: window video_grids needs the video grid (tokens per grid is 0)")
            keep[video] = divprune_keep(ctx.embeds[video], video_ratio, window)
        if num_audio and audio_ratio < 1.0:
            if self.omni:
                keep[audio] = divprune_keep(ctx.embeds[audio], audio_ratio, self.audio_window_tokens)
            else:  # audio-intact mode had to take audio below 1: uniform random drop (SEATS)
                positions = torch.nonzero(audio).flatten()
                k = random_keep_count(audio_ratio, num_audio)
                perm = torch.randperm(num_audio, generator=ctx.generator, device=positions.device)
                keep[positions] = False
                keep[positions[perm[:k]]] = True
        return Selection(keep=keep, label=self.name)

    def plan(self, inp: PlanInput) -> PlanCounts:
        video_ratio, audio_ratio = self.ratios(inp.video_tokens, inp.audio_tokens)
        video = planned_count(inp.video_tokens, video_ratio, self._video_window_tokens(inp.video_tokens_per_grid))
        if self.omni:
            audio = planned_count(inp.audio_tokens, audio_ratio, self.audio_window_tokens)
        else:
            audio = random_keep_count(audio_ratio, inp.audio_tokens)
        return PlanCounts(per_layer=[(video, audio)] * inp.num_layers,
                          details={"divprune": {"video_ratio": video_ratio, "audio_ratio": audio_ratio,
                                                "window": self.window.text()}})

    def describe(self) -> dict:
        return {"name": self.name, "video_ratio": self.video_ratio, "audio_ratio": self.audio_ratio,
                "window": self.window.text(), "audio_intact": not self.omni, "distance_dtype": "float32"}


def _build(params: dict, video_ratio: float, audio_ratio: float, model: ModelInfo, omni: bool) -> DivPrune:
    name = "divprune_omni" if omni else "divprune"
    window = parse_window(with_defaults(name, params, {"window": "none"})["window"], audio_allowed=omni)
    return DivPrune(video_ratio, audio_ratio, window, omni, model.audio_tokens_per_second)


@register("divprune")
def build(params: dict, video_ratio: float, audio_ratio: float, model: ModelInfo) -> DivPrune:
    return _build(params, video_ratio, audio_ratio, model, omni=False)


@register("divprune_omni")
def build_omni(params: dict, video_ratio: float, audio_ratio: float, model: ModelInfo) -> DivPrune:
    return _build(params, video_ratio, audio_ratio, model, omni=True)
