"""Synthetic benchmark in the Daily-Omni schema: short mp4 clips (H.264 + AAC) and ``qa.json``.

This is the project's embedded default benchmark.  It is written in exactly the layout of the
real Daily-Omni release, so the task code that reads Daily-Omni reads it unchanged::

    <root>/qa.json                                   list of question objects (schema below)
    <root>/videos/<video_id>/<video_id>_video.mp4    one clip per video_id
    <root>/synthetic.json                            stamp: generator version and parameters

Each ``qa.json`` object has ``video_id``, ``Question``, ``Choice`` (a *string* holding a Python
list literal of four lettered options, as in the real data), ``Answer`` (``"A"``..``"D"``),
``video_category``, ``Type``, ``video_duration`` (e.g. ``"4s"``) and ``question_id``.

Every clip shows a solid background of one colour with a white square sliding across it in one
direction, and (unless ``audio=False``) plays a steady sine tone that is either high (880 Hz) or
low (220 Hz).  The questions ask about what can be seen and heard, so each is answerable in
principle from the clip:

- ``Context understanding``: the background colour;
- ``Event Sequence``: the direction the square moves;
- ``AV Event Alignment``: the sound heard while the square moves (silence for silent clips);
- ``Reasoning``: the description that matches both the colour and the sound.

Everything -- clip content, option order, answer letters, categories -- follows from ``seed``;
the encoders run single-threaded, so the same parameters give the same decoded frames and audio
(and in practice the same bytes).
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from seats_exp.store import replace_folder

log = logging.getLogger(__name__)

GENERATOR_VERSION = 1
STAMP_NAME = "synthetic.json"
ANNOTATION_NAME = "qa.json"

# Background colours (RGB); names are the answer options of the colour questions.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 220),
    "yellow": (235, 215, 40),
    "purple": (140, 50, 170),
    "orange": (240, 140, 30),
}
SQUARE_RGB = (245, 245, 245)

DIRECTIONS: dict[str, str] = {  # key -> option text
    "left_to_right": "From left to right",
    "right_to_left": "From right to left",
    "top_to_bottom": "From top to bottom",
    "bottom_to_top": "From bottom to top",
}

PITCH_HZ: dict[str, float] = {"high": 880.0, "low": 220.0}
SOUND_TEXT: dict[str, str] = {
    "high": "A steady high-pitched tone",
    "low": "A steady low-pitched tone",
    "none": "No sound at all",
    "speech": "A person speaking",
}
SOUND_SHORT: dict[str, str] = {"high": "a high-pitched tone", "low": "a low-pitched tone", "none": "silence"}

QUESTION_KINDS: dict[str, str] = {  # kind -> Daily-Omni ``Type``
    "colour": "Context understanding",
    "motion": "Event Sequence",
    "sound": "AV Event Alignment",
    "colour_sound": "Reasoning",
}

CATEGORIES = [
    "Education",
    "Entertainment",
    "Sports",
    "Travel & Events",
    "Pets & Animals",
    "Science & Technology",
]

LETTERS = "ABCD"


@dataclass(frozen=True)
class ClipSpec:
    """What one synthetic clip shows and plays."""

    video_id: str
    colour: str  # key of PALETTE
    direction: str  # key of DIRECTIONS
    pitch: str  # "high" | "low" | "none" (no audio track)
    category: str


# ---------------------------------------------------------------------------------------------
# Clip writing
# ---------------------------------------------------------------------------------------------


def video_path(root: str | Path, video_id: str) -> Path:
    """Where Daily-Omni keeps the clip of ``video_id`` under ``root``."""
    return Path(root) / "videos" / video_id / f"{video_id}_video.mp4"


def _frames(colour: str, direction: str, n_frames: int, width: int, height: int) -> np.ndarray:
    """(n_frames, height, width, 3) uint8: solid background with a white square sliding across."""
    frames = np.empty((n_frames, height, width, 3), dtype=np.uint8)
    frames[:] = np.array(PALETTE[colour], dtype=np.uint8)
    side = max(4, min(width, height) // 4)
    side -= side % 2
    for k in range(n_frames):
        t = k / (n_frames - 1) if n_frames > 1 else 0.0
        x_mid, y_mid = (width - side) // 2, (height - side) // 2
        if direction == "left_to_right":
            x, y = round(t * (width - side)), y_mid
        elif direction == "right_to_left":
            x, y = round((1 - t) * (width - side)), y_mid
        elif direction == "top_to_bottom":
            x, y = x_mid, round(t * (height - side))
        elif direction == "bottom_to_top":
            x, y = x_mid, round((1 - t) * (height - side))
        else:
            raise ValueError(f"direction={direction!r}; allowed: {sorted(DIRECTIONS)}")
        frames[k, y : y + side, x : x + side] = SQUARE_RGB
    return frames


def _tone(pitch: str, seconds: float, sample_rate: int) -> np.ndarray:
    """Mono float32 sine tone with 10 ms fades (no clicks), amplitude 0.3."""
    n = int(round(seconds * sample_rate))
    t = np.arange(n, dtype=np.float64) / sample_rate
    wave = 0.3 * np.sin(2 * np.pi * PITCH_HZ[pitch] * t)
    ramp = min(n // 2, int(0.01 * sample_rate))
    if ramp > 0:
        env = np.linspace(0.0, 1.0, ramp)
        wave[:ramp] *= env
        wave[n - ramp :] *= env[::-1]
    return wave.astype(np.float32)


def write_clip(
    path: str | Path,
    *,
    colour: str = "red",
    direction: str = "left_to_right",
    pitch: str = "high",
    seconds: float = 4.0,
    fps: int = 4,
    width: int = 112,
    height: int = 112,
    sample_rate: int = 16000,
    audio: bool = True,
) -> Path:
    """Write one clip: H.264 yuv420p video and, if ``audio`` and ``pitch != "none"``, an AAC mono track."""
    import av  # imported here so that reading annotations does not need PyAV

    if colour not in PALETTE:
        raise ValueError(f"colour={colour!r}; allowed: {sorted(PALETTE)}")
    if width % 2 or height % 2:
        raise ValueError(f"width and height must be even for yuv420p, got {width}x{height}")
    n_frames = int(round(seconds * fps))
    if n_frames < 1:
        raise ValueError(f"seconds*fps must give at least one frame, got seconds={seconds}, fps={fps}")
    with_audio = audio and pitch != "none"
    if with_audio and pitch not in PITCH_HZ:
        raise ValueError(f"pitch={pitch!r}; allowed: {sorted(PITCH_HZ)} or 'none'")

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = _frames(colour, direction, n_frames, width, height)
    with av.open(str(path), mode="w", format="mp4") as container:
        vstream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        vstream.width, vstream.height, vstream.pix_fmt = width, height, "yuv420p"
        vstream.options = {"crf": "18", "preset": "veryfast"}
        vstream.codec_context.thread_count = 1  # single-threaded: reproducible output
        astream = None
        if with_audio:
            astream = container.add_stream("aac", rate=sample_rate, layout="mono")
            astream.codec_context.thread_count = 1

        for k in range(n_frames):
            frame = av.VideoFrame.from_ndarray(frames[k], format="rgb24")
            frame.pts = k
            for packet in vstream.encode(frame):
                container.mux(packet)
        for packet in vstream.encode():
            container.mux(packet)

        if astream is not None:
            samples = _tone(pitch, seconds, sample_rate)
            chunk = 1024
            for start in range(0, len(samples), chunk):
                aframe = av.AudioFrame.from_ndarray(samples[None, start : start + chunk], format="fltp", layout="mono")
                aframe.sample_rate = sample_rate
                aframe.pts = start
                for packet in astream.encode(aframe):
                    container.mux(packet)
            for packet in astream.encode():
                container.mux(packet)
    return path


def write_corrupt_video(path: str | Path) -> Path:
    """Write a file with an ``.mp4``-style name whose bytes are not a video (for bad-input tests)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not a video file, just text posing as one\n" * 64)
    return path


