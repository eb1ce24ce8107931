"""Comparison reports (``seats-exp-report``) and the W&B Report.

1. From a real tiny-model sweep (full tokens, Random, SEATS x R35/R10 on 2 synthetic samples) plus one
   run on 3 samples: every file written, PNGs of the expected size, one CSV row per run, the 3-sample
   run kept apart, the main job's call (--markdown/--plot) printing every method; report.html in
   headless Chromium (skipped without it on a laptop, required under CI=true).
2. From hand-made result files that match published rows: published numbers only where model and
   benchmark match, Mean and % of full, subsets and other models kept apart.
3. The W&B Report built offline, and serialised by ``save()`` up to the network call.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_tool

from seats_exp import published, report

BIN = Path(sys.executable).parent
REPORT = BIN / "seats-exp-report"
SEATS_EXP = BIN / "seats-exp"


def _env():
    from test_sweeps import cli_env

    return cli_env()


def _png_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        return im.size


# ------------------------------------------------------------------------------------------------
# Published numbers
# ------------------------------------------------------------------------------------------------

def test_published_tables_are_consistent():
    """Transcription check: each printed Mean is the mean of its five benchmarks and each % of full
    is Mean / full-token Mean (both rounded by the paper from unrounded values)."""
    for model, rows in published.TABLES.items():
        (full,) = [r for r in rows if r.method == "full_tokens"]
        assert full.R == 100 and full.pct_full == 100.0
        for r in rows:
            assert set(r.accuracy) == set(published.BENCHMARKS)
            assert abs(sum(r.accuracy.values()) / 5 - r.mean) <= 0.061, (model, r)
            assert abs(r.mean / full.mean * 100 - r.pct_full) <= 0.15, (model, r)
            assert r.method in published.METHOD_TITLES
            assert r.budget_matched or (r.method, r.R, r.ratios) == ("omnizip", 25, (25, 25))
    assert len(published.TABLES["qwen2_5_omni_7b"]) == 31 and len(published.TABLES["qwen3_omni_30b_a3b"]) == 32
    seats10 = published.lookup("qwen2_5_omni_7b", "seats", 10)
    assert (seats10.tflops, seats10.accuracy["worldsense"], seats10.mean, seats10.pct_full) == (12.2, 43.5, 46.9, 96.3)
    assert published.lookup("qwen3_omni_30b_a3b", "fastv_om", 35).method == "fastv_omni"  # alias
    assert published.lookup("qwen2_5_omni_7b", "fastv", 10) is None  # not reported at R <= 15
    assert published.lookup("qwen2_5_omni_7b", "omnizip", 25, (0.20, 0.55)) is None  # greyed row: other ratios
    assert published.lookup("qwen2_5_omni_7b", "omnizip", 25, (0.25, 0.25)).tflops == 23.9
    assert published.lookup("tiny_qwen2_5_omni", "seats", 10) is None


def test_axis_ranges_follow_the_data():
    assert report.accuracy_limits([0.0, 0.0, 0.0]) == (0.0, 10.0)  # not -0.04..0.04
    assert report.accuracy_limits([40.0, 60.0]) == (38.0, 62.0)
    assert report.accuracy_limits([99.0, 100.0]) == (90.0, 100.0)
    assert report.accuracy_limits([]) == (0.0, 100.0)
    assert report.flops_unit(111.0) == ("TFLOPs", 1.0)
    assert report.flops_unit(0.0012) == ("GFLOPs", 1e3)
    assert report.flops_unit(2e-5) == ("MFLOPs", 1e6)
    assert report.retention("full_tokens", "r10") == 100 and report.retention("seats", "r15") == 15
    assert report.retention("seats", "custom") is None


# ------------------------------------------------------------------------------------------------
# Hand-made result files
# ------------------------------------------------------------------------------------------------

def write_run(root: Path, name: str, *, model: str, method: str, schedule: str, ratios: tuple[float, float],
              accs: dict[str, float], tflops: float, limit=None, n: int = 100, seed: int = 0) -> Path:
    d = root / name
    d.mkdir(parents=True)
    layers = 4
    cost = {"prefill_tflops": tflops, "prefill_tflops_full": 111.0, "flops_ratio": 111.0 / tflops,
            "input_tokens": 11000.0, "llm_input_tokens": 11000.0 * tflops / 111.0,
            "tokens_per_layer": [1000.0] * layers, "video_tokens_per_layer": [800.0] * layers,
            "audio_tokens_per_layer": [150.0] * layers, "time_encoders_s": 0.2, "time_selection_s": 0.01,
            "time_llm_prefill_s": 0.3, "peak_memory_gb": 20.0}
    tasks = {t: {"accuracy": a, "n_samples": n, "n_errors": 0, "cost": dict(cost),
                 "breakdowns": {"Type": {"x": a}}} for t, a in accs.items()}
    result = {"run_name": name, "model": model, "method": method, "schedule": schedule,
              "benchmark": next(iter(accs)) if len(accs) == 1 else "omni5",
              "ratios": {"video": ratios[0], "audio": ratios[1]}, "method_settings": {"name": method},
              "accuracy": sum(accs.values()) / len(accs), "n_samples": n * len(accs), "n_errors": 0, "tasks": tasks,
              "cost": cost, "seed": seed, "scoring": "faithful", "scoring_seed": 0, "kv_scope": "all_executed",
              "wall_time_s": 1.0, "git_commit": "abc", "run_dir": str(d)}
    (d / "result.json").write_text(json.dumps(result))
    (d / "config.yaml").write_text(f"benchmark:\n  limit: {'null' if limit is None else limit}\n  sample_ids: null\n"
                                   "  scoring: faithful\n")
    return d


FIVE = {"worldsense": 46.0, "dailyomni": 63.0, "omnivideobench": 35.0, "videomme": 66.0, "lvomnibench": 33.0}


@pytest.fixture
def hand_made(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "full", model="qwen2_5_omni_7b", method="full_tokens", schedule="full", ratios=(1, 1),
              accs=FIVE, tflops=110.0)
    write_run(root, "seats10", model="qwen2_5_omni_7b", method="seats", schedule="r10", ratios=(0.06, 0.35),
              accs={k: v - 2 for k, v in FIVE.items()}, tflops=12.0)
    write_run(root, "fastv10", model="qwen2_5_omni_7b", method="fastv", schedule="r10", ratios=(0.06, 0.35),
              accs={k: v - 5 for k, v in FIVE.items()}, tflops=14.0)  # the paper has no FastV at R=10
    write_run(root, "synthetic", model="qwen2_5_omni_7b", method="seats", schedule="r10", ratios=(0.06, 0.35),
              accs={"synthetic": 50.0}, tflops=12.0, n=100)  # a benchmark the paper does not have
    write_run(root, "subset", model="qwen2_5_omni_7b", method="seats", schedule="r35", ratios=(0.3, 0.65),
              accs={"worldsense": 44.0}, tflops=36.0, limit=16, n=16)
    write_run(root, "tiny", model="tiny_qwen2_5_omni", method="seats", schedule="r10", ratios=(0.06, 0.35),
              accs={"worldsense": 20.0}, tflops=0.001)
    out = tmp_path / "report"
    groups, files = report.write_report(report.collect([str(root)]), out)
    return groups, files, out


def _sections(md: str) -> dict[int, str]:
    parts = re.split(r"^## Group (\d+): ", md, flags=re.M)
    return {int(parts[i]): parts[i + 1] for i in range(1, len(parts), 2)}


def test_published_numbers_beside_ours_where_model_and_benchmark_match(hand_made):
    groups, files, _ = hand_made
    assert [(g.model, g.identity["limit"]) for g in groups] == [("qwen2_5_omni_7b", None), ("qwen2_5_omni_7b", 16),
                                                                ("tiny_qwen2_5_omni", None)]
    md = files["report.md"].read_text()
    sec = _sections(md)
    main = sec[1]
    head = "| Method | R (Rv-Ra) | TFLOPs | WorldSense | Daily-Omni | OmniVideoBench | Video-MME | LVOmniBench | synthetic | Mean (% of full) |"
    assert head in main
    # Full tokens: ours, then the paper's row; the paper's Mean appears because all five benchmarks are here.
    assert "| Full tokens | 100 | 110.0 | 46.0 | 63.0 | 35.0 | 66.0 | 33.0 | – | – |" in main  # no synthetic run: no Mean
    assert "| *↳ paper* | *100* | *111.0* | *46.7* | *64.0* | *34.1* | *65.3* | *33.3* | – | *48.7 (100.0)* |" in main
    # SEATS at R=10 has all six columns (five + synthetic): its Mean; % of full needs the full row's Mean.
    seats = (44 + 61 + 33 + 64 + 31 + 50) / 6
    assert f"| SEATS | 10 (6-35) | 12.0 | 44.0 | 61.0 | 33.0 | 64.0 | 31.0 | 50.0 | {seats:.1f} |" in main
    assert "| *↳ paper* | *10 (6-35)* | *12.2* | *43.5* | *57.8* | *33.6* | *64.6* | *35.1* | – | *46.9 (96.3)* |" in main
    assert main.count("↳ paper* |") == 2  # FastV at R=10 has no published row
    assert "| FastV | 10 (6-35) |" in main
    # The subset group: the published WorldSense number only, no published Mean (one benchmark), a caveat.
    subset = sec[2]
    assert "| *↳ paper* | *35 (30-65)* | *36.7* | *46.2* | – |" in subset
    assert "not joined with group 1: limit None vs 16" in subset
    assert "subset of each benchmark" in subset
    # Another model: no published numbers at all.
    assert "↳ paper" not in sec[3] and "not joined with group 1: model qwen2_5_omni_7b vs tiny_qwen2_5_omni" in sec[3]
    html = files["report.html"].read_text()
    assert html.count("<tr class='paper'>") == 3 and "<td>48.7 (100.0)</td>" in html


def test_percent_of_full_when_both_rows_are_complete(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "full", model="qwen3_omni_30b_a3b", method="full_tokens", schedule="r10", ratios=(0.07, 0.45),
              accs=FIVE, tflops=47.0)
    write_run(root, "r10", model="qwen3_omni_30b_a3b", method="random", schedule="r10", ratios=(0.07, 0.45),
              accs={k: v / 2 for k, v in FIVE.items()}, tflops=4.0)
    write_run(root, "full_again", model="qwen3_omni_30b_a3b", method="full_tokens", schedule="r35",
              ratios=(0.32, 0.70), accs={k: v + 1 for k, v in FIVE.items()}, tflops=47.0)  # same cells again
    groups, files = report.write_report(report.collect([str(root)]), tmp_path / "out")
    md = files["report.md"].read_text()
    assert [len(g.rows) for g in groups] == [2]  # full tokens once: their R is 100 whatever the schedule
    assert ("Full tokens R=100: WorldSense, Daily-Omni, OmniVideoBench, Video-MME, LVOmniBench in two runs "
            "(full, full_again); the table shows the first") in md
    assert "| Random | 10 (7-45) | 4.00 | 23.0 | 31.5 | 17.5 | 33.0 | 16.5 | 24.3 (50.0) |" in md
    assert "| *↳ paper* | *10 (7-45)* | *4.0* | *48.3* | *61.2* | *36.6* | *65.3* | *34.2* | *49.1 (88.5)* |" in md
    assert "| Full tokens | 100 | 47.0 |" in md  # full tokens ignore the schedule: R = 100


def test_variants_keep_one_label_across_R(tmp_path):
    """Runs of one method that differ in a setting (here the seed) are separate rows, labelled by that
    setting at every R, so each variant is one line in the plots; nothing is averaged together."""
    for name, schedule, ratios, seed in (("a", "r35", (0.3, 0.65), 0), ("b", "r35", (0.3, 0.65), 1),
                                         ("c", "r10", (0.06, 0.35), 0)):
        write_run(tmp_path, name, model="m", method="random", schedule=schedule, ratios=ratios,
                  accs={"x": float(ord(name))}, tflops=1.0, seed=seed)
    write_run(tmp_path, "d", model="m", method="seats", schedule="r10", ratios=(0.06, 0.35), accs={"x": 1.0}, tflops=1.0)
    (g,) = report.group_runs(report.collect([str(tmp_path)]))
    assert [(r.label, r.r_label, r.cells["x"][0]) for r in g.rows] == [
        ("Random (seed=0)", "35 (30-65)", 97.0), ("Random (seed=1)", "35 (30-65)", 98.0),
        ("Random (seed=0)", "10 (6-35)", 99.0), ("SEATS", "10 (6-35)", 1.0)]
    assert {label: [r.R for r in rows] for label, rows in report._series(g).items()} == {
        "Random (seed=0)": [35, 10], "Random (seed=1)": [35], "SEATS": [10]}


def test_bad_input_is_one_line_exit_2(tmp_path):
    proc = subprocess.run([str(REPORT), str(tmp_path / "nowhere")], capture_output=True, text=True, env=_env())
    assert proc.returncode == 2 and proc.stderr.strip() == f"seats-exp-report: no such file or folder: {tmp_path / 'nowhere'}"
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "result.json").write_text("{not json")
    proc = subprocess.run([str(REPORT), str(tmp_path / "bad")], capture_output=True, text=True, env=_env())
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith(f"seats-exp-report: unreadable result file {tmp_path / 'bad' / 'result.json'}")
    (tmp_path / "empty").mkdir()
    proc = subprocess.run([str(REPORT), str(tmp_path / "empty")], capture_output=True, text=True, env=_env())
    assert proc.returncode == 2 and "no result.json found" in proc.stderr


# ------------------------------------------------------------------------------------------------
# A real tiny-model sweep
# ------------------------------------------------------------------------------------------------

SWEEP_METHODS = ("full_tokens", "random", "seats")
SWEEP_SCHEDULES = ("r35", "r10")
RUN_COUNT = len(SWEEP_METHODS) * len(SWEEP_SCHEDULES) + 1  # the sweep and the 2-sample run


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    """``seats-exp -m experiment=smoke method=full_tokens,random,seats schedule=r35,r10`` on 1 synthetic
    sample (full tokens twice: they ignore the schedule), and one more Random run on 2 samples
    elsewhere; then ``seats-exp-report`` on both folders."""
    root = tmp_path_factory.mktemp("report_sweep")
    sweep = root / "sweep"
    common = ["experiment=smoke", f"paths.root={root}", "eval.progress=false"]
    commands = [
        ["-m", *common, f"method={','.join(SWEEP_METHODS)}", f"schedule={','.join(SWEEP_SCHEDULES)}",
         "benchmark.limit=1", f"hydra.sweep.dir={sweep}"],
        [*common, "method=random", "schedule=r10", "benchmark.limit=2", f"hydra.run.dir={root}/other/random_2"],
    ]
    for args in commands:
        proc = subprocess.run([str(SEATS_EXP), *args], cwd=root, env=_env(), capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
    other = root / "other" / "random_2"
    out = root / "report"
    proc = subprocess.run([str(REPORT), str(sweep), str(other), "--out", str(out)], capture_output=True, text=True,
                          env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"root": root, "sweep": sweep, "other": other, "out": out, "stdout": proc.stdout}


# Pixel sizes: 100 dpi, 4.2 x 3.4 in per panel.  Group 1: one benchmark (one panel), two R columns of
# token panels, 5 rows of time bars; group 2: one run, one R column.
EXPECTED_PNGS = {
    "g1_tiny_qwen2_5_omni.accuracy_vs_R.png": (420, 340), "g1_tiny_qwen2_5_omni.accuracy_vs_tflops.png": (420, 340),
    "g1_tiny_qwen2_5_omni.prefill_time.png": (840, 340), "g1_tiny_qwen2_5_omni.tokens_per_layer.png": (840, 680),
    "g2_tiny_qwen2_5_omni.accuracy_vs_R.png": (420, 340), "g2_tiny_qwen2_5_omni.accuracy_vs_tflops.png": (420, 340),
    "g2_tiny_qwen2_5_omni.prefill_time.png": (840, 340), "g2_tiny_qwen2_5_omni.tokens_per_layer.png": (420, 680),
}


@pytest.mark.slow
def test_sweep_report_writes_every_file(tiny_sweep):
    out = tiny_sweep["out"]
    for name in ("runs.csv", "report.md", "report.html"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    pngs = {p.name: p for p in (out / "plots").glob("*.png")}
    assert set(pngs) == set(EXPECTED_PNGS)
    for name, size in EXPECTED_PNGS.items():
        assert pngs[name].stat().st_size > 5000, name  # drawn, not blank
        assert _png_size(pngs[name]) == size, name
    md = (out / "report.md").read_text()
    for name in EXPECTED_PNGS:
        assert f"(plots/{name})" in md
    assert tiny_sweep["stdout"].count("report: ") == 1


@pytest.mark.slow
def test_sweep_csv_one_row_per_run(tiny_sweep):
    with open(tiny_sweep["out"] / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    run_dirs = {str(p.parent) for p in tiny_sweep["sweep"].rglob("result.json")} | {str(tiny_sweep["other"])}
    assert len(rows) == len(run_dirs) == RUN_COUNT
    assert {r["run_dir"] for r in rows} == run_dirs
    for r in rows:
        result = json.loads((Path(r["run_dir"]) / "result.json").read_text())
        assert (r["model"], r["method"], r["schedule"], r["benchmark"]) == (
            result["model"], result["method"], result["schedule"], result["benchmark"])
        assert (r["seed"], r["scoring"], r["kv_scope"], r["git_commit"]) == (
            "0", "faithful", result["kv_scope"], result["git_commit"])
        assert r["R"] == ("100" if r["method"] == "full_tokens" else r["schedule"][1:])
        assert float(r["video_ratio"]) == result["ratios"]["video"]
        assert float(r["prefill_tflops"]) == pytest.approx(result["cost"]["prefill_tflops"], rel=1e-5)
        assert float(r["flops_ratio"]) == pytest.approx(result["cost"]["flops_ratio"], rel=1e-5)
        assert len(r["tokens_per_layer"].split(";")) == 8 and float(r["tokens_per_layer_mean"]) > 0
        assert float(r["time_llm_prefill_s"]) > 0 and r["synthetic/accuracy"] != ""
        assert any(k.startswith("synthetic/Type/") for k in r)  # per-category accuracy
        assert r["limit"] == ("2" if r["run_dir"] == str(tiny_sweep["other"]) else "1")
        assert r["group"] == ("2" if r["limit"] == "2" else "1")


@pytest.mark.slow
def test_sweep_unlike_runs_kept_apart(tiny_sweep):
    groups = report.group_runs(report.collect([str(tiny_sweep["sweep"]), str(tiny_sweep["other"])]))
    assert [len(g.runs) for g in groups] == [RUN_COUNT - 1, 1]
    assert {r.limit for r in groups[0].runs} == {1} and groups[1].runs[0].limit == 2
    assert groups[1].apart == ["not joined with group 1: limit 1 vs 2"]
    # Without config.yaml the sample counts still keep them apart.
    for g in groups:
        for r in g.runs:
            r.config = {}
    groups = report.group_runs([r for g in groups for r in g.runs])
    assert [len(g.runs) for g in groups] == [RUN_COUNT - 1, 1]
    assert groups[1].apart == ["not joined with group 1: synthetic has 1 vs 2 samples"]
    g1 = groups[0]
    assert [(r.method, r.R) for r in g1.rows] == [("full_tokens", 100), ("random", 35), ("seats", 35),
                                                  ("random", 10), ("seats", 10)]
    assert any("in two runs" in n for n in g1.notes)  # full tokens at r35 and r10: the same configuration


@pytest.mark.slow
def test_main_job_call_prints_every_method(tiny_sweep, tmp_path):
    md, png = tmp_path / "t.md", tmp_path / "t.png"
    proc = subprocess.run([str(REPORT), str(tiny_sweep["sweep"]), "--markdown", str(md), "--plot", str(png)],
                          capture_output=True, text=True, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == list(report.COLUMNS)
    printed = [(line.split()[0], line.split()[1]) for line in lines[2:]
               if line.split() and line.split()[0] in SWEEP_METHODS]
    assert sorted(printed) == sorted((m, s) for m in SWEEP_METHODS for s in SWEEP_SCHEDULES)
    assert (tiny_sweep["sweep"] / "report" / "report.html").is_file()  # default output folder
    assert md.read_text() == (tiny_sweep["sweep"] / "report" / "report.md").read_text()
    assert _png_size(png) == (420, 340)


@pytest.mark.slow
def test_report_html_renders_in_chromium(tiny_sweep, tmp_path):
    chromium = require_tool("chromium")
    page = (tiny_sweep["out"] / "report.html").read_text()
    assert "src='plots/" not in page and page.count("src='data:image/png;base64,") == len(EXPECTED_PNGS)
    # A copy with a probe that records, after load, how many images decoded (naturalWidth > 0).
    probe = ("<script>window.addEventListener('load',()=>{const im=[...document.images];document.body.setAttribute("
             "'data-loaded',im.filter(i=>i.complete&&i.naturalWidth>0).length+'/'+im.length);});</script>")
    copy = tmp_path / "probe.html"
    copy.write_text(page.replace("</body>", probe + "</body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
    dom = subprocess.run([chromium, *flags, "--virtual-time-budget=5000", "--dump-dom", copy.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert f'data-loaded="{len(EXPECTED_PNGS)}/{len(EXPECTED_PNGS)}"' in dom.stdout
    assert "Group 1: tiny_qwen2_5_omni" in dom.stdout and "Group 2: tiny_qwen2_5_omni" in dom.stdout
    shot = tmp_path / "report.png"
    proc = subprocess.run([chromium, *flags, f"--screenshot={shot}", "--window-size=1400,2000",
                           (tiny_sweep["out"] / "report.html").as_uri()], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and shot.stat().st_size > 20000, proc.stderr[-2000:]
    assert _png_size(shot) == (1400, 2000)


# ------------------------------------------------------------------------------------------------
# W&B Report
# ------------------------------------------------------------------------------------------------

def _report():
    from seats_exp.wandb_report import build_report

    return build_report("team", "seats-exp", "smoke", benchmarks=["synthetic"])


def test_wandb_report_blocks_and_panels():
    import wandb_workspaces.reports.v2 as wr

    rep = _report()
    assert (rep.entity, rep.project, rep.title) == ("team", "seats-exp", "seats-exp: smoke")
    kinds = [type(b).__name__ for b in rep.blocks]
    assert kinds == ["P", "H2", "PanelGrid", "H2", "PanelGrid", "H2", "PanelGrid", "H2", "PanelGrid"]
    scatter, vs_r, layers, table = (b for b in rep.blocks if isinstance(b, wr.PanelGrid))
    for grid in (scatter, vs_r, layers, table):
        (rs,) = grid.runsets
        assert (rs.entity, rs.project) == ("team", "seats-exp") and rs.filters == "Metric(\"Group\") == 'smoke'"
    assert [(p.x.name, p.y.name) for p in scatter.panels] == [("cost/prefill_tflops", "accuracy"),
                                                              ("cost/prefill_tflops", "synthetic/accuracy")]
    assert all(isinstance(p, wr.ScatterPlot) for p in scatter.panels)
    assert [(p.x, p.y, p.groupby) for p in vs_r.panels] == [
        ("R", ["accuracy"], wr.Config("method.name")), ("R", ["synthetic/accuracy"], wr.Config("method.name"))]
    assert [(p.x, p.y) for p in layers.panels] == [("layer", ["tokens/video"]), ("layer", ["tokens/audio"]),
                                                   ("layer", ["tokens/all"])]
    assert table.runsets[0].groupby == ["group"] and "summary:accuracy" in table.runsets[0].pinned_columns
    assert _report().blocks[2].runsets[0].filters == rs.filters
    from seats_exp.wandb_report import build_report

    assert build_report("team", "p").blocks[2].runsets[0].filters == ""  # no group: every run of the project


@pytest.mark.slow
def test_wandb_report_reads_what_the_runs_log(tiny_sweep):
    """Every metric the report plots is one that tracking logs for the sweep's real runs (summary or history)."""
    import wandb_workspaces.reports.v2 as wr

    from seats_exp.tracking import flat_summary, history_rows

    rep = _report()
    results = [json.loads(p.read_text()) for p in tiny_sweep["sweep"].rglob("result.json")]
    assert len(results) == RUN_COUNT - 1
    for result in results:
        summary = set(flat_summary(result))
        history = set().union(*map(set, history_rows(result)))
        for grid in (b for b in rep.blocks if isinstance(b, wr.PanelGrid)):
            for p in grid.panels:
                if isinstance(p, wr.ScatterPlot):
                    assert {p.x.name, p.y.name} <= summary
                else:
                    assert {p.x, *p.y} <= history, (p.title, history)


