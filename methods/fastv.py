"""FastV and FastV-om: one drop inside the LLM, scored by the last text token (seats-reference 12.3;
baselines-reference 2.2).

* **Budget.**  The schedule's pair is the retention *averaged over all L layers*; the first K layers
  see every token, so the ratio applied after layer K is the setting ratio
  ``s = (avg*L - K)/(L - K)`` (``methods.budget.fastv_setting_ratio``), with L the loaded model's
  real depth.  ``s`` is negative when ``avg*L < K`` (Qwen2.5-Omni-7B R=10 video: -0.0123, seats-
  reference section 2 item 19): upstream then keeps one token; here that is reported (the converted
  ratios and a warning in ``describe()["warnings"]`` -> ``result.json`` ``method_settings``, plan
  mode's output, and the run log through the runner) and ``negative_setting: error`` makes it a
  configuration error instead.
* **Scores** (as SEATS Stage II, section 9.1): head-mean softmax attention of the last text token,
  computed with module K-1's own q/k on its own output (``score_layer: self``, faithful) or with
  the next module's (``score_layer: next``, the layer that consumes the pruned sequence).
* **Selection** after layer K, prefill only, global (no windows): video keeps its top
  ``max(1, round(s_v * V))`` tokens (stable descending order: ties -> lower index).
  ``fastv`` (audio-intact) first reallocates ``(s_v, s_a)`` with ``audio_intact_reallocate`` on the
  prompt's V, A; audio is kept whole unless the reallocation clamped (``s_a' < 1``), and then
  ``max(1, round(s_a' * A))`` random audio tokens survive (``ctx.generator``, seeded per sample).
  ``fastv_omni`` keeps the top ``max(1, round(s_a * A))`` audio tokens by the same score.
  When both setting ratios are >= 1 nothing is hooked (upstream installs no stash).

Settings (``conf/method/fastv.yaml`` / ``fastv_omni.yaml``; faithful default first):
``fastv_k`` (2), ``score_layer`` (self|next), ``negative_setting`` (keep_one|error),
``score_dtype`` (model|float32).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from methods import MethodConfigError, ModelInfo, register, with_defaults
from methods.budget import audio_intact_reallocate, fastv_setting_ratio
from seats_exp.selection import BaseSelector, PlanCounts, PlanInput, Selection, SelectionContext

DEFAULT_PARAMS = {"fastv_k": 2, "score_layer": "self", "negative_setting": "keep_one", "score_dtype": "model"}
_CHOICES = {"score_layer": ("self", "next"), "negative_setting": ("keep_one", "error"), "score_dtype": ("model", "float32")}


def fastv_keep_count(setting_ratio: float, total: int) -> int:
    """Tokens a FastV drop keeps of ``total``: max(1, round(s * total)) (Python round), 0 without tokens.

    A negative setting ratio therefore keeps one token (upstream behaviour)."""
    if total == 0:
        return 0
    return min(total, max(1, round(setting_ratio * total)))


def top_n_mask(scores: torch.Tensor, n: int) -> torch.Tensor:
    """bool [N]: the ``n`` highest scores, stable descending order (ties -> lower index)."""
    keep = torch.zeros(scores.shape[0], dtype=torch.bool, device=scores.device)
    order = torch.sort(scores.float(), descending=True, stable=True).indices
    keep[order[:n]] = True
    return keep


@dataclass(frozen=True)
class FastVSettings:
    name: str
    video_ratio: float  # the schedule's all-layer averages
    audio_ratio: float
    fastv_k: int
    score_layer: str
    negative_setting: str
    score_dtype: str
    num_layers: int
    audio_intact: bool  # fastv: True, fastv_omni: False


def setting_ratios(video_ratio: float, audio_ratio: float, k: int, num_layers: int) -> tuple[float, float]:
    return fastv_setting_ratio(video_ratio, k, num_layers), fastv_setting_ratio(audio_ratio, k, num_layers)


def negative_warning(settings: FastVSettings, video: float, audio: float) -> str | None:
    bad = [f"{key} {ratio:.6f} (schedule.{key}={avg})" for key, ratio, avg in
           (("video", video, settings.video_ratio), ("audio", audio, settings.audio_ratio)) if ratio < 0]
    if not bad:
        return None
    return (f"{settings.name}: negative layer-{settings.fastv_k} setting ratio for {', '.join(bad)} with "
            f"{settings.num_layers} layers ((avg x L - K)/(L - K)); the drop keeps 1 token of that modality "
            f"(upstream behaviour), so the realised average retention is above the schedule's")


class FastV(BaseSelector):
    """One drop after 1-based layer ``fastv_k``."""

    def __init__(self, settings: FastVSettings):
        self.settings = settings
        self.name = settings.name
        self.video_setting, self.audio_setting = setting_ratios(
            settings.video_ratio, settings.audio_ratio, settings.fastv_k, settings.num_layers)
        self.warning = negative_warning(settings, self.video_setting, self.audio_setting)
        self.inert = self.video_setting >= 1.0 and self.audio_setting >= 1.0

    # -- budget -----------------------------------------------------------------------------
    def _settings_for(self, num_layers: int) -> tuple[float, float]:
        if num_layers == self.settings.num_layers:
            return self.video_setting, self.audio_setting
        # the loaded model's real depth wins over the configured one
        return setting_ratios(self.settings.video_ratio, self.settings.audio_ratio, self.settings.fastv_k, num_layers)

    def keep_counts(self, num_video: int, num_audio: int, num_layers: int) -> tuple[int, int, float, float]:
        """(video kept, audio kept, video ratio used, audio ratio used) after layer K."""
        video_setting, audio_setting = self._settings_for(num_layers)
        if self.settings.audio_intact:
            video_setting, audio_setting = audio_intact_reallocate(video_setting, audio_setting, num_video, num_audio)
        video = fastv_keep_count(video_setting, num_video) if video_setting < 1.0 else num_video
        audio = fastv_keep_count(audio_setting, num_audio) if audio_setting < 1.0 else num_audio
        return video, audio, video_setting, audio_setting

    # -- hooks ------------------------------------------------------------------------------
    def hook_layers(self, num_layers: int) -> set[int]:
        return set() if self.inert else {self.settings.fastv_k}

    def after_layer(self, layer: int, hidden: torch.Tensor, ctx: SelectionContext) -> Selection | None:
        if layer != self.settings.fastv_k or self.inert:
            return None
        video_mask, audio_mask = ctx.video_mask, ctx.audio_mask  # [S]
        num_video, num_audio = int(video_mask.sum()), int(audio_mask.sum())
        keep_video, keep_audio, _, _ = self.keep_counts(num_video, num_audio, ctx.num_layers)
        if keep_video == num_video and keep_audio == num_audio:
            return None
        if ctx.score_last_text is None:
            raise RuntimeError(f"{self.name} needs ctx.score_last_text from the engine")
        module_index = layer - 1 if self.settings.score_layer == "self" else layer
        if self.settings.score_dtype == "float32":
            scores = ctx.score_last_text(module_index, hidden, score_dtype=torch.float32).reshape(-1)
        else:
            scores = ctx.score_last_text(module_index, hidden).reshape(-1)  # [S]
        scores = scores.to(ctx.modality.device)
        keep = torch.ones(ctx.length, dtype=torch.bool, device=ctx.modality.device)  # [S]
        if keep_video < num_video:
            keep[video_mask] = top_n_mask(scores[video_mask], keep_video)
        if keep_audio < num_audio:
            positions = torch.nonzero(audio_mask).flatten()
            if self.settings.audio_intact:  # only when the reallocation clamped: random audio
                perm = torch.randperm(num_audio, generator=ctx.generator, device=positions.device)
                keep[positions] = False
                keep[positions[perm[:keep_audio]]] = True
            else:
                keep[positions] = top_n_mask(scores[audio_mask], keep_audio)
        return Selection(keep, label=f"fastv.layer{layer}")

    # -- plan mode --------------------------------------------------------------------------
    def plan(self, inp: PlanInput) -> PlanCounts:
        counts = (inp.video_tokens, inp.audio_tokens)
        video_used, audio_used = self._settings_for(inp.num_layers)
        after = counts
        if not self.inert:
            v, a, video_used, audio_used = self.keep_counts(inp.video_tokens, inp.audio_tokens, inp.num_layers)
            after = (v, a)
        k = self.settings.fastv_k
        per_layer = [counts if layer <= k else after for layer in range(1, inp.num_layers + 1)]
        video_setting, audio_setting = self._settings_for(inp.num_layers)
        details = {"settings": {
            "fastv_k": k,
            "setting_ratio": {"video": round(video_setting, 6), "audio": round(audio_setting, 6)},
            "applied_ratio": {"video": round(video_used, 6), "audio": round(audio_used, 6)},
            "random_audio": bool(self.settings.audio_intact and audio_used < 1.0 and inp.audio_tokens > 0),
        }}
        warning = negative_warning(self.settings, video_setting, audio_setting)
        if warning:
            details["warnings"] = [warning]
        return PlanCounts(per_layer=per_layer, details=details)

    def describe(self) -> dict:
        out = {**asdict(self.settings),
               "setting_ratio": {"video": self.video_setting, "audio": self.audio_setting}, "inert": self.inert}
        out["warnings"] = [self.warning] if self.warning else []
        return out


def build_fastv(name: str, params: dict, video_ratio: float, audio_ratio: float, model: ModelInfo) -> FastV:
    p = with_defaults(name, params, DEFAULT_PARAMS, _CHOICES)
    k = p["fastv_k"]
    last = model.num_layers - (1 if p["score_layer"] == "next" else 0)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k < last:
        raise MethodConfigError(
            f"method.fastv_k must be an integer in [1, {last - 1}] for a {model.num_layers}-layer model"
            f"{' with score_layer=next' if p['score_layer'] == 'next' else ''}, got {k!r}")
    settings = FastVSettings(name=name, video_ratio=float(video_ratio), audio_ratio=float(audio_ratio), fastv_k=k,
                             score_layer=p["score_layer"], negative_setting=p["negative_setting"],
                             score_dtype=p["score_dtype"], num_layers=int(model.num_layers),
                             audio_intact=name == "fastv")
    selector = FastV(settings)
    if selector.warning:
        if settings.negative_setting == "error":
            raise MethodConfigError(
                f"method.negative_setting=error: {selector.warning.split(': ', 1)[1].split('; ')[0]}; "
                "raise the schedule ratio or set method.negative_setting=keep_one")
    return selector


@register("fastv")
def build(params: dict, video_ratio: float, audio_ratio: float, model: ModelInfo) -> FastV:
    return build_fastv("fastv", params, video_ratio, audio_ratio, model)


@register("fastv_omni")
def build_omni(params: dict, video_ratio: float, audio_ratio: float, model: ModelInfo) -> FastV:
    return build_fastv("fastv_omni", params, video_ratio, audio_ratio, model)
