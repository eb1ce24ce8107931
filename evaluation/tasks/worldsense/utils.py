"""WorldSense task functions (spec §14.3).

Fields: video_path, question, candidates, answer, task_type, domain, duration, audio_class,
index.  Aggregation: per task_type, one score per unique ``index``.  Logged breakdowns:
task_type, domain, duration, audio_class (a parsed list; a question counts in every class).

Faithful parsing: the first of A-F the upper-cased reply starts with, else its first character
("The answer is B" -> "T", "Based on ..." -> "B").  Robust: :func:`common.robust_extract`.
"""

from __future__ import annotations

try:
    from evaluation import common as C
except ImportError:  # loaded by file path (lmms-eval ``!function``) without the project on sys.path
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[3]))
    from evaluation import common as C

POST_PROMPT = "Answer with the option's letter from the given choices directly."


def candidates(doc) -> list[str]:
    return C.parse_options(doc.get("candidates"))


def audio_classes(value) -> list[str]:
    """``audio_class`` -> list of class names (list, list literal or a single name)."""
    if value is None:
        return []
    if C._is_sequence(value):
        return [str(x).strip() for x in C._as_list(value)]
    text = str(value).strip()
    if not text:
        return []
    if text.startswith("["):
        return C.parse_options(text)
    return [text]


def video_path(doc, root):
    return C.join_path(root, doc["video_path"])


def _options_of(doc):
    return candidates(doc)


def doc_to_visual(doc):
    return [doc["_video_path"]]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return f"{doc['question']}\nOptions:\n" + "\n".join(candidates(doc)) + f"\n{POST_PROMPT}"


def doc_to_target(doc):
    return str(doc["answer"]).strip()


def gold(doc, scoring):
    if scoring == "faithful":
        return str(doc["answer"]).strip()
    return C.answer_letter(doc["answer"], candidates(doc))


def parse(reply, doc, *, scoring, rng, seed, sample_id):
    if scoring == "faithful":
        return C.first_character_faithful(reply), None
    opts = candidates(doc)
    return C.robust_extract(reply, C.letters_for(opts), opts), None


def extra(doc, scoring):
    return {"audio_class": audio_classes(doc.get("audio_class"))}


DEFINITION = C.TaskDefinition(
    template="worldsense",
    title="WorldSense",
    video_field="video_path",
    video_path=video_path,
    question_field="question",
    options=_options_of,
    answer_field="answer",
    id_field="index",
    group_field="task_type",
    record_fields=("task_type", "domain", "duration"),
    breakdowns=("task_type", "domain", "duration", "audio_class"),
    aggregation="group_unique",
    parse=parse,
    gold=gold,
    extra=extra,
    cluster_field="video_path",
)

bind = DEFINITION.bind
_default = bind("faithful", 0)
process_results = _default.process_results
aggregate = _default.aggregate
