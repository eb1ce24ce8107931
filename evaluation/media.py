"""Turn one (video, prompt) request into Thinker inputs through the real processor path.

Frames and audio are loaded with qwen-omni-utils (the loader the published evaluations use):
frames sampled at ``fps`` within [4, max_frames] and resized under the per-frame pixel limits;
audio decoded from the video's own track at 16 kHz when it has one.  The processor then expands
the placeholders (audio interleaved into the video span when the clip has sound).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av

class MediaError(RuntimeError):
    """A sample whose media cannot be used (missing, unreadable, no video stream)."""


@dataclass
class MediaSettings:
    """Per-task loader settings (``evaluation.benchmarks.media_settings`` builds them from config)."""

    fps: float = 2.0
    max_frames: int = 768
    min_pixels: int = 128 * 28 * 28  # per frame, in pixels
    max_pixels: int = 144 * 28 * 28
    total_pixels: int = 24576 * 28 * 28
    resize_factor: int = 28  # 28 Qwen2.5-Omni, 32 Qwen3-Omni
    system_text: str = ""
    video_reader: str = "decord"  # qwen-omni-utils backend (its torchvision reader is broken on tv 0.28)

    @classmethod
    def defaults(cls, family: str, system_text: str = "") -> "MediaSettings":
        """Upstream wrapper defaults (seats-reference 14.2) for the lmms-eval CLI path."""
        f = 32 if family == "qwen3_omni" else 28
        return cls(min_pixels=128 * f * f, max_pixels=144 * f * f, total_pixels=24576 * f * f, resize_factor=f,
                   system_text=system_text)


def probe(path: str | Path) -> bool:
    """Check the file is a readable video; return whether it has an audio track."""
    path = Path(path)
    if not path.exists():
        raise MediaError(f"video file not found: {path}")
    try:
        with av.open(str(path)) as container:
            kinds = {s.type for s in container.streams}
    except Exception as exc:  # PyAV raises several error types for corrupt files
        raise MediaError(f"unreadable video file {path}: {exc}") from exc
    if "video" not in kinds:
        raise MediaError(f"no video stream in {path}")
    return "audio" in kinds


def build_inputs(processor, family: str, video_path: str | Path, prompt: str, settings: MediaSettings):
    """Return (processor outputs as tensors, use_audio_in_video) for one request."""
    from qwen_omni_utils.v2_5 import process_mm_info, vision_process

    has_audio = probe(video_path)
    vision_process.FORCE_QWENVL_VIDEO_READER = settings.video_reader
    factor = settings.resize_factor
    video_item = {
        "type": "video",
        "video": str(video_path),
        "fps": settings.fps,
        "max_frames": settings.max_frames,
        "min_pixels": settings.min_pixels,
        "max_pixels": settings.max_pixels,
        "total_pixels": settings.total_pixels,
    }
    conversation = [
        {"role": "system", "content": [{"type": "text", "text": settings.system_text}]},
        {"role": "user", "content": [video_item, {"type": "text", "text": prompt}]},
    ]
    text = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    try:
        audios, _images, videos = process_mm_info(
            conversation, use_audio_in_video=has_audio, image_patch_size=factor // 2
        )
    except Exception as exc:
        raise MediaError(f"could not decode {video_path}: {exc}") from exc
    kwargs = {}
    if has_audio:
        kwargs = {"audio": audios, "load_audio_from_video": True, "audio_from_video_indices": [0]}
    inputs = processor(text=text, videos=videos, return_tensors="pt", padding=True, do_resize=False,
                       videos_kwargs={"fps": settings.fps} if family != "qwen3_omni" else {}, **kwargs)
    return inputs, has_audio