class _Saved(Exception):
    pass


def test_wandb_report_serialises_up_to_save(monkeypatch):
    """save() with the network replaced: the spec it would upload holds our blocks, panels and runsets."""
    from wandb_workspaces.reports.v2 import gql, interface

    sent = {}

    class FakeApi:
        default_entity = "team"

        def projects(self, entity):
            return []

        def create_project(self, project, entity):
            sent["created"] = (entity, project)

    def fake_graphql(api, query, variables):
        if query is gql.projectInternalId:
            return {"project": {"internalId": "UHJvamVjdDox"}}
        if query is gql.upsert_view:
            sent.update(variables)
            raise _Saved
        raise AssertionError(f"unexpected query {query}")

    monkeypatch.setattr(interface, "_get_api", lambda: FakeApi())
    monkeypatch.setattr(interface, "execute_graphql", fake_graphql)
    with pytest.raises(_Saved):
        _report().save()
    assert sent["created"] == ("team", "seats-exp")
    assert (sent["entityName"], sent["projectName"], sent["displayName"]) == ("team", "seats-exp", "seats-exp: smoke")
    spec = json.loads(sent["spec"])
    grids = [b for b in spec["blocks"] if b["type"] == "panel-grid"]
    assert len(grids) == 4
    panels = [p for g in grids for p in g["metadata"]["panelBankSectionConfig"]["panels"]]
    views = [p["viewType"] for p in panels]
    assert views.count("Scatter Plot") == 2 and views.count("Run History Line Plot") == 5
    text = json.dumps(spec)
    for key in ("cost/prefill_tflops", "synthetic/accuracy", "tokens/video", "tokens/audio", "method.name"):
        assert key in text, key
    runsets = [rs for g in grids for rs in g["metadata"]["runSets"]]
    assert len(runsets) == 4 and all(rs["project"]["entityName"] == "team" for rs in runsets)
    assert "smoke" in json.dumps([rs["filters"] for rs in runsets])


def test_wandb_without_login_says_so_in_one_line(tmp_path):
    env = {k: v for k, v in _env().items() if not k.startswith("WANDB_")}
    env["HOME"] = str(tmp_path)  # no ~/.netrc key
    proc = subprocess.run([str(REPORT), "--wandb", "team/seats-exp", "--group", "smoke"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "seats-exp-report: W&B Report not saved: not logged in to W&B (run `wandb login` or set WANDB_API_KEY)"]
    proc = subprocess.run([str(REPORT), "--wandb", "no-project"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "ENTITY/PROJECT" in proc.stderr