# ---------------------------------------------------------------------------------------------
# Annotations
# ---------------------------------------------------------------------------------------------


def _options(rng: random.Random, correct: str, distractors: list[str]) -> tuple[list[str], str]:
    """Four options (correct + 3 distractors, seeded shuffle), lettered; returns (options, answer letter)."""
    picked = [correct] + rng.sample([d for d in distractors if d != correct], 3)
    rng.shuffle(picked)
    letter = LETTERS[picked.index(correct)]
    return [f"{LETTERS[i]}. {text}" for i, text in enumerate(picked)], letter


def _question(rng: random.Random, kind: str, clip: ClipSpec) -> tuple[str, list[str], str]:
    if kind == "colour":
        question = "What is the background colour of the video?"
        options, letter = _options(rng, clip.colour, list(PALETTE))
    elif kind == "motion":
        question = "In which direction does the white square move during the video?"
        options, letter = _options(rng, DIRECTIONS[clip.direction], list(DIRECTIONS.values()))
    elif kind == "sound":
        question = "What can be heard while the white square moves across the screen?"
        options, letter = _options(rng, SOUND_TEXT[clip.pitch], list(SOUND_TEXT.values()))
    elif kind == "colour_sound":
        question = "Which description matches both what is seen and what is heard in the video?"

        def describe(colour: str, pitch: str) -> str:
            return f"A {colour} background with {SOUND_SHORT[pitch]}"

        others = [c for c in PALETTE if c != clip.colour]
        other_pitches = [p for p in SOUND_SHORT if p != clip.pitch]
        # Distractors that get exactly one of the two modalities right, plus one that gets neither,
        # so answering needs both the picture and the sound.
        distractors = [
            describe(clip.colour, rng.choice(other_pitches)),
            describe(rng.choice(others), clip.pitch),
            describe(rng.choice(others), rng.choice(other_pitches)),
        ]
        distractors = list(dict.fromkeys(distractors))
        while len(distractors) < 3:
            extra = describe(rng.choice(others), rng.choice(other_pitches))
            if extra not in distractors:
                distractors.append(extra)
        options, letter = _options(rng, describe(clip.colour, clip.pitch), distractors)
    else:
        raise ValueError(f"unknown question kind {kind!r}")
    return question, options, letter


