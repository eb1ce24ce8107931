"""Published numbers of the SEATS paper's main tables, for reports to show beside ours.

Source: the SEATS project page result-table images (``static/images/qwen2.5-omni-7b.png`` and
``qwen3-omni-30b.png`` on branch ``page`` of github.com/xxayt/SEATS), transcribed in
spec/baselines-reference.md sections 9.1 (Qwen2.5-Omni-7B) and 9.2 (Qwen3-Omni-30B-A3B).

Accuracy in %, per benchmark; ``tflops`` is the mean LLM-prefill TFLOPs per sample (encoders not
counted, multiply-add = 1 FLOP; baselines-reference section 1.4) averaged over the five benchmarks;
``mean`` is the five-benchmark mean and ``pct_full`` that mean as % of full tokens, both as printed
(computed by the paper from unrounded accuracies).  Keys are the names our configs use: model
``conf/model/<name>.yaml``, benchmark task keys ``conf/benchmark/<name>.yaml``, method
``conf/method/<name>.yaml`` (``fastvid`` has no config here; it is listed because the paper is).

``ratios`` is the paper's (Rv-Ra) in %: the setting each method ran with at overall retention R
(visual-only methods keep all audio and spend the budget on video).  ``budget_matched=False`` marks
the paper's greyed OmniZip row at R=25, which ran at 25-25 instead of the schedule's pair; it is
matched only by a run with those same ratios.
"""

from __future__ import annotations

from dataclasses import dataclass

SOURCE = ("SEATS project page result tables (github.com/xxayt/SEATS, branch page, static/images/"
          "qwen2.5-omni-7b.png and qwen3-omni-30b.png); spec/baselines-reference.md 9.1/9.2")

# Column order of the paper's tables.
BENCHMARKS = ("worldsense", "dailyomni", "omnivideobench", "videomme", "lvomnibench")
BENCHMARK_TITLES = {"worldsense": "WorldSense", "dailyomni": "Daily-Omni", "omnivideobench": "OmniVideoBench",
                    "videomme": "Video-MME", "lvomnibench": "LVOmniBench"}
METHOD_TITLES = {"full_tokens": "Full tokens", "fastv": "FastV", "fastv_omni": "FastV-om", "random": "Random",
                 "dycoke": "DyCoke", "visionzip": "VisionZip", "visionzip_omni": "VisionZip-om",
                 "divprune": "DivPrune", "divprune_omni": "DivPrune-om", "omnizip": "OmniZip",
                 "fastvid": "FastVID", "seats": "SEATS"}
# Other spellings of the omni variants (as in the experiment files' comments).
ALIASES = {"fastv_om": "fastv_omni", "visionzip_om": "visionzip_omni", "divprune_om": "divprune_omni"}


@dataclass(frozen=True)
class PublishedRow:
    model: str
    method: str
    R: int
    ratios: tuple[int, int]        # (video %, audio %)
    tflops: float
    accuracy: dict[str, float]     # benchmark key -> %
    mean: float
    pct_full: float
    budget_matched: bool = True


