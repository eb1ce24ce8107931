"""OmniVideoBench task functions (spec §14.3).

Fields: video, question, options, correct_option, duration ("MM:SS"), video_type,
question_type, audio_type (no question id: the sample id is the row number of the annotation
file, set by ``materialize``; a ``question_id`` field is used if the file has one).
Aggregation: mean over all scored samples.  Breakdowns: video_type, question_type, audio_type,
duration_bucket.

Faithful parsing: remove the answer phrases (including the concatenated "The best option isThe
correct option is"), "" for > 10 words without A-D, else the first capital A-D anywhere
("Based on" -> "B").  Upstream's duration bucketing raises on "HH:MM:SS"; here such rows go to
the ``unparsed`` bucket in faithful mode (``summarize`` notes how many) and are bucketed
properly in robust mode.
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
    "You are given a video. Based on the content of the video, answer the following question:\n\n"
    "Question:\n{question}\n\n"
    "Options:\n{options}\n\n"
    "Answer with the option's letter directly(e.g., A, B, C, or D)."
    "If your access to the video content is limited, at least one option that is more likely "
    "than the others must be chosen."
    "Mustn't give any other reason for can not choose!"
)


def options(doc) -> list[str]:
    return C.parse_options(doc.get("options"))


def video_path(doc, root):
    return C.join_path(root, doc["video"])


def _options_of(doc):
    return options(doc)


def doc_to_visual(doc):
    return [doc["_video_path"]]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return PROMPT.format(question=doc["question"], options="\n".join(options(doc)))


def doc_to_target(doc):
    return str(doc["correct_option"]).strip()


def gold(doc, scoring):
    if scoring == "faithful":
        return str(doc["correct_option"]).strip()
    return C.answer_letter(doc["correct_option"], options(doc))


def parse(reply, doc, *, scoring, rng, seed, sample_id):
    if scoring == "faithful":
        return C.first_capital_faithful(reply), None
    opts = options(doc)
    return C.robust_extract(reply, C.letters_for(opts), opts), None


def extra(doc, scoring):
    # faithful: only "MM:SS" is understood (upstream raises on anything else)
    return {"duration_bucket": C.duration_bucket(doc.get("duration"), allow_hours=scoring != "faithful")}


DEFINITION = C.TaskDefinition(
    template="omnivideobench",
    title="OmniVideoBench",
    video_field="video",
    video_path=video_path,
    question_field="question",
    options=_options_of,
    answer_field="correct_option",
    id_field="question_id",
    group_field=None,
    record_fields=("video_type", "question_type", "audio_type", "duration"),
    breakdowns=("video_type", "question_type", "audio_type", "duration_bucket"),
    aggregation="mean",
    parse=parse,
    gold=gold,
    extra=extra,
    cluster_field="video",
)

bind = DEFINITION.bind
_default = bind("faithful", 0)
process_results = _default.process_results
aggregate = _default.aggregate