def _plan(num_clips: int, seed: int, audio: bool, questions_per_clip: int) -> tuple[list[ClipSpec], list[list[str]]]:
    """Seeded clip contents and question kinds, with every category and kind cycling through the set."""
    rng = random.Random(seed)
    categories = CATEGORIES[:]
    rng.shuffle(categories)
    kinds_cycle = list(QUESTION_KINDS)
    rng.shuffle(kinds_cycle)
    clips, kinds = [], []
    for i in range(num_clips):
        clips.append(
            ClipSpec(
                video_id=f"synth_{i:04d}",
                colour=rng.choice(list(PALETTE)),
                direction=rng.choice(list(DIRECTIONS)),
                pitch=rng.choice(list(PITCH_HZ)) if audio else "none",
                category=categories[i % len(categories)],
            )
        )
        kinds.append([kinds_cycle[(i * questions_per_clip + j) % len(kinds_cycle)] for j in range(questions_per_clip)])
    return clips, kinds


# ---------------------------------------------------------------------------------------------
# Public entry points
# ---------------------------------------------------------------------------------------------


def _params(num_clips, seed, seconds, fps, width, height, sample_rate, audio, questions_per_clip) -> dict:
    return {
        "num_clips": int(num_clips),
        "seed": int(seed),
        "seconds": float(seconds),
        "fps": fps,
        "width": int(width),
        "height": int(height),
        "sample_rate": int(sample_rate),
        "audio": bool(audio),
        "questions_per_clip": int(questions_per_clip),
    }


def _read_stamp(root: Path) -> dict | None:
    stamp = root / STAMP_NAME
    if not stamp.is_file():
        return None
    try:
        data = json.loads(stamp.read_text())
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _clear_previous(root: Path) -> None:
    """Remove what an earlier generation wrote (only called where our stamp is present)."""
    (root / STAMP_NAME).unlink(missing_ok=True)
    (root / ANNOTATION_NAME).unlink(missing_ok=True)
    if (root / "videos").is_dir():
        shutil.rmtree(root / "videos")