# (method, R, (Rv, Ra), TFLOPs, (WorldSense, Daily-Omni, OmniVideoBench, Video-MME, LVOmniBench), Mean, % of full[, budget matched])
_QWEN2_5_OMNI_7B = [
    ('full_tokens', 100, (100, 100), 111.0, (46.7, 64.0, 34.1, 65.3, 33.3), 48.7, 100.0),
    ('fastv_omni', 35, (30, 65), 38.3, (43.3, 58.7, 34.4, 65.6, 34.3), 47.2, 96.9),
    ('fastv', 35, (24, 100), 38.3, (43.7, 59.6, 34.7, 65.2, 34.8), 47.6, 97.7),
    ('random', 35, (30, 65), 37.4, (44.6, 59.7, 34.1, 65.0, 34.9), 47.7, 97.9),
    ('dycoke', 35, (24, 100), 37.7, (44.4, 59.9, 34.6, 66.0, 34.7), 47.9, 98.4),
    ('visionzip', 35, (24, 100), 37.4, (44.5, 60.6, 33.6, 66.2, 35.3), 48.0, 98.6),
    ('fastvid', 35, (24, 100), 37.1, (44.6, 59.8, 34.6, 65.4, 35.8), 48.1, 98.7),
    ('divprune', 35, (24, 100), 37.4, (44.8, 60.7, 33.9, 66.1, 35.7), 48.2, 99.0),
    ('omnizip', 35, (30, 65), 38.2, (45.2, 60.4, 34.5, 66.3, 34.7), 48.2, 99.0),
    ('visionzip_omni', 35, (30, 65), 37.4, (45.2, 60.2, 34.6, 66.3, 35.4), 48.3, 99.2),
    ('divprune_omni', 35, (30, 65), 37.4, (45.4, 59.7, 34.7, 66.3, 35.4), 48.3, 99.2),
    ('seats', 35, (30, 65), 36.7, (46.2, 62.1, 35.0, 66.8, 36.2), 49.3, 101.1),
    ('fastv_omni', 25, (20, 55), 28.3, (41.6, 56.1, 33.0, 63.4, 32.7), 45.4, 93.2),
    ('fastv', 25, (12, 100), 28.3, (42.4, 56.5, 33.4, 62.8, 33.8), 45.8, 94.0),
    ('omnizip', 25, (25, 25), 23.9, (42.7, 55.5, 32.2, 66.0, 34.0), 46.1, 94.6, False),
    ('random', 25, (20, 55), 27.6, (43.0, 57.3, 33.5, 64.2, 34.6), 46.5, 95.5),
    ('visionzip', 25, (12, 100), 27.6, (42.4, 59.7, 34.4, 64.1, 34.5), 47.0, 96.5),
    ('fastvid', 25, (12, 100), 27.0, (43.4, 58.5, 33.8, 64.3, 34.8), 47.0, 96.5),
    ('visionzip_omni', 25, (20, 55), 27.6, (44.4, 58.3, 33.7, 65.4, 34.7), 47.3, 97.1),
    ('divprune', 25, (12, 100), 27.6, (43.2, 59.7, 34.3, 65.3, 35.9), 47.7, 97.9),
    ('divprune_omni', 25, (20, 55), 27.6, (44.5, 59.2, 34.5, 66.2, 35.4), 48.0, 98.5),
    ('seats', 25, (20, 55), 26.5, (45.3, 60.9, 34.7, 66.5, 35.7), 48.6, 99.8),
    ('fastv_omni', 15, (10, 45), 24.3, (38.4, 51.8, 31.2, 58.8, 31.2), 42.3, 86.8),
    ('random', 15, (10, 45), 18.0, (40.4, 55.7, 32.7, 63.4, 32.8), 45.0, 92.4),
    ('visionzip_omni', 15, (10, 45), 17.6, (43.0, 57.1, 33.6, 63.1, 33.8), 46.1, 94.7),
    ('divprune_omni', 15, (10, 45), 17.6, (42.4, 57.6, 33.0, 64.4, 34.4), 46.4, 95.3),
    ('seats', 15, (10, 45), 17.3, (44.1, 58.7, 33.7, 66.0, 34.6), 47.4, 97.4),
    ('random', 10, (6, 35), 12.8, (39.2, 52.0, 31.6, 60.4, 32.9), 43.2, 88.7),
    ('visionzip_omni', 10, (6, 35), 12.8, (41.8, 52.8, 33.4, 60.7, 34.4), 44.6, 91.6),
    ('divprune_omni', 10, (6, 35), 12.8, (41.3, 55.1, 33.5, 63.4, 34.8), 45.6, 93.6),
    ('seats', 10, (6, 35), 12.2, (43.5, 57.8, 33.6, 64.6, 35.1), 46.9, 96.3),
]

