"""Budget helpers shared by the baselines: pure functions of ratios and token counts.

Every function here is plain Python on floats and ints (no tensors), evaluated in float64 exactly
as the upstream dispatcher does, so the golden values of the specs hold to the last digit.
"""

from __future__ import annotations

import math


def audio_intact_reallocate(
    video_ratio: float, audio_ratio: float, num_video: int, num_audio: int, min_video_ratio: float = 0.05
) -> tuple[float, float]:
    """Keep the total number of retained media tokens, giving it to audio first (seats-reference 12,
    ``audio_intact_reallocate``; baselines-reference 1.2).

    ``total = floor(Nv*rv + Na*ra)``; try ``ra' = 1, rv' = (total - Na)/Nv``; if ``rv'`` falls below
    ``min_video_ratio`` it is clamped there and audio takes the rest (``ra' < 1``: the caller then
    drops audio at random); ``rv' > 1`` is clamped to 1 and audio recomputed, then ``ra' > 1`` is
    clamped to 1 and video recomputed.  Without audio (``Na = 0``, upstream) or without video (a
    division by zero upstream) the pair is returned unchanged.
    Example (seats-reference 12): Nv=4320, Na=750, (0.30, 0.65) -> total 1783 -> (0.23912, 1.0).
    """
    if num_audio == 0 or num_video == 0:  # nothing to move between modalities (upstream: Na = 0 only)
        return video_ratio, audio_ratio
    total = math.floor(num_video * video_ratio + num_audio * audio_ratio)
    new_video = (total - num_audio) / num_video
    if new_video < min_video_ratio:
        new_video = min_video_ratio
        new_audio = (total - min_video_ratio * num_video) / num_audio
    else:
        new_audio = 1.0
    if new_video > 1.0:
        new_video = 1.0
        new_audio = (total - num_video) / num_audio
    if new_audio > 1.0:
        new_audio = 1.0
        new_video = (total - num_audio) / num_video
    return new_video, new_audio


def fastv_setting_ratio(average_ratio: float, k: int, num_layers: int) -> float:
    """The layer-K retention ratio whose all-layer average is ``average_ratio`` (seats-reference 12.3;
    baselines-reference 2.2): ``s = (avg*L - K)/(L - K)``, the first K layers seeing every token.

    The result may be negative (Qwen2.5, L=28, K=2, avg 0.06 -> -0.012308; seats-reference 2 item 19);
    callers decide what that means (upstream keeps one token).
    """
    if not 0 <= k < num_layers:
        raise ValueError(f"fastv_k={k} must lie in [0, {num_layers}) for a {num_layers}-layer model")
    return (average_ratio * num_layers - k) / (num_layers - k)
