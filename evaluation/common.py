"""Shared pieces of the benchmark tasks: the error-reply convention, system prompts, option
parsing, answer extractors (faithful upstream ones and a robust one), duration buckets and the
record/aggregation machinery every task's ``utils.py`` binds to.

Everything here is pure Python (no torch, no lmms-eval import) so that scoring and summaries can
run anywhere, including inside lmms-eval's ``!function`` modules.

Faithful vs robust: the ``faithful`` helpers reproduce the upstream parsing behaviour described
in spec §2 item 16 / §14.3 (quirks included); the ``robust`` helpers fix them.  Which one a task
uses is decided by the ``scoring`` argument of :func:`TaskDefinition.bind`.
"""

from __future__ import annotations

import ast
import json
import math
import random
import re
import string
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable, Iterable, Mapping, Sequence

# --------------------------------------------------------------------------------------------
# Error replies
# --------------------------------------------------------------------------------------------

#: Prefix of a reply the model wrapper returns for a sample it could not run (missing or corrupt
#: video, exception during generation, ...).  Such a sample is never parsed as an answer: its
#: record gets ``score=None`` and ``error=<reason>`` and it is left out of every accuracy.
ERROR_MARKER = "<seats-exp:error>"

#: Name of the single lmms-eval metric every seats task reports (value = per-sample record).
METRIC_NAME = "seats_accuracy"

#: Record field that holds 0/1 for scored samples only (lmms-eval's ``score_key``: it feeds the
#: CLT standard errors, which would crash on ``None``).
STATS_SCORE_KEY = "correct"

#: Record field used as lmms-eval's ``cluster_key`` (questions on one video are correlated).
CLUSTER_KEY = "cluster"

SCORING_MODES = ("faithful", "robust")


def make_error(reason: str) -> str:
    """The reply string a wrapper returns for a sample it could not run."""
    return f"{ERROR_MARKER}{reason}"


def is_error(response: Any) -> bool:
    """True if ``response`` is an error reply (``ERROR_MARKER`` + reason)."""
    return isinstance(response, str) and response.lstrip().startswith(ERROR_MARKER)


def error_reason(response: Any) -> str | None:
    """The reason of an error reply, ``None`` for a normal reply."""
    if not is_error(response):
        return None
    reason = response.lstrip()[len(ERROR_MARKER):].strip()
    return reason or "unspecified error"


# --------------------------------------------------------------------------------------------
# System prompts (spec §14.2, §2 item 23)
# --------------------------------------------------------------------------------------------

#: Verbatim upstream system text for tasks whose name contains "dailyomni"/"worldsense".
PERSONA_SYSTEM_PROMPT = (
    "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of "
    "perceiving auditory and visual inputs, as well as generating text and speech. Please "
    "analyze the video carefully and select the most appropriate answer from the given options."
)

#: ``system_prompt`` setting -> system text.  ``empty`` renders an empty system turn (it is not
#: the chat template's default system prompt).
SYSTEM_PROMPTS = {"persona": PERSONA_SYSTEM_PROMPT, "empty": ""}


def system_text(name: str | None) -> str:
    """Resolve a ``system_prompt`` setting (``persona`` | ``empty``) to the system text."""
    key = "empty" if name is None else str(name)
    if key not in SYSTEM_PROMPTS:
        raise ValueError(f"system_prompt must be one of {sorted(SYSTEM_PROMPTS)}, got {name!r}")
    return SYSTEM_PROMPTS[key]


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------

_LETTER_PREFIX = re.compile(r"^\s*[\(\[]?\s*([A-Z])\s*[\)\]\.:：、]\s*")


