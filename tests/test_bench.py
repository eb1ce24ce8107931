"""``seats-exp mode=bench`` and the overheads it measures (issue 15).

* the tiny bench through the CLI: table printed, JSON written, every registered method present
  (each built from its conf/method YAML), a bad setting is one line and exit code 2;
* host-sync calls per prefill (``HostSyncCounter``) stay under the bounds stated below;
* Stage II scoring (query row only, grouped-query heads without repeated keys) equals the
  straightforward full-projection computation of seats-reference 9.1;
* the causal-adjusted FLOPs figure, by hand;
* SEATS' depth-scaled drop layers for 8-, 10- and 12-layer models.

No timing is asserted: figures come from the bench itself (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import methods
from methods import MethodConfigError, ModelInfo, build_selector
from seats_exp import bench
from seats_exp.cost import layer_flops, prefill_flops, prefill_flops_causal
from seats_exp.engine import Engine
from seats_exp.models.adapters import ModelDims, adapter_for
from seats_exp.stats import EncoderStatsCollector

REPO = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).parent / "seats-exp")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _tiny_preset() -> dict:
    base = OmegaConf.load(REPO / "conf/bench/cpu_scaled.yaml")
    tiny = OmegaConf.load(REPO / "conf/bench/tiny.yaml")
    tiny.pop("defaults")
    return OmegaConf.to_container(OmegaConf.merge(base, tiny))


def _run_cli(*overrides: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([CLI, "mode=bench", *overrides], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


# =============================================================================================
# the CLI
# =============================================================================================


def test_bench_tiny_prints_the_table_writes_json_and_covers_every_method(tmp_path):
    run_dir = tmp_path / "bench"
    proc = _run_cli("bench=tiny", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((run_dir / "bench.json").read_text())
    registered = methods.available()
    assert result["methods"] == registered and result["timer"] == "thread CPU time"
    (length,) = result["lengths"]
    rows = {r["variant"]: r for r in length["rows"]}
    # a method that cannot reach R=10 (e.g. omnizip: video retention >= 0.25) is listed with its reason
    not_run = {x["variant"]: x["reason"] for x in result["not_run"]}
    for variant, reason in not_run.items():
        assert "reach" in reason and f"not run: {variant}: " in proc.stdout
    assert {"full_tokens", "random@r10", "seats@r10"} <= set(rows) and not set(rows) & set(not_run)
    expected = {"none"} | {m if m == "full_tokens" else f"{m}@r10" for m in registered} - set(not_run)
    assert set(rows) == expected
    inp = length["input"]
    assert inp["video"] > 0 and inp["audio"] > 0 and inp["tokens"] == inp["video"] + inp["audio"] + inp["text"]
    for key, row in rows.items():
        assert row["repeats"] == 1 and len(length["runs"][key]) == 1
        assert row["total"] > 0 and row["total_spread"][0] <= row["total"] <= row["total_spread"][1]
        assert key in proc.stdout  # one table line per variant
        if key == "none":
            continue
        assert row["layer_lengths"][0] == row["llm_input_length"] and len(row["layer_lengths"]) == 8
        assert row["flops"] > 0 and row["flops_causal"] < row["flops"]
        assert row["llm_prefill"] > 0 and "time_ratio_llm" in row and "selection_overhead" in row
    full, seats = rows["full_tokens"], rows["seats@r10"]
    assert full["flops_ratio"] == 1.0 and full["flops_ratio_causal"] == 1.0 and "engine_overhead_vs_none" in full
    assert full["layer_lengths"] == [inp["tokens"]] * 8 and "encoder_stats" not in full
    # SEATS: the statistics are timed apart from the encoders; Stage I, three Stage-II drops, Stage III
    assert seats["encoder_stats"] > 0 and seats["selection_before_llm"] > 0 and seats["selection_in_llm"] > 0
    assert [e[2] for e in seats["events"]] == ["stage1", "stage2.1", "stage2.2", "stage2.3", "stage3"]
    assert seats["settings"]["drop_layers"] == [3, 4, 5] and seats["flops_ratio"] > 1
    assert "FLOPs_x" in proc.stdout and "bench JSON:" in proc.stdout and "host-sync calls per prefill" in proc.stdout
    syncs = result["host_syncs"]
    assert set(syncs) == expected and syncs["none"]["total"] == 0
    assert syncs["full_tokens"]["total"] <= FULL_TOKENS_MAX_SYNCS
    assert syncs["seats@r10"]["outside_cuts"] <= SEATS_MAX_OUTSIDE_CUTS


def test_bench_bad_setting_is_one_line_and_exit_2(tmp_path):
    proc = _run_cli("bench=tiny", "bench.tokens=[50]", f"hydra.run.dir={tmp_path / 'b'}", cwd=tmp_path)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("seats-exp:")]
    assert len(lines) == 1 and "bench.tokens" in lines[0]
    proc = _run_cli("bench=tiny", "bench.methods=[nope]", f"hydra.run.dir={tmp_path / 'c'}", cwd=tmp_path)
    assert proc.returncode == 2 and "bench.methods" in proc.stderr and "not registered" in proc.stderr
    proc = _run_cli(f"hydra.run.dir={tmp_path / 'd'}", cwd=tmp_path)  # no preset chosen
    assert proc.returncode == 2 and "bench=cpu_scaled" in proc.stderr


def test_every_method_builds_from_its_yaml_for_a_non_reference_depth():
    """The bench model is no reference variant: YAML 'auto' defaults must still resolve (SEATS by depth)."""
    b = _tiny_preset()
    for depth in (8, 10, 12):
        info = ModelInfo(b["variant"], "qwen2_5_omni", depth, 25.0)
        for name in methods.available():
            assert bench.build_method(name, "r35", b, info).name == name


# =============================================================================================
# host syncs
# =============================================================================================

# Bounds per prefill of the tiny bench input (repository code only; transformers' own reads, e.g.
# the M-RoPE index loop, are not ours and not counted).  full_tokens: one layout read at the LLM
# start.  SEATS: outside the cuts the layout read and the ViT-statistics grid read (the first
# prefill of a grid shape also computes the ViT window order); at its five cuts one read per cut
# in the engine, one for Stage I's counts, two per Stage-II drop (layout, budget fix-up), one for
# Stage III's text check.
FULL_TOKENS_MAX_SYNCS = 1
SEATS_MAX_OUTSIDE_CUTS = 2
SEATS_MAX_AT_CUTS = 13


@pytest.fixture(scope="module")
def bench_model():
    b = _tiny_preset()
    thinker = bench.build_thinker(b, torch.device("cpu"), torch.float32)
    adapter = adapter_for(thinker)
    inp = bench.build_input(thinker, b, 600, "cpu", torch.float32)
    return b, thinker, adapter, inp


def _count_syncs(bench_model, method: str, prefills: int = 2) -> list[bench.HostSyncCounter]:
    b, thinker, adapter, inp = bench_model
    info = ModelInfo(b["variant"], "qwen2_5_omni", adapter.num_layers, 25.0)
    selector = bench.build_method(method, "r10", b, info)
    stats = EncoderStatsCollector(adapter, selector.needs, selector.stats_request) if selector.needs else None
    counters = []
    with Engine(thinker, adapter, selector, stats=stats) as engine, torch.inference_mode():
        for _ in range(prefills):
            thinker.model.rope_deltas = None
            with bench.HostSyncCounter() as counter:
                thinker(**inp.kwargs)
            counters.append(counter)
            (rec,) = engine.pop_records()
            assert len(rec.kept_counts) == adapter.num_layers  # read after the prefill, outside the counter
    return counters


def test_host_syncs_per_prefill_stay_under_the_bounds(bench_model):
    for counter in _count_syncs(bench_model, "full_tokens"):
        assert counter.total() <= FULL_TOKENS_MAX_SYNCS, counter.counts
        assert not any(site.endswith((":pre", ":_token_times")) for site in counter.counts), counter.counts
    first, steady = _count_syncs(bench_model, "seats")
    for counter in (first, steady):
        assert counter.at_cuts <= SEATS_MAX_AT_CUTS, counter.counts
        assert not any(site.endswith(":pre") for site in counter.counts), counter.counts  # layer pre-hooks
    assert steady.outside_cuts <= SEATS_MAX_OUTSIDE_CUTS, steady.counts


def test_the_counter_sees_the_kinds_of_host_sync():
    x = torch.arange(6)
    mask = x > 2
    with bench.HostSyncCounter() as counter:
        bool(mask.any()), int(x.sum()), float(x.sum()), x.tolist(), x[1].item()
        x[mask], torch.nonzero(mask), x.repeat_interleave(torch.tensor([1] * 6))
        y = x.clone()
        y[mask] = 0
        y[torch.tensor([0, 1])] = 1  # long-index scatter: no sync
        torch.nonzero_static(mask, size=3)  # sized: no sync
    assert counter.total(include_library=True) == 9, counter.counts  # called from a test: "library"


# =============================================================================================
# Stage II scoring
# =============================================================================================


def _reference_last_text_attention(adapter, layer_index, hidden, cos_sin, query):
    """seats-reference 9.1 step by step: q and k for every position, keys repeated per q head."""
    layer = adapter.layers[layer_index]
    attn = layer.self_attn
    x = layer.input_layernorm(hidden.unsqueeze(0))
    shape = (1, x.shape[1], -1, attn.head_dim)
    q, k = attn.q_proj(x).view(shape), attn.k_proj(x).view(shape)
    if hasattr(attn, "q_norm"):  # Qwen3
        q, k = attn.q_norm(q), attn.k_norm(k)
    q, k = q.transpose(1, 2), k.transpose(1, 2)
    q, k = adapter._rotary()(q, k, *cos_sin)
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    logits = (q[:, :, query : query + 1] @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    return torch.softmax(logits.float(), dim=-1).to(hidden.dtype).mean(dim=1)[0, 0]


@pytest.mark.parametrize("family", ["qwen2_5_omni", "qwen3_omni"])
def test_scoring_the_query_row_only_equals_the_full_projection(tiny_qwen2_5, tiny_qwen3, family):
    from conftest import load_tiny

    loaded = load_tiny(tiny_qwen2_5 if family == "qwen2_5_omni" else tiny_qwen3, family)
    adapter = loaded.adapter
    torch.manual_seed(0)
    seq, hidden_size = 37, adapter.config.text_config.hidden_size
    hidden = torch.randn(seq, hidden_size)
    head_dim = adapter.layers[0].self_attn.head_dim
    cos, sin = torch.randn(1, seq, head_dim), torch.randn(1, seq, head_dim)
    for layer_index, query in ((0, seq - 1), (3, 20)):
        expected = _reference_last_text_attention(adapter, layer_index, hidden, (cos, sin), query)
        for position in (query, torch.tensor(query)):
            got = adapter.last_text_attention(layer_index, hidden, (cos, sin), position)
            assert got.shape == (seq,)
            torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)


# =============================================================================================
# FLOPs
# =============================================================================================


def test_causal_adjusted_flops_by_hand():
    # D=8, H=2, Hkv=1, d=4, I=16, V=10.  S=5: q 320, k 160, v 160, o 320; causal pairs 5*6/2 = 15:
    # QK^T 15*8 = 120, AV 120 (full S^2: 200 each); SwiGLU 1920.
    dims = ModelDims(num_layers=2, hidden=8, heads=2, kv_heads=1, head_dim=4, intermediate=16, vocab=10)
    assert layer_flops(dims, 5, causal=True) == 320 + 160 + 160 + 320 + 120 + 120 + 1920 == 3120
    assert layer_flops(dims, 5) == 3280  # the meter's convention is unchanged
    # S=3: pairs 6 -> 48 each; lm_head on the final length 3*8*10
    assert layer_flops(dims, 3, causal=True) == 192 + 96 + 96 + 192 + 48 + 48 + 1152
    assert prefill_flops_causal(dims, [5, 3]) == 3120 + 1824 + 240
    assert prefill_flops_causal(dims, [5, 3], final_length=1) == 3120 + 1824 + 80
    assert prefill_flops(dims, [5, 3]) == 5392
    with pytest.raises(ValueError, match="expected 2 layer lengths"):
        prefill_flops_causal(dims, [5])


# =============================================================================================
# SEATS depth scaling
# =============================================================================================


@pytest.mark.parametrize("depth, drops, late", [
    (8, [3, 4, 5], 7),  # raw round(): [5, 5, 6] with late 7 (repeat, and 6 = late - 1)
    (10, [5, 6, 7], 9),  # raw: [6, 6, 7] with late 9
    (12, [6, 7, 8], 10),  # raw: [7, 8, 9] with late 10 (9 = late - 1)
    (36, [21, 23, 26], 31),  # Qwen2.5-Omni-3B: nothing to fix
])
def test_depth_scaled_drop_layers_increase_strictly_below_the_late_layer(depth, drops, late):
    for family, rate in (("qwen2_5_omni", 25.0), ("qwen3_omni", 13.0)):
        selector = build_selector("seats", {}, 0.06, 0.35, ModelInfo("some_variant", family, depth, rate))
        got = list(selector.settings.drop_layers)
        assert got == sorted(set(got)) and got[-1] < selector.settings.late_block_layer - 1
        if family == "qwen2_5_omni":
            assert got == drops and selector.settings.late_block_layer == late


def test_depth_scaling_refuses_a_model_too_shallow_for_the_drops():
    with pytest.raises(MethodConfigError, match="do not fit below the scaled late layer 3 of the 4-layer model"):
        build_selector("seats", {}, 0.06, 0.35, ModelInfo("shallow", "qwen2_5_omni", 4, 25.0))
    # explicit layers still work on such a model
    selector = build_selector("seats", {"drop_layers": [1], "late_block_layer": 4}, 0.06, 0.35,
                              ModelInfo("shallow", "qwen2_5_omni", 4, 25.0))
    assert selector.settings.drop_layers == (1,)

