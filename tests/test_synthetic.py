"""The synthetic Daily-Omni-schema benchmark: schema, decodability, reproducibility, ensure() rules."""

from __future__ import annotations

import ast
import json
import logging
import time
from pathlib import Path

import av
import numpy as np
import pytest

from evaluation import synthetic
from evaluation.synthetic import ensure, generate, video_path, write_clip, write_corrupt_video

SMALL = dict(num_clips=4, seconds=2.0, fps=4, width=64, height=48)
FIELDS = {"video_id", "Question", "Choice", "Answer", "video_category", "Type", "video_duration", "question_id"}


def _qa(path: Path) -> list[dict]:
    return json.loads(Path(path).read_text())


def _decode_pyav(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """All video frames as (T, H, W, 3) uint8 and the audio track as float32 samples (or None)."""
    with av.open(str(path)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return frames, None
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    return frames, audio


@pytest.fixture(scope="module")
def default_set(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic_default")
    started = time.perf_counter()
    qa_path = generate(root)  # the defaults the project ships: 6 clips of 4 s at 112x112, 4 fps
    elapsed = time.perf_counter() - started
    assert elapsed < 5.0, f"generation took {elapsed:.2f} s"
    return qa_path


def test_annotation_schema(default_set):
    qa = _qa(default_set)
    root = default_set.parent
    assert default_set == root / "qa.json"
    assert len(qa) == 6
    for item in qa:
        assert set(item) == FIELDS
        assert isinstance(item["video_id"], str) and isinstance(item["Question"], str)
        assert isinstance(item["Choice"], str)  # a string holding a list literal, as in Daily-Omni
        options = ast.literal_eval(item["Choice"])
        assert isinstance(options, list) and len(options) == 4 and all(isinstance(o, str) for o in options)
        assert [o[:3] for o in options] == ["A. ", "B. ", "C. ", "D. "]
        assert len(set(options)) == 4
        assert item["Answer"] in {"A", "B", "C", "D"}
        assert item["video_duration"] == "4s"
        assert isinstance(item["question_id"], (str, int))
        assert video_path(root, item["video_id"]).is_file()
        assert video_path(root, item["video_id"]) == root / "videos" / item["video_id"] / f"{item['video_id']}_video.mp4"
    assert len({q["question_id"] for q in qa}) == len(qa)
    # A realistic mix of question types and categories.
    assert len({q["Type"] for q in qa}) == 4
    assert len({q["video_category"] for q in qa}) >= 4


def test_answers_match_clip_content(default_set):
    """Each answer is what the clip actually shows or plays."""
    root = default_set.parent
    stamp = json.loads((root / "synthetic.json").read_text())
    clips = {c["video_id"]: c for c in stamp["clips"]}
    for item in _qa(default_set):
        clip = clips[item["video_id"]]
        options = ast.literal_eval(item["Choice"])
        answer = options["ABCD".index(item["Answer"])][3:]
        if item["Type"] == "Context understanding":
            assert answer == clip["colour"]
        elif item["Type"] == "Event Sequence":
            assert answer == synthetic.DIRECTIONS[clip["direction"]]
        elif item["Type"] == "AV Event Alignment":
            assert answer == synthetic.SOUND_TEXT[clip["pitch"]]
        else:
            assert answer == f"A {clip['colour']} background with {synthetic.SOUND_SHORT[clip['pitch']]}"

        frames, audio = _decode_pyav(video_path(root, item["video_id"]))
        corner = frames[:, :4, :4].reshape(-1, 3).mean(axis=0)  # background, away from the square
        assert np.abs(corner - synthetic.PALETTE[clip["colour"]]).max() < 20
        spectrum = np.abs(np.fft.rfft(audio))
        peak_hz = spectrum.argmax() * 16000 / len(audio)
        assert abs(peak_hz - synthetic.PITCH_HZ[clip["pitch"]]) < 10


def test_clips_decode_with_pyav_and_decord(default_set):
    import decord

    root = default_set.parent
    for item in _qa(default_set)[:3]:
        path = video_path(root, item["video_id"])
        with av.open(str(path)) as container:
            vstream = container.streams.video[0]
            assert vstream.codec_context.name == "h264"
            assert vstream.codec_context.pix_fmt == "yuv420p"
            assert container.streams.audio and container.streams.audio[0].codec_context.name == "aac"
        frames, audio = _decode_pyav(path)
        assert frames.shape == (16, 112, 112, 3)
        assert abs(len(audio) - 4 * 16000) < 2048  # AAC adds encoder padding

        reader = decord.VideoReader(str(path))
        assert abs(len(reader) - 16) <= 1
        assert reader[0].shape == (112, 112, 3)
        assert reader.get_avg_fps() == pytest.approx(4.0)
        # decord and PyAV see the same picture.
        assert np.abs(reader[5].asnumpy().astype(int) - frames[5].astype(int)).max() <= 3


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning", "ignore::DeprecationWarning")
def test_audio_track_loads_with_librosa(default_set):
    import librosa

    path = video_path(default_set.parent, _qa(default_set)[0]["video_id"])
    samples, sr = librosa.load(str(path), sr=16000)
    assert sr == 16000
    assert abs(len(samples) - 4 * 16000) < 2048
    assert 0.1 < np.abs(samples).max() < 0.5


def test_reproducible_from_seed(tmp_path):
    qa_a = generate(tmp_path / "a", seed=3, **SMALL)
    qa_b = generate(tmp_path / "b", seed=3, **SMALL)
    qa_c = generate(tmp_path / "c", seed=4, **SMALL)
    assert _qa(qa_a) == _qa(qa_b)
    assert _qa(qa_a) != _qa(qa_c)

    differs = False
    for item in _qa(qa_a):
        frames_a, audio_a = _decode_pyav(video_path(qa_a.parent, item["video_id"]))
        frames_b, audio_b = _decode_pyav(video_path(qa_b.parent, item["video_id"]))
        frames_c, audio_c = _decode_pyav(video_path(qa_c.parent, item["video_id"]))
        assert np.array_equal(frames_a, frames_b)
        assert np.array_equal(audio_a, audio_b)
        differs |= not (np.array_equal(frames_a, frames_c) and np.array_equal(audio_a, audio_c))
    assert differs, "a different seed should change the clips"


def test_ensure_idempotent_and_stamp_rules(tmp_path, caplog):
    root = tmp_path / "bench"
    qa_path = ensure(root, seed=1, **SMALL)
    assert qa_path == root / "qa.json" and (root / "synthetic.json").is_file()
    first_clip = video_path(root, _qa(qa_path)[0]["video_id"])
    mtime = first_clip.stat().st_mtime_ns

    # Same parameters: nothing is rewritten.
    with caplog.at_level(logging.INFO, logger="evaluation.synthetic"):
        assert ensure(root, seed=1, **SMALL) == qa_path
    assert first_clip.stat().st_mtime_ns == mtime
    assert "wrote" not in caplog.text and "regenerating" not in caplog.text

    # Other parameters: regenerated, with a log line saying so, and no stale clips left behind.
    caplog.clear()
    params = dict(SMALL, num_clips=2)
    with caplog.at_level(logging.INFO, logger="evaluation.synthetic"):
        ensure(root, seed=2, **params)
    assert "regenerating" in caplog.text
    assert len(_qa(qa_path)) == 2
    assert len(list((root / "videos").iterdir())) == 2
    assert json.loads((root / "synthetic.json").read_text())["params"]["seed"] == 2

    # A clip deleted by hand: the set is incomplete and gets rebuilt.
    victim = video_path(root, _qa(qa_path)[0]["video_id"])
    victim.unlink()
    ensure(root, seed=2, **params)
    assert victim.is_file()


def test_ensure_refuses_unstamped_folder_with_content(tmp_path):
    root = tmp_path / "someone_elses_data"
    root.mkdir()
    (root / "qa.json").write_text("[]")
    with pytest.raises(FileExistsError, match="someone_elses_data"):
        ensure(root, **SMALL)
    assert sorted(p.name for p in root.iterdir()) == ["qa.json"]
    assert (root / "qa.json").read_text() == "[]"

    empty = tmp_path / "empty"
    empty.mkdir()
    assert ensure(empty, **SMALL).is_file()  # an empty folder is fine


def test_audio_false_has_no_audio_stream(tmp_path):
    qa_path = generate(tmp_path, audio=False, **SMALL)
    for item in _qa(qa_path):
        with av.open(str(video_path(tmp_path, item["video_id"]))) as container:
            assert len(container.streams.video) == 1
            assert len(container.streams.audio) == 0
        if item["Type"] == "AV Event Alignment":
            options = ast.literal_eval(item["Choice"])
            assert options["ABCD".index(item["Answer"])][3:] == synthetic.SOUND_TEXT["none"]

    single = write_clip(tmp_path / "one" / "silent.mp4", audio=False, seconds=1.0)
    with av.open(str(single)) as container:
        assert not container.streams.audio and container.streams.video[0].frames == 4


def test_corrupt_video_is_not_readable(tmp_path):
    path = write_corrupt_video(tmp_path / "videos" / "bad" / "bad_video.mp4")
    assert path.is_file() and path.stat().st_size > 0
    with pytest.raises(av.error.FFmpegError):
        with av.open(str(path)) as container:
            next(container.decode(video=0))