def _is_sequence(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return True
    # numpy arrays (parquet list columns read through pandas) without importing numpy
    return type(value).__name__ == "ndarray" and hasattr(value, "tolist")


def _as_list(value: Any) -> list:
    return list(value.tolist()) if hasattr(value, "tolist") and not isinstance(value, list) else list(value)


def _literal_list(text: str) -> list[str] | None:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    if isinstance(value, (list, tuple)):
        return [str(x).strip() for x in value]
    return None


def _split_on_letter_markers(text: str) -> list[str] | None:
    """Split "A. x B. y C. z" style strings on the consecutive markers A., B., C., ..."""
    pieces: list[int] = []
    pos = 0
    for letter in string.ascii_uppercase[:10]:
        m = re.compile(r"(?:^|(?<=[\s,\[\(\"']))" + letter + r"\.").search(text, pos)
        if m is None:
            break
        pieces.append(m.start())
        pos = m.end()
    if len(pieces) < 2:
        return None
    bounds = pieces + [len(text)]
    out = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        item = text[a:b].strip().strip(",").strip().strip("'\"").strip().rstrip("]").strip()
        item = item.strip(",").strip().strip("'\"").strip()
        out.append(item)
    return out


def parse_options(value: Any) -> list[str]:
    """Options field -> list of option strings (spec §14.3, WorldSense style).

    Lists/arrays are used as-is (stripped strings).  Strings are literal-evaluated, first as
    they are, then with the normalisations upstream applies to quote/comma-broken strings
    (non-breaking spaces, missing ", " between adjacent quoted items, repeated commas, repeated
    quotes); last resort: split on the "A." ... "D." markers; else the whole string is one option.
    """
    if value is None:
        return []
    if _is_sequence(value):
        return [str(x).strip() for x in _as_list(value)]
    text = str(value).replace("\u00a0", " ").strip()
    if not text:
        return []
    # Python would silently concatenate adjacent string literals ('a' 'b' -> 'ab'), so the
    # missing-comma fixes are tried before the raw text.
    fixed = re.sub(r"(['\"])\s+(['\"])", r"\1, \2", text)  # 'a' 'b' -> 'a', 'b'
    fixed = re.sub(r",(\s*,)+", ",", fixed)  # ,, -> ,
    candidates = [
        re.sub(r"(?<=[^\[\s,(])(['\"])\1(?=[^\]\s,)])", r"\1, \1", fixed),  # 'a''b' -> 'a', 'b'
        fixed,
        text,
        re.sub(r"(['\"])\1+", r"\1", fixed),  # ''a'' -> 'a'
    ]
    for cand in candidates:
        parsed = _literal_list(cand)
        if parsed is not None:
            return parsed
    split = _split_on_letter_markers(text)
    if split is not None:
        return split
    return [text]


def split_option(option: str, index: int) -> tuple[str, str]:
    """(letter, text) of one option; the letter comes from an "A." / "(A)" / "A)" prefix if
    present, else from the position."""
    m = _LETTER_PREFIX.match(option)
    if m:
        return m.group(1), option[m.end():].strip()
    return string.ascii_uppercase[index] if index < 26 else str(index), option.strip()


def option_table(options: Sequence[str]) -> dict[str, str]:
    """letter -> option text (prefix removed), in option order."""
    table: dict[str, str] = {}
    for i, opt in enumerate(options):
        letter, text = split_option(str(opt), i)
        table.setdefault(letter, text)
    return table


def letters_for(options: Sequence[str], default: str = "ABCD") -> list[str]:
    """The answer letters a question offers (from its options; ``default`` if none)."""
    table = option_table(options)
    letters = [k for k in table if len(k) == 1 and k.isalpha()]
    return letters or list(default)


def answer_letter(answer: Any, options: Sequence[str] = ()) -> str:
    """Normalise a gold answer to its letter ("A", "A.", "(A)", "A. text" or an option text)."""
    if answer is None:
        return ""
    text = str(answer).strip()
    bare = text.strip(" .:)(][")
    if len(bare) == 1 and bare.isalpha():
        return bare.upper()
    m = _LETTER_PREFIX.match(text)
    if m:
        return m.group(1)
    for letter, opt_text in option_table(options).items():
        if opt_text and _norm(opt_text) == _norm(text):
            return letter
    return text


# --------------------------------------------------------------------------------------------
# Faithful extractors
# --------------------------------------------------------------------------------------------


def strip_chars_sequential(text: str, chars: Iterable[str]) -> str:
    """``str.strip`` applied once per character, in order (the upstream idiom)."""
    for ch in chars:
        text = text.strip(ch)
    return text


_MCQ_PHRASES = (
    "the answer is", "answer is", "the correct answer is", "correct answer is",
    "the best answer is", "best answer is", "the correct option is", "correct option is",
    "the best option is", "best option is", "the choice is", "choice is",
    "the correct choice is", "correct choice is", "i choose", "i select", "i pick",
    "my answer is", "my choice is",
    "옵션", "정답은", "답은", "답:", "答案是", "答案为", "选", "答えは",
)


def mcq_extract_lmms(response: str, choices: Sequence[str] = ("A", "B", "C", "D")) -> str:
    """lmms-eval 0.7's generic MCQ extractor as described in spec §14.3 (Video-MME faithful).

    Candidates (letter, position, priority): "(X)" 6, "X." 5, "X:" 4, "X)" 3, "X " 2 (last
    occurrence each); after an answer phrase every X found later, 7; a reply starting with a
    standalone X 10, ending with one 9; only if nothing else, any X (last) 0.  Highest
    priority wins, then the latest position.  "" when nothing matches.
    """
    if not response or not response.strip():
        return ""
    text = " " + strip_chars_sequential(response.strip(), [",", ".", "!", "?", ";", ":", "'", '"']) + " "
    cands: list[tuple[int, int, str]] = []  # (priority, position, letter)
    for pattern, prio in (("({})", 6), ("{}.", 5), ("{}:", 4), ("{})", 3), ("{} ", 2)):
        for ch in choices:
            token = pattern.format(ch)
            if token in text:
                cands.append((prio, text.rfind(token), ch))
    lower = text.lower()
    for phrase in _MCQ_PHRASES:
        at = lower.find(phrase)
        if at != -1:
            after = at + len(phrase)
            for ch in choices:
                pos = text.find(ch, after)
                if pos != -1:
                    cands.append((7, pos, ch))
    core = text.strip()
    for ch in choices:
        if core.startswith(ch) and (len(core) == 1 or not core[1].isalpha()):
            cands.append((10, 0, ch))
    for ch in choices:
        if core.endswith(ch) and (len(core) == 1 or not core[-2].isalpha()):
            cands.append((9, len(text) - 1, ch))
    if not cands:
        for ch in choices:
            if ch in text:
                cands.append((0, text.rfind(ch), ch))
    if not cands:
        return ""
    # stable sort, descending by (priority, position): equal keys keep insertion order
    best = sorted(cands, key=lambda c: (c[0], c[1]), reverse=True)[0]
    return best[2]


#: Phrases OmniVideoBench/LVOmniBench remove before looking for a letter.  The fifth is two
#: list items upstream forgot to separate with a comma (kept concatenated on purpose).
OMNI_ANSWER_PREFIXES = (
    "The best answer is",
    "The correct answer is",
    "The answer is",
    "The answer",
    "The best option isThe correct option is",
    "Best answer:",
    "Best option:",
)


def first_capital_faithful(response: str) -> str:
    """OmniVideoBench/LVOmniBench faithful parser: remove the answer phrases, then the first capital
    A/B/C/D anywhere ("Based on" -> "B"), else "".

    Upstream also returns "" early for a reply of more than 10 words without A-D; that branch can
    never change the result (without A-D the search below returns "" too), so it is not repeated."""
    s = (response or "").strip()
    for prefix in OMNI_ANSWER_PREFIXES:
        s = s.replace(prefix, "")
    m = re.search("[ABCD]", s)
    return m.group(0) if m else ""


def first_character_faithful(response: str, letters: str = "ABCDEF") -> str:
    """WorldSense faithful parser: the first letter of A-F the upper-cased reply starts with,
    else the first character upper-cased ("The answer is B" -> "T"); "" for an empty reply."""
    s = (response or "").strip()
    if not s:
        return ""
    upper = s.upper()
    for letter in letters:
        if upper.startswith(letter):
            return letter
    return upper[0]


def dailyomni_faithful(response: str, rng: random.Random, choices: Sequence[str] = ("A", "B", "C", "D"),
                       option_texts: Mapping[str, str] | None = None) -> tuple[str, str | None]:
    """Daily-Omni faithful parser (spec §14.3).  Returns (letter, fallback) where fallback is
    ``"empty_option_text"`` when the content rule matched on upstream's empty option texts and
    ``"random"`` when the unseeded-upstream random letter was drawn (here from ``rng``).

    ``option_texts`` defaults to empty strings for every letter: upstream indexes the string
    ``Choice`` field as if it were a list, so every option text it matches against is "".
    """
    texts = {ch: "" for ch in choices} if option_texts is None else dict(option_texts)
    s = " " + strip_chars_sequential(response or "", [",", ".", "!", "?", ";", ":", "'"]) + " "
    cands = [ch for ch in choices if ch in s]
    rule = "bare"
    if not cands:
        cands = [ch for ch in choices if f" {ch} " in s]
        rule = "spaced"
    if not cands and len(s.split()) > 5:
        cands = [ch for ch in choices if texts.get(ch, "").lower() in s.lower()]
        rule = "content"
    if not cands:
        return rng.choice(list(choices)), "random"
    fallback = "empty_option_text" if rule == "content" and all(not texts.get(c) for c in cands) else None
    if len(cands) == 1:
        return cands[0], fallback
    if rule == "bare":
        positions = [s.rfind(f"({ch})") for ch in cands]
    elif rule == "spaced":
        positions = [s.rfind(f" {ch} ") for ch in cands]
    else:
        positions = [s.lower().rfind(texts.get(ch, "").lower()) for ch in cands]
    best = max(range(len(cands)), key=lambda i: (positions[i], -i))  # first of the maxima
    return cands[best], fallback


# --------------------------------------------------------------------------------------------
# Robust extractor
# --------------------------------------------------------------------------------------------


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^0-9a-z]+", " ", str(text).lower()).split())