def generate(
    root: str | Path,
    num_clips: int = 6,
    seed: int = 0,
    seconds: float = 4.0,
    fps: int = 4,
    width: int = 112,
    height: int = 112,
    sample_rate: int = 16000,
    audio: bool = True,
    questions_per_clip: int = 1,
) -> Path:
    """Write ``num_clips`` clips and ``qa.json`` under ``root`` (Daily-Omni layout); return the qa.json path."""
    if num_clips < 1:
        raise ValueError(f"num_clips must be at least 1, got {num_clips}")
    if not 1 <= questions_per_clip <= len(QUESTION_KINDS):
        raise ValueError(f"questions_per_clip must be in 1..{len(QUESTION_KINDS)}, got {questions_per_clip}")
    started = time.perf_counter()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    if _read_stamp(root) is not None:
        _clear_previous(root)

    params = _params(num_clips, seed, seconds, fps, width, height, sample_rate, audio, questions_per_clip)
    clips, kinds = _plan(num_clips, seed, audio, questions_per_clip)
    # Option order and answer letters come from their own stream, so they do not shift clip contents.
    qrng = random.Random(f"questions-{seed}")
    duration = f"{float(seconds):g}s"
    annotations = []
    for clip, clip_kinds in zip(clips, kinds):
        write_clip(
            video_path(root, clip.video_id),
            colour=clip.colour,
            direction=clip.direction,
            pitch=clip.pitch,
            seconds=seconds,
            fps=fps,
            width=width,
            height=height,
            sample_rate=sample_rate,
            audio=audio,
        )
        for j, kind in enumerate(clip_kinds):
            question, options, letter = _question(qrng, kind, clip)
            annotations.append(
                {
                    "video_id": clip.video_id,
                    "Question": question,
                    "Choice": repr(options),
                    "Answer": letter,
                    "video_category": clip.category,
                    "Type": QUESTION_KINDS[kind],
                    "video_duration": duration,
                    "question_id": f"{clip.video_id}_q{j}",
                }
            )

    qa_path = root / ANNOTATION_NAME
    tmp = qa_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(annotations, indent=2))
    tmp.replace(qa_path)
    # The stamp goes last: a generation cut short leaves no stamp and is redone by ensure().
    stamp = {
        "generator": "seats-exp synthetic (Daily-Omni schema)",
        "version": GENERATOR_VERSION,
        "params": params,
        "clips": [asdict(c) for c in clips],
    }
    (root / STAMP_NAME).write_text(json.dumps(stamp, indent=2))
    log.info(
        "synthetic benchmark: wrote %d clips and %d questions to %s in %.2f s",
        len(clips), len(annotations), root, time.perf_counter() - started,
    )
    return qa_path


def ensure(
    root: str | Path,
    num_clips: int = 6,
    seed: int = 0,
    seconds: float = 4.0,
    fps: int = 4,
    width: int = 112,
    height: int = 112,
    sample_rate: int = 16000,
    audio: bool = True,
    questions_per_clip: int = 1,
) -> Path:
    """Return ``root/qa.json``, generating the set first unless ``root`` already holds it with these parameters.

    A folder stamped with other parameters is regenerated; a folder with content but no stamp is
    never touched (``FileExistsError``).  Safe under concurrency (several points, sweeps or array
    tasks on a fresh root): creation runs under a file lock next to ``root`` (``.<name>.lock``), the
    state is checked again once the lock is held, and the set is written to a temporary sibling
    folder that is renamed into place, so no process ever sees a half-written set.
    """
    from filelock import FileLock

    root = Path(root)
    params = _params(num_clips, seed, seconds, fps, width, height, sample_rate, audio, questions_per_clip)
    qa_path = _current(root, params, num_clips, quiet=True)
    if qa_path is not None:
        log.debug("synthetic benchmark in %s is up to date", root)
        return qa_path
    root.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root.parent / f".{root.name}.lock")):
        qa_path = _current(root, params, num_clips, quiet=False)  # another process may have made it meanwhile
        if qa_path is not None:
            return qa_path
        tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        generate(tmp, **params)
        replace_folder(tmp, root)  # our older set (or an empty folder) is swapped out
    return root / ANNOTATION_NAME


def _current(root: Path, params: dict, num_clips: int, *, quiet: bool) -> Path | None:
    """``root/qa.json`` when ``root`` holds the set with ``params``; None when it must be (re)generated."""
    stamp = _read_stamp(root)
    if stamp is None:
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise FileExistsError(
                f"synthetic benchmark folder {root} already has content but no {STAMP_NAME} stamp; "
                "refusing to write into it -- choose an empty or new folder"
            )
        return None

    if stamp.get("version") != GENERATOR_VERSION or stamp.get("params") != params:
        if not quiet:
            old = stamp.get("params") or {}
            changed = {k: (old.get(k), v) for k, v in params.items() if old.get(k) != v}
            log.info(
                "synthetic benchmark in %s was generated with other parameters %s (version %s); regenerating",
                root, changed or "(unreadable stamp)", stamp.get("version"),
            )
        return None

    qa_path = root / ANNOTATION_NAME
    ids = [c.get("video_id") for c in stamp.get("clips", [])]
    if not qa_path.is_file() or len(ids) != num_clips or not all(video_path(root, v).is_file() for v in ids):
        if not quiet:
            log.info("synthetic benchmark in %s is incomplete; regenerating", root)
        return None
    return qa_path
