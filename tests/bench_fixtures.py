"""Fixture writers: small annotation files in each benchmark's published schema, with awkward
rows, plus the video folder layout filled with tiny placeholder files (nothing here decodes
video).

Formats (as the data are distributed, or a common local copy of them):

* Daily-Omni   -> ``qa.json``            JSON list; ``Choice`` is a Python-list literal string
                                          (one with a missing comma, one a real list, one
                                          without letters)
* WorldSense   -> ``worldsense_qa.json`` JSON object wrapping the row list under ``"data"``;
                                          ``candidates`` as a list, as a quote/comma-broken
                                          string with non-breaking spaces, and as plain
                                          "A. … B. …" text; ``audio_class`` list or string
* OmniVideoBench -> ``omnivideobench.jsonl`` JSON lines; durations "MM:SS" and "HH:MM:SS";
                                          options with and without letters, one string with a
                                          missing comma; no question id field
* Video-MME    -> ``videomme.json``      JSON list (``options`` real lists); videos
                                          ``data/<videoID>.mp4`` / ``.MP4`` / ``.mkv`` / missing
* LVOmniBench  -> ``lvomnibench.parquet`` Parquet (list columns come back as numpy arrays);
                                          durations "MM:SS" and "HH:MM:SS"

Each writer returns a :class:`BenchFixture` with the annotation path, the video root, the rows
written and the video paths created (and the ones deliberately left missing).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

PLACEHOLDER = b"\x00\x00\x00\x18ftypmp42 placeholder, not a real video"


@dataclass
class BenchFixture:
    template: str
    annotations: Path
    video_root: Path
    rows: list[dict]
    videos: list[Path] = field(default_factory=list)
    missing_videos: list[Path] = field(default_factory=list)

    def settings(self, **overrides) -> dict:
        """Task settings as conf/benchmark/task/<template>.yaml would give them (resolved)."""
        persona = self.template in ("dailyomni", "worldsense")
        s = {
            "task": self.template,
            "annotations": str(self.annotations),
            "video_root": str(self.video_root),
            "fps": 2,
            "max_frames": {"qwen2_5_omni": 128, "qwen3_omni": 128},
            "min_pixels": 128,
            "max_pixels": 144,
            "total_pixels": 24576,
            "system_prompt": "persona" if persona else "empty",
            "generation": {"max_new_tokens": 32, "temperature": 0.0, "top_p": 1.0, "num_beams": 1,
                           "do_sample": False},
            "synthetic": None,
        }
        s.update(overrides)
        return s


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(PLACEHOLDER)
    return path


def write_dailyomni(root: Path) -> BenchFixture:
    root = Path(root) / "Daily-Omni"
    rows = [
        {"video_id": "dq7Jx1", "Question": "What sound is heard when the ball hits the floor?",
         "Choice": "['A. A whistle', 'B. A loud bounce', 'C. Applause', 'D. Silence']",
         "Answer": "B", "video_category": "Sports", "Type": "AV Event Alignment",
         "video_duration": "30s", "question_id": 101},
        # missing comma between the 2nd and 3rd quoted items (as in the published file)
        {"video_id": "dq7Jx1", "Question": "Which event happens first?",
         "Choice": "['A. The referee speaks', 'B. The crowd cheers'  'C. The ball is thrown', 'D. Music starts']",
         "Answer": "A", "video_category": "Sports", "Type": "Event Sequence",
         "video_duration": "30s", "question_id": 102},
        # a real list, options without letters
        {"video_id": "k2Lm09", "Question": "Why does the teacher point at the board?",
         "Choice": ["To show a formula", "To erase it", "To call a student", "To end the class"],
         "Answer": "A", "video_category": "Education", "Type": "Reasoning",
         "video_duration": "60s", "question_id": 201},
        # video deliberately missing on disk
        {"video_id": "zz9Miss", "Question": "How many people speak?",
         "Choice": "['A. One', 'B. Two', 'C. Three', 'D. Four']",
         "Answer": "C", "video_category": "Education", "Type": "Counting",
         "video_duration": "60s", "question_id": 202},
    ]
    ann = root / "qa.json"
    ann.parent.mkdir(parents=True, exist_ok=True)
    ann.write_text(json.dumps(rows, indent=1), encoding="utf-8")
    videos = [_touch(root / "videos" / v / f"{v}_video.mp4") for v in ("dq7Jx1", "k2Lm09")]
    missing = [root / "videos" / "zz9Miss" / "zz9Miss_video.mp4"]
    return BenchFixture("dailyomni", ann, root, rows, videos, missing)


def write_worldsense(root: Path) -> BenchFixture:
    root = Path(root) / "WorldSense"
    rows = [
        {"video_path": "videos/ws_0001.mp4", "question": "What instrument starts playing after the speech?",
         "candidates": ["A. Piano", "B. Guitar", "C. Violin", "D. Drums"], "answer": "B",
         "task_type": "Temporal Reasoning", "domain": "Music", "duration": "<1min",
         "audio_class": ["speech", "music"], "index": 0},
        # quote/comma-broken string with a non-breaking space and a missing comma
        {"video_path": "videos/ws_0002.mp4", "question": "Where is the speaker standing?",
         "candidates": "['A. On\u00a0a stage' 'B. In a kitchen', 'C. Outdoors',, 'D. In a car']",
         "answer": "C", "task_type": "Spatial Reasoning", "domain": "Daily Life", "duration": "1-2min",
         "audio_class": "['speech']", "index": 1},
        # plain "A. … B. …" text that is not a list literal
        {"video_path": "videos/ws_0003.mp4", "question": "What is the dog reacting to?",
         "candidates": "A. A doorbell B. Its name C. Thunder D. A squeaky toy", "answer": "A",
         "task_type": "Temporal Reasoning", "domain": "Daily Life", "duration": "<1min",
         "audio_class": "sound effect", "index": 2},
    ]
    ann = root / "worldsense_qa.json"
    ann.parent.mkdir(parents=True, exist_ok=True)
    ann.write_text(json.dumps({"version": "1.0", "data": rows}, ensure_ascii=False), encoding="utf-8")
    videos = [_touch(root / "videos" / f"ws_000{i}.mp4") for i in (1, 2, 3)]
    return BenchFixture("worldsense", ann, root, rows, videos, [])


def write_omnivideobench(root: Path) -> BenchFixture:
    root = Path(root) / "OmniVideoBench"
    rows = [
        {"video": "videos/ovb_001.mp4", "question": "What does the narrator say after the car stops?",
         "options": ["A. Turn left", "B. We have arrived", "C. Fasten your belt", "D. Nothing"],
         "correct_option": "B", "duration": "02:15", "video_type": "Vlog",
         "question_type": "Speech Understanding", "audio_type": "Speech"},
        # an HH:MM:SS duration (upstream's bucketing raises) and a missing-comma option string
        {"video": "videos/ovb_002.mp4", "question": "Which song plays during the credits?",
         "options": "['A. A piano piece' 'B. A rock song', 'C. A choir', 'D. No music']",
         "correct_option": "C", "duration": "1:05:30", "video_type": "Movie",
         "question_type": "Music Recognition", "audio_type": "Music"},
        # options without letters
        {"video": "videos/ovb_003.mp4", "question": "How many times does the bell ring?",
         "options": ["Once", "Twice", "Three times", "Four times"],
         "correct_option": "D", "duration": "00:45", "video_type": "Vlog",
         "question_type": "Counting", "audio_type": "Sound"},
    ]
    ann = root / "omnivideobench.jsonl"
    ann.parent.mkdir(parents=True, exist_ok=True)
    ann.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    videos = [_touch(root / "videos" / f"ovb_00{i}.mp4") for i in (1, 2, 3)]
    return BenchFixture("omnivideobench", ann, root, rows, videos, [])


def write_videomme(root: Path) -> BenchFixture:
    root = Path(root) / "Video-MME"
    rows = [
        {"video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "Humanity & History",
         "url": "https://www.youtube.com/watch?v=fFjv93ACGo8", "videoID": "fFjv93ACGo8",
         "question_id": "001-1", "task_type": "Counting Problem",
         "question": "When demonstrating the Germany modern Christmas tree is initially decorated with apples, "
                     "candles and berries, which kind of the decoration has the largest number?",
         "options": ["A. Apples.", "B. Candles.", "C. Berries.", "D. The three kinds are of the same number."],
         "answer": "C"},
        {"video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "Humanity & History",
         "url": "https://www.youtube.com/watch?v=fFjv93ACGo8", "videoID": "fFjv93ACGo8",
         "question_id": "001-2", "task_type": "Information Synopsis",
         "question": "What is the genre of this video?",
         "options": ["A. It is a news report.", "B. It is a documentary.", "C. It is a vlog.", "D. It is a trailer."],
         "answer": "B"},
        {"video_id": "301", "duration": "medium", "domain": "Sports Competition", "sub_category": "Football",
         "url": "https://www.youtube.com/watch?v=Kx2UpPc7mVc", "videoID": "Kx2UpPc7mVc",
         "question_id": "301-1", "task_type": "Action Recognition",
         "question": "What does the goalkeeper do last?",
         "options": ["A. Dives left.", "B. Dives right.", "C. Stays still.", "D. Runs out."],
         "answer": "D"},
        {"video_id": "601", "duration": "long", "domain": "Artistic Performance", "sub_category": "Magic Show",
         "url": "https://www.youtube.com/watch?v=Qm1mkvXyz12", "videoID": "Qm1mkvXyz12",
         "question_id": "601-1", "task_type": "Object Recognition",
         "question": "Which object disappears?",
         "options": ["A. A coin.", "B. A card.", "C. A ring.", "D. A dove."],
         "answer": "A"},
        {"video_id": "602", "duration": "long", "domain": "Artistic Performance", "sub_category": "Magic Show",
         "url": "https://www.youtube.com/watch?v=NoFileHere1", "videoID": "NoFileHere1",
         "question_id": "602-1", "task_type": "Object Recognition",
         "question": "What colour is the cape?",
         "options": ["A. Red.", "B. Black.", "C. Blue.", "D. White."],
         "answer": "B"},
    ]
    ann = root / "videomme.json"
    ann.parent.mkdir(parents=True, exist_ok=True)
    ann.write_text(json.dumps(rows), encoding="utf-8")
    videos = [_touch(root / "data" / "fFjv93ACGo8.mp4"), _touch(root / "data" / "Kx2UpPc7mVc.MP4"),
              _touch(root / "data" / "Qm1mkvXyz12.mkv")]
    missing = [root / "data" / "NoFileHere1.mp4"]
    return BenchFixture("videomme", ann, root, rows, videos, missing)


def write_lvomnibench(root: Path) -> BenchFixture:
    import pandas as pd

    root = Path(root) / "LVOmniBench"
    rows = [
        {"video_id": "lv_0001", "question": "What is announced at the start of the lecture?",
         "options": ["A. A break", "B. An exam date", "C. A guest speaker", "D. A new room"],
         "answer": "B", "duration": "12:34", "video_category": "Education", "sub_category": "Lecture",
         "question_type": "Speech", "audio_type": "Speech", "difficulty": "easy", "question_id": "lv-1"},
        {"video_id": "lv_0001", "question": "When does the audience laugh?",
         "options": ["A. After the joke about coffee", "B. During the slides", "C. At the end", "D. Never"],
         "answer": "A", "duration": "12:34", "video_category": "Education", "sub_category": "Lecture",
         "question_type": "Temporal", "audio_type": "Sound", "difficulty": "hard", "question_id": "lv-2"},
        {"video_id": "lv_0002", "question": "Which team scores the last goal?",
         "options": ["A. Red", "B. Blue", "C. Neither", "D. Both"],
         "answer": "D", "duration": "01:02:03", "video_category": "Sports", "sub_category": "Football",
         "question_type": "Event", "audio_type": "Speech", "difficulty": "medium", "question_id": "lv-3"},
    ]
    ann = root / "lvomnibench.parquet"
    ann.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(ann, index=False)
    videos = [_touch(root / "videos" / f"{v}.mp4") for v in ("lv_0001", "lv_0002")]
    return BenchFixture("lvomnibench", ann, root, rows, videos, [])


WRITERS = {
    "dailyomni": write_dailyomni,
    "worldsense": write_worldsense,
    "omnivideobench": write_omnivideobench,
    "videomme": write_videomme,
    "lvomnibench": write_lvomnibench,
}


def write_all(root: Path) -> dict[str, BenchFixture]:
    """All five benchmarks under ``root`` (each in its own folder)."""
    return {name: writer(Path(root)) for name, writer in WRITERS.items()}