# A letter as an answer names it: "B", "(B)", "[B]", "B)" -- not part of a word.
_L = r"[\(\[]?\s*([A-Za-z])\s*[\)\]]?(?![A-Za-z'’])"
_CONNECT = r"\s*(?:(?:is|would\s+be|should\s+be|will\s+be|must\s+be|seems\s+to\s+be)\s*[:=\-]?|[:=\-：])\s*"
_ADVERB = r"(?:(?:probably|likely|clearly|definitely|most\s+likely)\s+)?"
_OPTION_WORD = r"(?:(?:option|choice)\s+)?"
#: Explicit answer statements ("the answer is B", "Answer: (c)", "I choose D", "C is correct", "答案是C").
_STRONG = [
    re.compile(r"(?i:\b(?:answer|option|choice)" + _CONNECT + _ADVERB + _OPTION_WORD + r")" + _L),
    re.compile(r"(?i:\b(?:i\s+(?:would\s+|will\s+)?(?:choose|select|pick|go\s+with)|final\s+answer)\s*[:\-]?\s*"
               + _OPTION_WORD + r")" + _L),
    re.compile(r"(?:答案是|答案为|答案：|答案:|选择|选)\s*" + _L),
    re.compile(r"(?:(?i:\b(?:option|choice))\s+)?(?<![A-Za-z'’])([A-Z])(?![A-Za-z'’])\s*(?i:is\s+(?:the\s+)?(?:most\s+likely\s+)?"
               r"(?:correct|right|best|true|answer)\b)"),
]
#: Cues that make the next letter/option a rejected one ("not A", "rather than C", "rule out D").
_NEG_BEFORE = re.compile(r"(?i:(?:\bnot|n't|\bnever|\bneither|\bnor|\bthan|\binstead\s+of|\bexcept|\bexcluding|"
                         r"\beliminat\w*|\brul\w*\s+out|\bno)\s+(?:be\s+)?(?:the\s+|a\s+|an\s+)?"
                         r"(?:(?:option|choice|answer)s?\s+)?[\(\[]?\s*)$")
