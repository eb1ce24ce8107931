"""Video-MME task functions (spec §14.3).

Fields: videoID, question, options (a list, used as is), answer, duration
(short/medium/long), domain, sub_category, task_type, question_id.  The model name is not in
the task's lmms_eval_specific_kwargs, so the ``default`` post prompt applies.  Aggregation:
correct / answered over all scored samples (upstream's hard-coded category lists, which raise
``KeyError`` on unknown combinations, are not reproduced).  Breakdowns: duration, domain,
sub_category, task_type.

Faithful parsing: lmms-eval's generic MCQ extractor with choices A-D
(:func:`common.mcq_extract_lmms`), compared lower-cased.  Robust: :func:`common.robust_extract`.
"""

from __future__ import annotations

try:
    from evaluation import common as C
except ImportError:  # loaded by file path (lmms-eval ``!function``) without the project on sys.path
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    from evaluation import common as C

OPTION_PROMPT = (
    "Select the best answer to the following multiple-choice question based on the video and the "
    "subtitles. Respond with only the letter (A, B, C, or D) of the correct option."
)
DEFAULT_POST_PROMPT = "\nAnswer with the option's letter from the given choices directly."


def options(doc) -> list[str]:
    return C.parse_options(doc.get("options"))


def video_path(doc, root):
    """``data/<videoID>.mp4``, else ``.MP4``, else ``.mkv`` (the first that exists; ``.mp4`` if none)."""
    import os

    vid = str(doc["videoID"])
    candidates = [C.join_path(root, f"data/{vid}{ext}") for ext in (".mp4", ".MP4", ".mkv")]
    return next((c for c in candidates if os.path.exists(c)), candidates[0])


def _options_of(doc):
    return options(doc)


def doc_to_visual(doc):
    return [doc["_video_path"]]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    kwargs = lmms_eval_specific_kwargs or {}
    post_prompt = kwargs.get("post_prompt", DEFAULT_POST_PROMPT)
    question = doc["question"] + "\n" + "\n".join(options(doc))
    return OPTION_PROMPT + "\n" + question + "\n" + post_prompt


def doc_to_target(doc):
    return str(doc["answer"]).strip()


def gold(doc, scoring):
    if scoring == "faithful":
        return str(doc["answer"])
    return C.answer_letter(doc["answer"], options(doc))


def parse(reply, doc, *, scoring, rng, seed, sample_id):
    if scoring == "faithful":
        return C.mcq_extract_lmms(reply, ["A", "B", "C", "D"]), None
    opts = options(doc)
    return C.robust_extract(reply, C.letters_for(opts), opts), None


DEFINITION = C.TaskDefinition(
    template="videomme",
    title="Video-MME",
    video_field="videoID",
    video_path=video_path,
    question_field="question",
    options=_options_of,
    answer_field="answer",
    id_field="question_id",
    group_field=None,
    record_fields=("duration", "domain", "sub_category", "task_type"),
    breakdowns=("duration", "domain", "sub_category", "task_type"),
    aggregation="mean",
    parse=parse,
    gold=gold,
    cluster_field="videoID",
    case_insensitive=True,
)

bind = DEFINITION.bind
_default = bind("faithful", 0)
process_results = _default.process_results
aggregate = _default.aggregate
