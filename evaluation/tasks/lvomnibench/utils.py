"""LVOmniBench task functions (spec §14.3).

Fields: video_id, question, options, answer, duration ("MM:SS" or "HH:MM:SS"),
video_category, sub_category, question_type, audio_type, difficulty, question_id.
Aggregation: per video_category, one score per unique question_id.  Breakdowns:
video_category, sub_category, question_type, audio_type, difficulty, duration_bucket.

Parsing is OmniVideoBench's (faithful: phrase removal incl. the missing-comma phrase, then the
first capital A-D anywhere; robust: :func:`common.robust_extract`).  Durations in both forms are
bucketed in both modes.
"""

from __future__ import annotations

try:
    from evaluation import common as C
except ImportError:  # loaded by file path (lmms-eval ``!function``) without the project on sys.path
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    from evaluation import common as C

PROMPT = (
    "Question: {question}\n"
    "Options: {options}\n"
    "Select the best answer from the options above. Directly provide the letter representing "
    "your choice (A/B/C/D) and nothing else. Do not include the full text of the option; do not "
    "provide any explanation."
)


def options(doc) -> list[str]:
    return C.parse_options(doc.get("options"))


def video_path(doc, root):
    return C.join_path(root, f"videos/{doc['video_id']}.mp4")


def _options_of(doc):
    return options(doc)


def doc_to_visual(doc):
    return [doc["_video_path"]]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return PROMPT.format(question=doc["question"], options="\n".join(options(doc)))


def doc_to_target(doc):
    return str(doc["answer"]).strip()


def gold(doc, scoring):
    if scoring == "faithful":
        return str(doc["answer"]).strip()
    return C.answer_letter(doc["answer"], options(doc))


def parse(reply, doc, *, scoring, rng, seed, sample_id):
    if scoring == "faithful":
        return C.first_capital_faithful(reply), None
    opts = options(doc)
    return C.robust_extract(reply, C.letters_for(opts), opts), None


def extra(doc, scoring):
    return {"duration_bucket": C.duration_bucket(doc.get("duration"), allow_hours=True)}


DEFINITION = C.TaskDefinition(
    template="lvomnibench",
    title="LVOmniBench",
    video_field="video_id",
    video_path=video_path,
    question_field="question",
    options=_options_of,
    answer_field="answer",
    id_field="question_id",
    group_field="video_category",
    record_fields=("video_category", "sub_category", "question_type", "audio_type", "difficulty", "duration"),
    breakdowns=("video_category", "sub_category", "question_type", "audio_type", "difficulty", "duration_bucket"),
    aggregation="group_unique",
    parse=parse,
    gold=gold,
    extra=extra,
    cluster_field="video_id",
)

bind = DEFINITION.bind
_default = bind("faithful", 0)
process_results = _default.process_results
aggregate = _default.aggregate