#: ... or a rejecting predicate after it ("A and B are wrong", "Option C is incorrect", "D can be ruled out").
_NEG_AFTER = re.compile(r"^\s*[\)\]]?\s*(?:(?:,|and|or)\s*(?:(?i:option|choice)\s+)?[\(\[]?[A-Z][\)\]]?\s*)*"
                        r"(?i:(?:is|are|was|were|seems?|would\s+be|can\s+be|could\s+be|must\s+be|should\s+be)\s+"
                        r"(?:definitely\s+|clearly\s+|also\s+)?)?"
                        r"(?i:not\b|n't\b|incorrect|wrong|false|unlikely|impossible|ruled\s+out|eliminated|excluded)")
#: Words after a leading capital "A" that make it a letter ("A is ...", "A or B"), not the article ("A dog").
_AFTER_LETTER_WORDS = {"is", "or", "and", "because", "since", "as", "but", "nor", "seems", "would", "should",
                       "could", "fits", "matches", "appears", "looks", "was", "then", "so", "must", "can",
                       "might", "makes", "best", "correct", "being"}


def _negated(text: str, start: int, end: int) -> bool:
    return bool(_NEG_BEFORE.search(text[:start])) or bool(_NEG_AFTER.match(text[end:]))


def _letter_ok(text: str, m: re.Match, allowed: set[str]) -> str | None:
    """The allowed (upper-case) letter of a match; a lower-case letter only in unambiguous spots:
    in brackets, or closed by punctuation or the end of the reply."""
    letter = m.group(1)
    if letter.upper() not in allowed:
        return None
    if letter.isupper():
        return letter
    whole = m.group(0)
    after = text[m.end():]
    if "(" in whole or "[" in whole or re.match(r"\s*(?:[\)\].,;:!?]|$)", after):
        return letter.upper()
    return None


