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


#: qwen-omni-utils samples frames in pairs: a clip needs at least this many frames.
MIN_FRAMES = 2


def probe(path: str | Path) -> bool:
    """Check the file is a readable video with at least two frames (PyAV); return whether it has an
    audio track."""
    return inspect_video(path)[0]


def inspect_video(path: str | Path) -> tuple[bool, int]:
    """(has an audio track, frames the header declares (0: not declared)); raises MediaError naming
    what is wrong with the file."""
    path = Path(path)
    if not path.exists():
        raise MediaError(f"video file not found: {path}")
    try:
        with av.open(str(path)) as container:
            kinds = {s.type for s in container.streams}
            video = next((s for s in container.streams if s.type == "video"), None)
            frames = int(video.frames or 0) if video is not None else 0
    except Exception as exc:  # PyAV raises several error types for corrupt files
        raise MediaError(f"unreadable video file {path} (truncated, corrupt or not a video; PyAV: {exc})") from exc
    if "video" not in kinds:
        raise MediaError(f"no video stream in {path}")
    if 0 < frames < MIN_FRAMES:
        raise MediaError(f"video {path} has {frames} frame; at least {MIN_FRAMES} are needed")
    return "audio" in kinds, frames


def check_readable_frames(path: str | Path, declared: int, reader: str = "decord") -> None:
    """The frames the reader can index against what the header declares: a cut file (header intact,
    data missing) is reported as truncated instead of being sampled from what is left."""
    if reader != "decord":
        return
    import decord

    try:
        readable = len(decord.VideoReader(str(path)))
    except Exception as exc:  # decord raises its own DECORDError
        raise MediaError(f"decord cannot open video {path} (truncated or corrupt file?): {exc}") from exc
    if readable < MIN_FRAMES:
        raise MediaError(f"video {path} has {readable} readable frame(s); at least {MIN_FRAMES} are needed")
    if declared and readable < declared:
        raise MediaError(f"video {path} is truncated: its header declares {declared} frames, "
                         f"only {readable} can be read")


class _ReaderFailed(Exception):
    """Raised in place of qwen-omni-utils' torchvision fallback reader (it cannot work here and would
    hide the real reason)."""


def _read_without_fallback(vision_process, reader: str):
    """Context manager: qwen-omni-utils' ``reader`` backend, with its failure recorded and its silent
    torchvision fallback replaced by an error carrying that failure."""
    import contextlib

    @contextlib.contextmanager
    def ctx():
        backends = vision_process.VIDEO_READER_BACKENDS
        saved = dict(backends)
        failure: list[BaseException] = []

        def primary(ele):
            try:
                return saved[reader](ele)
            except Exception as exc:
                failure.append(exc)
                raise

        def no_fallback(ele):
            raise _ReaderFailed(failure[-1] if failure else "the video reader failed")

        backends[reader] = primary
        if reader != "torchvision":
            backends["torchvision"] = no_fallback
        try:
            yield
        finally:
            backends.clear()
            backends.update(saved)

    return ctx()


def _decode_error(path, exc: BaseException) -> MediaError:
    text = str(exc)
    m = __import__("re").search(r"nframes should in interval \[\d+, (\d+)\]", text)
    if m and int(m.group(1)) < MIN_FRAMES:
        return MediaError(f"video {path} has {m.group(1)} frame; at least {MIN_FRAMES} are needed")
    return MediaError(f"could not decode the frames of {path} (truncated or corrupt file?): {text}")


def build_inputs(processor, family: str, video_path: str | Path, prompt: str, settings: MediaSettings):
    """Return (processor outputs as tensors, use_audio_in_video) for one request."""
    from qwen_omni_utils.v2_5 import process_mm_info, vision_process

    has_audio, declared = inspect_video(video_path)
    check_readable_frames(video_path, declared, settings.video_reader)
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
        with _read_without_fallback(vision_process, settings.video_reader):
            audios, _images, videos = process_mm_info(
                conversation, use_audio_in_video=has_audio, image_patch_size=factor // 2
            )
    except _ReaderFailed as exc:
        raise _decode_error(video_path, exc.args[0]) from None
    except Exception as exc:
        raise MediaError(f"could not decode {video_path}: {exc}") from exc
    kwargs = {}
    if has_audio:
        kwargs = {"audio": audios, "load_audio_from_video": True, "audio_from_video_indices": [0]}
    inputs = processor(text=text, videos=videos, return_tensors="pt", padding=True, do_resize=False,
                       videos_kwargs={"fps": settings.fps} if family != "qwen3_omni" else {}, **kwargs)
    return inputs, has_audio