_QWEN3_OMNI_30B_A3B = [
    ('full_tokens', 100, (100, 100), 47.2, (54.3, 71.8, 40.3, 73.1, 38.0), 55.5, 100.0),
    ('random', 35, (32, 70), 13.4, (52.6, 69.5, 39.5, 70.7, 35.7), 53.6, 96.6),
    ('fastv', 35, (29, 100), 13.7, (51.5, 68.6, 40.0, 69.5, 37.1), 53.3, 96.0),
    ('fastv_omni', 35, (32, 70), 13.7, (49.7, 66.4, 37.8, 67.5, 35.7), 51.4, 92.6),
    ('visionzip', 35, (29, 100), 13.4, (53.0, 71.4, 40.3, 70.6, 36.6), 54.4, 98.0),
    ('visionzip_omni', 35, (32, 70), 13.4, (53.3, 71.1, 39.1, 71.6, 37.5), 54.5, 98.2),
    ('divprune', 35, (29, 100), 13.4, (53.4, 69.8, 39.6, 70.7, 36.6), 54.0, 97.3),
    ('divprune_omni', 35, (32, 70), 13.4, (53.2, 70.4, 39.5, 71.5, 36.6), 54.2, 97.7),
    ('dycoke', 35, (29, 100), 13.4, (52.9, 68.6, 40.1, 70.3, 36.6), 53.7, 96.7),
    ('omnizip', 35, (32, 70), 13.4, (53.8, 70.9, 40.1, 71.6, 36.8), 54.6, 98.4),
    ('seats', 35, (32, 70), 13.3, (54.1, 71.9, 39.8, 72.7, 38.5), 55.4, 99.8),
    ('random', 25, (22, 60), 9.4, (51.3, 68.1, 39.0, 70.4, 35.6), 52.9, 95.3),
    ('fastv', 25, (18, 100), 9.8, (49.5, 67.0, 39.7, 66.1, 35.7), 51.6, 93.0),
    ('fastv_omni', 25, (22, 60), 9.8, (47.2, 62.9, 38.1, 65.7, 33.7), 49.5, 89.2),
    ('visionzip', 25, (18, 100), 9.4, (51.9, 68.0, 39.0, 68.8, 36.7), 52.9, 95.3),
    ('visionzip_omni', 25, (22, 60), 9.4, (51.8, 69.8, 39.8, 71.2, 36.4), 53.8, 96.9),
    ('divprune', 25, (18, 100), 9.4, (52.1, 69.5, 39.6, 70.2, 36.8), 53.6, 96.6),
    ('divprune_omni', 25, (22, 60), 9.4, (52.2, 69.0, 40.0, 70.9, 36.2), 53.7, 96.7),
    ('fastvid', 25, (18, 100), 9.1, (51.4, 68.3, 40.2, 68.0, 36.5), 52.9, 95.3),
    ('omnizip', 25, (25, 25), 8.5, (50.7, 66.0, 39.4, 70.1, 36.0), 52.5, 94.5, False),
    ('seats', 25, (22, 60), 9.0, (53.6, 71.2, 39.9, 71.8, 37.0), 54.7, 98.6),
    ('random', 15, (12, 50), 5.8, (49.8, 64.6, 36.8, 67.9, 33.9), 50.6, 91.2),
    ('fastv_omni', 15, (12, 50), 6.3, (44.6, 58.4, 35.0, 61.1, 34.4), 46.7, 84.2),
    ('visionzip', 15, (8, 100), 5.8, (49.8, 65.4, 39.1, 65.6, 35.9), 51.2, 92.3),
    ('visionzip_omni', 15, (12, 50), 5.8, (50.2, 66.0, 37.6, 67.7, 36.2), 51.5, 92.8),
    ('divprune', 15, (8, 100), 5.8, (51.0, 67.8, 38.0, 66.8, 35.2), 51.8, 93.3),
    ('divprune_omni', 15, (12, 50), 5.8, (50.7, 66.3, 37.8, 68.6, 35.4), 51.8, 93.3),
    ('seats', 15, (12, 50), 5.5, (51.9, 70.1, 39.9, 71.2, 36.0), 53.8, 96.9),
    ('random', 10, (7, 45), 4.0, (48.3, 61.2, 36.6, 65.3, 34.2), 49.1, 88.5),
    ('visionzip_omni', 10, (7, 45), 4.0, (48.9, 61.8, 38.3, 65.2, 35.0), 49.8, 89.7),
    ('divprune_omni', 10, (7, 45), 4.0, (49.3, 64.0, 38.7, 67.2, 35.3), 50.9, 91.7),
    ('seats', 10, (7, 45), 3.9, (51.5, 68.1, 40.1, 69.7, 35.7), 53.0, 95.5),
]

TABLES: dict[str, list[PublishedRow]] = {
    model: [PublishedRow(model, m, R, rr, tf, dict(zip(BENCHMARKS, accs)), mean, pct, *rest)
            for m, R, rr, tf, accs, mean, pct, *rest in rows]
    for model, rows in (("qwen2_5_omni_7b", _QWEN2_5_OMNI_7B), ("qwen3_omni_30b_a3b", _QWEN3_OMNI_30B_A3B))
}


def lookup(model: str, method: str, R: int | None, ratios: tuple[float, float] | None = None) -> PublishedRow | None:
    """The published row for our (model, method, R), or None.  ``ratios`` (video, audio as fractions)
    are needed only to match a row that was not budget-matched (it matches only its own ratios)."""
    method = ALIASES.get(method, method)
    for row in TABLES.get(model, ()):
        if row.method != method or row.R != R:
            continue
        if row.budget_matched:
            return row
        if ratios is not None and tuple(round(100 * r) for r in ratios) == row.ratios:
            return row
    return None