def _is_article(text: str, end: int) -> bool:
    """A capital "A" followed by a lower-case word that is not one of the letter-sentence words."""
    m = re.match(r"\s+([a-z][a-z'’]*)", text[end:])
    return bool(m) and m.group(1) not in _AFTER_LETTER_WORDS


def robust_extract(response: str, letters: Sequence[str] = ("A", "B", "C", "D"),
                   options: Sequence[str] = ()) -> str | None:
    """A careful letter extractor; ``None`` when the reply names no offered option (refusals included).

    Order: (1) a reply that is just a letter, any case (brackets/markdown/punctuation ignored);
    (2) an explicit answer statement -- "the answer is B", "Answer: (c)", "I choose D",
    "C is correct", "答案是C" -- the last one wins; (3) a leading letter ("B, because ...",
    "c) applause", "D - Silence"; not the article in "A dog ..."); (4) the first letter mentioned that
    is not rejected ("not A", "rather than C", "A and B are wrong", "option C is incorrect"),
    article "A" excepted; (5) the real option texts (longest match, rejected ones skipped).
    Letters outside ``letters`` never count.  Corpus: ``tests/data/robust_parser_corpus.json``.
    """
    if response is None:
        return None
    text = str(response).strip()
    if not text:
        return None
    allowed = {str(x).upper() for x in letters}
    clean = text.replace("*", "").replace("`", "").replace("_", " ").strip()

    # (1) just a letter
    bare = clean.strip(" \t\n.,;:!?'\"()[]{}<>")
    if len(bare) == 1 and bare.upper() in allowed:
        return bare.upper()

    # (2) explicit answer statements, last one wins
    strong: list[tuple[int, str]] = []
    for pattern in _STRONG:
        for m in pattern.finditer(clean):
            letter = _letter_ok(clean, m, allowed)
            if letter is not None and not _NEG_AFTER.match(clean[m.end():]):
                strong.append((m.start(1), letter))
    if strong:
        return max(strong)[1]

    # (3) a leading letter
    m = re.match(r"^[\(\[]?\s*([A-Za-z])(?:\s*[\)\]\.:,]|\s*[-–—]\s|\s*$)", clean)
    if m and m.group(1).upper() in allowed and not _NEG_AFTER.match(clean[m.end():]):
        return m.group(1).upper()
    m = re.match(r"^([A-Z])(?=\s+\S)", clean)
    if m and m.group(1) in allowed and not (m.group(1) == "A" and _is_article(clean, m.end())) \
            and not _NEG_AFTER.match(clean[m.end():]):
        return m.group(1)

    # (4) the first letter mentioned that is not rejected
    mention = re.compile(r"(?:(?i:\b(?:option|choice))\s+" + _L + r")|(?:[\(\[]\s*([A-Za-z])\s*[\)\]])|"
                         r"(?:(?<![A-Za-z'’])([A-Z])(?![A-Za-z'’]))")
    for m in mention.finditer(clean):
        group = next(g for g in (1, 2, 3) if m.group(g) is not None)
        letter = m.group(group).upper()
        if letter not in allowed:
            continue
        if group == 3 and m.group(3) == "A" and _is_article(clean, m.end()):
            continue
        if _negated(clean, m.start(), m.end()):
            continue
        return letter

    # (5) option texts
    table = option_table(options)
    reply = " " + _norm(text) + " "
    hits = []
    for letter, opt_text in table.items():
        key = _norm(opt_text)
        if letter not in allowed or not key:
            continue
        for hit in re.finditer(r"(?<= )" + re.escape(key) + r"(?= )", reply):
            if not _NEG_BEFORE.search(reply[:hit.start()]):
                hits.append((len(key), hit.start(), letter))
    if hits:
        return max(hits)[2]
    return None


