"""Daily-Omni task functions (spec §14.3).

Fields: video_id, Question, Choice (a Python-list literal string, sometimes missing commas; a
list is accepted too), Answer, video_category, Type, video_duration ("30s"/"60s"), question_id.
Aggregation: per video_category, one score per unique question_id.

Faithful parsing keeps upstream's quirks: option texts used for content matching are empty
strings (so a > 5-word reply without a capital A-D parses as "A"), a capital A-D anywhere is a
candidate, and unmatched short replies get a random letter (one RNG per task, seeded).
Robust parsing uses :func:`evaluation.common.robust_extract` with the real option texts and a
per-question seeded fallback.
"""

from __future__ import annotations

import ast
import re

try:
    from evaluation import common as C
except ImportError:  # loaded by file path (lmms-eval ``!function``) without the project on sys.path
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    from evaluation import common as C

PROMPT = (
    "Your task is to accurately answer multiple-choice questions based on the given video.\n"
    "Select the single most accurate answer from the given choices.\n"
    "Question: {question}\n"
    "Choices: {choices}\n"
    "Your answer should be a capital letter representing your choice: A, B, C, or D. "
    "Don't generate any other text.\n"
)


def parse_choices(value) -> list[str]:
    """``Choice`` -> option strings: lists as-is; strings get upstream's fix-up of
    ``'<spaces>'`` boundaries into ``', '`` and are literal-evaluated (general option parser as
    a fallback)."""
    if value is None:
        return []
    if C._is_sequence(value):
        return [str(x) for x in C._as_list(value)]
    text = str(value)
    try:
        parsed = ast.literal_eval(re.sub(r"'\s+'", "', '", text))
    except (ValueError, SyntaxError, TypeError):
        parsed = None
    if isinstance(parsed, (list, tuple)):
        return [str(x) for x in parsed]
    return C.parse_options(text)


def video_path(doc, root):
    vid = str(doc["video_id"])
    return C.join_path(root, f"videos/{vid}/{vid}_video.mp4")


def _options_of(doc):
    return parse_choices(doc.get("Choice"))


def doc_to_visual(doc):
    return [doc["_video_path"]]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return PROMPT.format(question=doc["Question"], choices="\n".join(parse_choices(doc.get("Choice"))))


def doc_to_target(doc):
    return str(doc["Answer"]).strip()


def gold(doc, scoring):
    if scoring == "faithful":
        return str(doc["Answer"]).strip()
    return C.answer_letter(doc["Answer"], parse_choices(doc.get("Choice")))


def parse(reply, doc, *, scoring, rng, seed, sample_id):
    if scoring == "faithful":
        return C.dailyomni_faithful(reply, rng)
    options = parse_choices(doc.get("Choice"))
    letters = C.letters_for(options)
    pred = C.robust_extract(reply, letters, options)
    if pred is None:
        return C.seeded_choice(seed, sample_id, letters), "random"
    return pred, None


DEFINITION = C.TaskDefinition(
    template="dailyomni",
    title="Daily-Omni",
    video_field="video_id",
    video_path=video_path,
    question_field="Question",
    options=_options_of,
    answer_field="Answer",
    id_field="question_id",
    group_field="video_category",
    record_fields=("video_category", "Type", "video_duration"),
    breakdowns=("video_category", "Type", "video_duration"),
    aggregation="group_unique",
    parse=parse,
    gold=gold,
    cluster_field="video_id",
)

bind = DEFINITION.bind
_default = bind("faithful", 0)
process_results = _default.process_results
aggregate = _default.aggregate