def seeded_choice(seed: Any, sample_id: Any, letters: Sequence[str]) -> str:
    """Per-question deterministic fallback letter (robust mode): independent of sample order."""
    return random.Random(f"seats-exp:{seed}:{sample_id}").choice(list(letters))


# --------------------------------------------------------------------------------------------
# Durations
# --------------------------------------------------------------------------------------------

DURATION_BUCKETS = ((60, "0-1min"), (300, "1-5min"), (600, "5-10min"), (1800, "10-30min"))
UNPARSED_BUCKET = "unparsed"


def bucket_of_seconds(seconds: float) -> str:
    for limit, name in DURATION_BUCKETS:
        if seconds <= limit:
            return name
    return ">30min"


def duration_seconds(value: Any, *, allow_hours: bool = True) -> float | None:
    """"MM:SS" (and, if ``allow_hours``, "HH:MM:SS" and plain numbers) -> seconds; None if the
    value cannot be read that way."""
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not allow_hours or (isinstance(value, float) and math.isnan(value)):
            return None
        return float(value)
    parts = str(value).strip().split(":")
    try:
        if len(parts) == 2:
            if not allow_hours:
                return int(parts[0]) * 60 + int(parts[1])
            return float(parts[0]) * 60 + float(parts[1])
        if allow_hours and len(parts) == 3:
            return float(parts[0]) * 3600 + float(parts[1]) * 60 + float(parts[2])
        if allow_hours and len(parts) == 1:
            return float(parts[0])
    except ValueError:
        return None
    return None


def duration_bucket(value: Any, *, allow_hours: bool = True) -> str:
    seconds = duration_seconds(value, allow_hours=allow_hours)
    return UNPARSED_BUCKET if seconds is None else bucket_of_seconds(seconds)


# --------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------


def scored(records: Iterable[Mapping]) -> list[Mapping]:
    """Records that carry a score (error samples excluded)."""
    return [r for r in records if isinstance(r, Mapping) and r.get("score") is not None]


def mean_accuracy(records: Iterable[Mapping]) -> float:
    """Percentage of correct records over all scored records (OmniVideoBench, Video-MME)."""
    rs = scored(records)
    return 100.0 * sum(float(r["score"]) for r in rs) / len(rs) if rs else 0.0


def group_unique_accuracy(records: Iterable[Mapping], group_field: str = "group") -> float:
    """Daily-Omni/WorldSense/LVOmniBench rule: per group, one score per unique sample id (first
    seen); overall = sum of group correct / sum of group unique ids, as a percentage."""
    groups: dict[Any, dict[Any, float]] = {}
    for r in scored(records):
        groups.setdefault(r.get(group_field), {}).setdefault(r.get("sample_id"), float(r["score"]))
    total = sum(len(g) for g in groups.values())
    correct = sum(sum(g.values()) for g in groups.values())
    return 100.0 * correct / total if total else 0.0


def category_table(records: Iterable[Mapping], fieldname: str, *, unique_ids: bool) -> tuple[dict, dict]:
    """Per-value accuracy (percent) and counts of ``fieldname`` over scored records; list
    values count in every listed category."""
    seen: dict[str, dict[Any, float]] = {}
    plain: dict[str, list[float]] = {}
    for r in scored(records):
        values = r.get(fieldname)
        values = values if isinstance(values, (list, tuple)) else [values]
        for v in values:
            key = str(v)
            if unique_ids:
                seen.setdefault(key, {}).setdefault(r.get("sample_id"), float(r["score"]))
            else:
                plain.setdefault(key, []).append(float(r["score"]))
    scores = {k: list(v.values()) for k, v in seen.items()} if unique_ids else plain
    acc = {k: 100.0 * sum(v) / len(v) for k, v in sorted(scores.items())}
    counts = {k: len(v) for k, v in sorted(scores.items())}
    return acc, counts


# --------------------------------------------------------------------------------------------
# Task definition: what each task's utils.py declares, and the bound scorer
# --------------------------------------------------------------------------------------------


def join_path(root: str, rel: Any) -> str:
    """``rel`` under the video root (absolute paths and ``~`` are kept), resolved."""
    import os
    from pathlib import Path

    path = Path(os.path.expanduser(str(rel)))
    if not path.is_absolute():
        path = Path(root) / path
    return str(path.resolve())


def _blank(value: Any) -> bool:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    return isinstance(value, str) and not value.strip()


def _clean(value: Any) -> Any:
    """Make a doc value JSON/arrow friendly for a record."""
    if _is_sequence(value):
        return [_clean(v) for v in _as_list(value)]
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


@dataclass(frozen=True)
class TaskDefinition:
    """The pure functions and field names of one benchmark task.

    parse(reply, doc, scoring, rng, seed, sample_id) -> (pred, fallback or None)
    gold(doc, scoring) -> gold answer (as compared with pred)
    extra(doc, scoring) -> breakdown fields of the record
    """

    template: str
    id_field: str | None
    group_field: str | None
    record_fields: tuple[str, ...]  # doc fields copied into every record
    breakdowns: tuple[str, ...]  # record fields tabulated by ``benchmarks.breakdowns``
    aggregation: str  # "group_unique" | "mean"
    parse: Callable[..., tuple[str | None, str | None]]
    gold: Callable[[Mapping, str], str]
    extra: Callable[[Mapping, str], dict] = field(default=lambda doc, scoring: {})
    cluster_field: str | None = None
    case_insensitive: bool = False
    # What ``evaluation.benchmarks`` needs to find the benchmark's data (the task folder is the only
    # place these facts are written): display title, the field naming the video and the rule that
    # turns a row into the absolute video path.
    title: str = ""
    video_field: str | None = None
    video_path: Callable[[Mapping, str], str] | None = None
    # Fields a row must have to be scored: the question text, its options and the gold answer.
    question_field: str | None = None
    options: Callable[[Mapping], list] | None = None  # doc -> option strings
    answer_field: str | None = None

    def sample_id(self, doc: Mapping) -> str | None:
        sid = doc.get("_sample_id")
        if sid is None and self.id_field is not None:
            sid = doc.get(self.id_field)
        return None if sid is None else str(sid)

    def problem(self, doc: Mapping) -> str | None:
        """Why a row cannot be scored (a missing question/answer/options field, an answer that is
        not one of the options), or None.  Such a row becomes a per-sample error, never a score."""
        for name in (self.question_field, self.answer_field):
            if name is not None and _blank(doc.get(name)):
                return f"row has no {name!r} field" if name not in doc else f"row has an empty {name!r} field"
        if self.options is None:
            return None
        try:
            opts = self.options(doc)
        except Exception as exc:  # noqa: BLE001 - any parse failure is this row's problem
            return f"the options of this row cannot be read: {exc}"
        if not opts:
            return "row has no options"
        if self.answer_field is not None:
            # options that do not split into two or more are checked against A-D (upstream's letters)
            letters = letters_for(opts) if len(opts) >= 2 else list("ABCD")
            gold = answer_letter(doc.get(self.answer_field), opts)
            if gold not in letters:
                return (f"answer {str(doc.get(self.answer_field)).strip()!r} is not one of the options "
                        f"{'/'.join(letters)}")
        return None

    def aggregate(self, records: Iterable[Mapping]) -> float:
        if self.aggregation == "group_unique":
            return group_unique_accuracy(records)
        return mean_accuracy(records)

    def make_record(self, doc: Mapping, results: Sequence[Any], *, scoring: str, rng: random.Random,
                    seed: Any) -> dict:
        reply = results[0] if results else ""
        reply = "" if reply is None else str(reply)
        sid = self.sample_id(doc)
        problem = doc.get("_problem") or self.problem(doc)
        record: dict[str, Any] = {
            "task": self.template,
            "task_key": doc.get("_task_key"),
            "sample_id": sid,
            "group": _clean(doc.get(self.group_field)) if self.group_field else None,
            CLUSTER_KEY: _clean(doc.get(self.cluster_field)) if self.cluster_field else doc.get("_video_path"),
            "scoring": scoring,
            "answer": None if problem else self.gold(doc, scoring),
            "response": reply,
        }
        for name in self.record_fields:
            record[name] = _clean(doc.get(name))
        if problem:  # a bad row: an error with its reason, never compared with a gold answer
            record.update(pred=None, score=None, error=f"bad annotation row: {problem}", fallback=None,
                          answer=None)
            return record
        record.update(self.extra(doc, scoring))
        if is_error(reply):
            record.update(pred=None, score=None, error=error_reason(reply), fallback=None)
            return record
        pred, fallback = self.parse(reply, doc, scoring=scoring, rng=rng, seed=seed, sample_id=sid)
        pred = "" if pred is None else pred
        if self.case_insensitive:
            correct = int(pred.lower() == str(record["answer"]).lower())
        else:
            correct = int(pred == record["answer"])
        record.update(pred=pred, score=correct, error=None, fallback=fallback)
        record[STATS_SCORE_KEY] = correct
        return record

    def bind(self, scoring: str = "faithful", seed: Any = 0) -> SimpleNamespace:
        """process_results/aggregate bound to a scoring mode and seed.  Faithful mode draws its
        random fallbacks from one RNG seeded once here (one per task); robust mode seeds each
        question from (seed, sample id)."""
        if scoring not in SCORING_MODES:
            raise ValueError(f"scoring must be one of {SCORING_MODES}, got {scoring!r}")
        rng = random.Random(seed)
        definition = self

        def process_results(doc, results, **_):
            return {METRIC_NAME: definition.make_record(doc, results, scoring=scoring, rng=rng, seed=seed)}

        def aggregate(records):
            return definition.aggregate(records)

        return SimpleNamespace(process_results=process_results, aggregate=aggregate, scoring=scoring,
                               seed=seed, rng=rng, definition=self)


def dump_json_line(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, allow_nan=False)
