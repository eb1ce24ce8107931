"""Independent reference of OmniZip's pre-LLM selection, compared with ``methods/omnizip.py``.

The reference below (``ref_omnizip``) was written from baselines-reference.md sections 6.1-6.3 and
6.5 (and the section 1.1 token layout) only, before the project's selector was read.  The project's
selector is driven through its public hook (``build_selector("omnizip", ...)`` then
``before_llm(ctx)``) on hand-built contexts in the interleaved audio-in-video layout of
Qwen2.5-Omni (per 2-s window: that window's video grid tokens, then its audio tokens), float64
throughout, so keep-masks must agree exactly and merged anchor embeddings to rounding error.

After the first comparison two spec ambiguities in the reference were resolved the way upstream
(omnizip_core.py) and the project do them -- eps placement of the L2 normalisation, float32 mean for
S_a(i) -- see the comments at ``_normalize`` and ``sa``.  One project deviation is kept as a failing
test: ``test_BUG_anchor_merge_softmax_float32_under_float64_embeddings``.
"""

from __future__ import annotations

import random

import pytest
import torch
from omegaconf import OmegaConf

import methods
from methods import MethodConfigError, ModelInfo
from seats_exp.selection import AUDIO, TEXT, VIDEO, EncoderStats, SelectionContext

REPO_YAML = "conf/method/omnizip.yaml"
MODEL = ModelInfo("qwen2_5_omni_7b", "qwen2_5_omni", 28, 25.0)
EPS = 1e-6
LO, HI = 0.35, 0.75  # hard-coded clamp of the per-window video ratio (section 6.2)


# ---------------------------------------------------------------------------------------------
# Reference (spec section 6.3, written from the text only)
# ---------------------------------------------------------------------------------------------

def _normalize(x: torch.Tensor) -> torch.Tensor:
    # "L2-normalised with eps = 1e-6" (section 6.1).  The spec does not say where eps goes; my first
    # version clamped the norm (x / max(|x|, eps)), which moved cosines by ~1e-8 relative.  Resolved
    # after the comparison from upstream omnizip_core.py (the spec's source): x / (|x| + eps).
    return x / (x.norm(dim=-1, keepdim=True) + EPS)


def _runs(positions: list[int]) -> list[list[int]]:
    """Maximal runs of consecutive sequence positions (section 6.3 D)."""
    out: list[list[int]] = []
    for p in positions:
        if out and p == out[-1][-1] + 1:
            out[-1].append(p)
        else:
            out.append([p])
    return out


def _clamp(x: float) -> float:
    return min(max(x, LO), HI)


def ref_window_ratios(sa: list[float], sizes: list[int], n_unguided: int, rho_v: float) -> list[float]:
    """Section 6.3 E: base ratio from audio density, budget normalisation over guided windows."""
    G = len(sa)
    ratios = [_clamp(0.75 - 0.40 * s) for s in sa]
    n_guided = sum(sizes)
    n_v = n_guided + n_unguided
    if G > 2 and n_guided > 0:
        target = rho_v * n_v - rho_v * n_unguided
        base = sum(r * n for r, n in zip(ratios, sizes))
        if abs(base - target) > 1e-3:
            i_min = min(range(G), key=lambda i: (ratios[i], i))  # first index on ties
            i_max = min(range(G), key=lambda i: (-ratios[i], i))
            # quirk: when i_min == i_max its discard is counted twice
            fixed = ratios[i_min] * sizes[i_min] + ratios[i_max] * sizes[i_max]
            others = [i for i in range(G) if i not in (i_min, i_max)]
            other_base = sum(ratios[i] * sizes[i] for i in others)
            if others and other_base > 0:
                scale = (target - fixed) / other_base
                for i in others:
                    ratios[i] = _clamp(ratios[i] * scale)
                total = sum(r * n for r, n in zip(ratios, sizes))
                if abs(total - target) > 1e-3:
                    add = (target - total) / sum(sizes[i] for i in others)
                    for i in others:
                        ratios[i] = _clamp(ratios[i] + add)
    return ratios


def _dpc_knn_keep(x: torch.Tensor, n: int, k: int) -> list[int]:
    """Section 6.3 F, even frames: DPC-KNN score rho*delta, keep the top n (local indices)."""
    P = x.shape[0]
    dist = 1.0 - x @ x.T
    dist.fill_diagonal_(float("inf"))
    kk = min(k, P - 1)
    knn = torch.sort(dist, dim=1).values[:, :kk].mean(dim=1)
    dens = torch.exp(-knn)
    score = torch.empty(P, dtype=x.dtype)
    for j in range(P):
        higher = dens > dens[j]
        if bool(higher.any()):
            delta = dist[j, higher].min()
        else:
            off = torch.ones(P, dtype=torch.bool)
            off[j] = False
            delta = dist[j, off].max()
        score[j] = dens[j] * delta
    return torch.topk(score, n).indices.tolist()


def ref_omnizip(modality: torch.Tensor, embeds: torch.Tensor, audio_scores: torch.Tensor | None, P: int,
                rho_v: float, rho_a: float, c: float, g: int, k: int = 5,
                missing: str = "full_tokens"):
    """Returns (keep [S] bool, embeds after anchor merging [S, D])."""
    S = modality.shape[0]
    keep = torch.ones(S, dtype=torch.bool)
    out = embeds.clone()
    vid = torch.nonzero(modality == VIDEO).flatten().tolist()
    aud = torch.nonzero(modality == AUDIO).flatten().tolist()
    if (not vid or not aud) and missing == "full_tokens":
        return keep, out
    xv = _normalize(embeds[vid]) if vid else None
    xa = _normalize(embeds[aud]) if aud else None
    pos2v = {p: i for i, p in enumerate(vid)}

    # A + B + C: audio
    Na = len(aud)
    audio_kept = torch.zeros(Na, dtype=torch.bool)
    if Na:
        n_dom = min(max(round((1 - rho_a) * Na), 0), Na)
        s = audio_scores.tolist()
        order = sorted(range(Na), key=lambda i: (-s[i], i))
        dom = set(order[:n_dom])
        remaining = [i for i in range(Na) if i not in dom]
        R = len(remaining)
        anchors: list[int] = []
        if g > 0:
            n_anc = min(round(c * Na), R)
            if n_anc > 0:
                step = max(1, R // n_anc)
                anchors = [remaining[j] for j in range(0, R, step)][:n_anc]
        aset = set(anchors)
        pool = [i for i in remaining if i not in aset]
        if g > 0 and anchors and pool:
            xp, xan = xa[pool], xa[anchors]
            assign = (xp @ xan.T).argmax(dim=1).tolist()
            cross = (xp @ xv.T).max(dim=1).values if vid else (xp @ xan.T).max(dim=1).values
            for ai, a in enumerate(anchors):
                members = [j for j in range(len(pool)) if assign[j] == ai]
                if not members:
                    continue
                sc = cross[members]
                m = min(g, len(members))
                pick = torch.topk(sc, m).indices
                w = torch.softmax(sc[pick], dim=0)
                xs = embeds[[aud[pool[members[int(t)]]] for t in pick]]
                out[aud[a]] = (embeds[aud[a]] + (w[:, None] * xs).sum(0)) / (1 + w.sum())
        for i in dom | aset:
            audio_kept[i] = True
        keep[aud] = audio_kept

    # D + E + F: video
    if vid:
        vruns, aruns = _runs(vid), _runs(aud)
        G = min(len(vruns), len(aruns))
        kept_of = {p: bool(audio_kept[i]) for i, p in enumerate(aud)}
        # S_a(i), "fraction of audio run i kept" (6.3 E).  Precision unspecified by the spec; my first
        # version used the exact float64 fraction.  Upstream (omnizip_core.py) takes a float32 mean,
        # which changes int(P (1 - rho)) at knife edges (test_audio_density_float32_knife_edge).
        sa = [float(torch.tensor([kept_of[p] for p in aruns[i]], dtype=torch.float32).mean()) for i in range(G)]
        sizes = [len(vruns[i]) for i in range(G)]
        n_ung = sum(len(r) for r in vruns[G:])
        ratios = ref_window_ratios(sa, sizes, n_ung, rho_v) + [rho_v] * (len(vruns) - G)
        for run, r in zip(vruns, ratios):
            F = len(run) // P
            if F == 0:
                continue
            for p in run[F * P:]:
                keep[p] = False
            n = int(P * (1 - r))
            if n >= P:
                continue
            for t in range(F):
                idx = [pos2v[p] for p in run[t * P:(t + 1) * P]]
                x = xv[idx]
                if t % 2 == 0:
                    loc = _dpc_knn_keep(x, n, k)
                else:
                    prev = xv[[pos2v[p] for p in run[(t - 1) * P:t * P]]]
                    sim = (x * prev).sum(dim=1)
                    loc = torch.topk(-sim, n).indices.tolist()
                fk = torch.zeros(P, dtype=torch.bool)
                fk[loc] = True
                for q, p in enumerate(run[t * P:(t + 1) * P]):
                    keep[p] = bool(fk[q])
    return keep, out


def ref_mapping(r_v: float, r_a: float, c: float, g: int) -> tuple[float, float]:
    """Section 6.5: rho_v = 1 - r_v, rho_a = 1 - r_a + c (anchors only exist for g > 0)."""
    return 1 - r_v, (1 - r_a + c) if g > 0 else (1 - r_a)


# ---------------------------------------------------------------------------------------------
# Inputs: section 1.1 layout
# ---------------------------------------------------------------------------------------------

def make_layout(n_grids: int, n_audio: int, P: int, grids_per_window: int = 2, audio_per_window: int = 50,
                split_tail: bool = False, prefix: int = 5, suffix: int = 4):
    """Modality codes of [text prefix, 2 bos, per window: video grids then audio, 2 eos, text suffix].

    ``split_tail``: a text token between consecutive video-only windows (synthetic: several
    unguided video runs)."""
    mod: list[int] = [TEXT] * (prefix + 2)
    n_win = max(-(-n_grids // grids_per_window), -(-n_audio // audio_per_window))
    for j in range(n_win):
        gv = max(0, min(n_grids, (j + 1) * grids_per_window) - j * grids_per_window)
        na = max(0, min(n_audio, (j + 1) * audio_per_window) - j * audio_per_window)
        if split_tail and na == 0 and gv and mod[-1] == VIDEO:
            mod.append(TEXT)
        mod += [VIDEO] * (gv * P) + [AUDIO] * na
    mod += [TEXT] * (2 + suffix)
    return torch.tensor(mod, dtype=torch.long)


def make_ctx(modality: torch.Tensor, P: int, embeds: torch.Tensor, audio_scores: torch.Tensor | None,
             seconds_per_grid: float, grid_hw: tuple[int, int]):
    S = modality.shape[0]
    video = modality == VIDEO
    audio = modality == AUDIO
    nv, na = int(video.sum()), int(audio.sum())
    t = torch.full((S,), float("nan"), dtype=torch.float32)
    t[video] = (torch.arange(nv) // max(P, 1)).float() * seconds_per_grid
    t[audio] = torch.arange(na).float() / 25.0
    pos = torch.zeros(3, S, dtype=torch.long)
    cur = 0
    vi = ai = 0
    for s in range(S):  # plausible M-RoPE ids (selectors must not depend on them)
        m = int(modality[s])
        if m == TEXT:
            pos[:, s] = cur
            cur += 1
        elif m == VIDEO:
            grid, q = divmod(vi, P)
            pos[0, s] = cur + int(grid * seconds_per_grid * 25)
            pos[1, s] = cur + q // grid_hw[1]
            pos[2, s] = cur + q % grid_hw[1]
            vi += 1
        else:
            pos[:, s] = cur + ai
            ai += 1
    n_grids = nv // P if P else 0
    grid_thw = torch.tensor([[n_grids, 2 * grid_hw[0], 2 * grid_hw[1]]]) if nv else None
    stats = EncoderStats(audio_attn=audio_scores if na else None)
    return SelectionContext(
        modality=modality, original_index=torch.arange(S), position_ids=pos, token_time=t,
        video_grid_thw=grid_thw, video_tokens_per_grid=P if nv else 0, seconds_per_grid=seconds_per_grid,
        audio_tokens_per_second=25.0, num_layers=28, family="qwen2_5_omni", stats=stats, embeds=embeds,
        generator=torch.Generator().manual_seed(0))


def yaml_params(**over):
    p = OmegaConf.to_container(OmegaConf.load(REPO_YAML))
    p.pop("name")
    p.update(over)
    return p


def run_project(params: dict, r_v: float, r_a: float, ctx: SelectionContext):
    sel = methods.build_selector("omnizip", params, r_v, r_a, MODEL)
    assert "audio_attn" in sel.needs
    res = sel.before_llm(ctx)
    S = ctx.length
    if res is None:
        return torch.ones(S, dtype=torch.bool), ctx.embeds.clone()
    keep = res.keep.clone().bool()
    out = ctx.embeds.clone()
    if res.replace_index is not None:
        ri = res.replace_index.long()
        assert bool(keep[ri].all()), "replacement written at a dropped position"
        out[ri] = res.replace_embeds.to(out.dtype)
    return keep, out


GRID_HW = {4: (2, 2), 6: (2, 3), 9: (3, 3), 16: (4, 4), 12: (3, 4)}


def random_case(seed: int):
    rng = random.Random(seed)
    P = rng.choice([4, 6, 9, 12, 16])
    gpw = rng.choice([2, 2, 2, 1, 4])  # grids per 2-s window: fps 2 (spg 1), spg 2, spg 0.5
    spg = 2.0 / gpw
    n_win = rng.randint(2, 12)
    kind = rng.choice(["equal", "equal", "video_tail", "audio_tail", "partial_audio", "split_tail"])
    n_grids = n_win * gpw
    n_audio = n_win * 50
    if kind in ("video_tail", "split_tail"):
        n_audio = max(1, n_audio - 50 * rng.randint(1, min(3, n_win - 1)) - rng.randint(0, 30))
    elif kind == "audio_tail":
        n_grids = max(1, n_grids - gpw * rng.randint(1, min(3, n_win - 1)))
    elif kind == "partial_audio":
        n_audio -= rng.randint(1, 49)
    mod = make_layout(n_grids, n_audio, P, gpw, split_tail=(kind == "split_tail"))
    gen = torch.Generator().manual_seed(seed)
    D = 24
    emb = torch.randn(mod.shape[0], D, generator=gen, dtype=torch.float64) * 3.0
    na = int((mod == AUDIO).sum())
    scores = torch.rand(na, generator=gen, dtype=torch.float64)
    ctx = make_ctx(mod, P, emb, scores, spg, GRID_HW[P])
    # schedule: auto knobs from (r_v, r_a) or knobs set directly
    g = rng.choice([3, 3, 0, 1, 2])
    c = rng.choice([0.05, 0.05, 0.03, 0.1])
    if rng.random() < 0.6:
        r_v = rng.choice([0.25, 0.3, 0.35, 0.4, 0.5, 0.65, round(rng.uniform(0.25, 0.65), 3)])
        r_a = rng.choice([0.35, 0.45, 0.55, 0.65, 0.75, 0.9, 1.0])
        params = yaml_params(g=g, contextual_ratio=c)
        rho_v, rho_a = ref_mapping(r_v, r_a, c, g)
    else:
        rho_v = rng.choice([0.35, 0.5, 0.6, 0.7, 0.75, round(rng.uniform(0.35, 0.75), 3)])
        rho_a = rng.choice([0.1, 0.3, 0.4, 0.6, 0.8, round(rng.uniform(0.0, 0.95), 3)])
        params = yaml_params(g=g, contextual_ratio=c, rho_video=rho_v, rho_audio=rho_a)
        r_v, r_a = 0.5, 0.5  # unused by the selector when both knobs are numbers
    desc = dict(seed=seed, P=P, gpw=gpw, n_win=n_win, kind=kind, n_grids=n_grids, n_audio=n_audio, g=g, c=c,
                rho_v=rho_v, rho_a=rho_a, r_v=r_v, r_a=r_a)
    return ctx, params, r_v, r_a, dict(P=P, rho_v=rho_v, rho_a=rho_a, c=c, g=g), desc


# Merged anchors agree to ~3e-7 only: the project computes the softmax weights in float32 even for
# float64 embeddings (see test_BUG_anchor_merge_softmax_float32_under_float64_embeddings, which
# checks 1e-12); with the weights in float64 the difference is ~2e-15.
EMBED_ATOL = 1e-6


def compare(ctx, params, r_v, r_a, ref_kw, desc, atol=EMBED_ATOL):
    keep_p, out_p = run_project(params, r_v, r_a, ctx)
    audio_scores = ctx.stats.audio_attn
    keep_r, out_r = ref_omnizip(ctx.modality, ctx.embeds, audio_scores, **ref_kw)
    problems = []
    for name, m in (("video", ctx.modality == VIDEO), ("audio", ctx.modality == AUDIO), ("text", ctx.modality == TEXT)):
        diff = torch.nonzero((keep_p != keep_r) & m).flatten().tolist()
        if diff:
            problems.append(f"{name} keep differs at {len(diff)} positions (first {diff[:6]}; "
                            f"project keeps {int((keep_p & m).sum())}, reference {int((keep_r & m).sum())})")
    both = keep_p & keep_r
    err = float((out_p[both] - out_r[both]).abs().max()) if bool(both.any()) else 0.0
    if err > atol:
        problems.append(f"kept embeddings differ by {err:.3g}")
    return problems, err


N_RANDOM = 250


def test_random_cases_match_reference():
    torch.set_num_threads(1)
    failures = []
    max_err = 0.0
    for seed in range(N_RANDOM):
        ctx, params, r_v, r_a, kw, desc = random_case(seed)
        problems, err = compare(ctx, params, r_v, r_a, kw, desc)
        max_err = max(max_err, err)
        if problems:
            failures.append(f"{desc}: {'; '.join(problems)}")
    assert not failures, f"{len(failures)}/{N_RANDOM} cases differ:\n" + "\n".join(failures[:15])


# ---------------------------------------------------------------------------------------------
# Targeted cases
# ---------------------------------------------------------------------------------------------

def _controlled_scores(mod: torch.Tensor, per_window_high: list[int], seed: int) -> torch.Tensor:
    """Audio scores whose global top sum(per_window_high) falls per_window_high[i] in audio run i."""
    gen = torch.Generator().manual_seed(seed)
    aruns = _runs(torch.nonzero(mod == AUDIO).flatten().tolist())
    parts = []
    for run, h in zip(aruns, per_window_high):
        s = torch.rand(len(run), generator=gen, dtype=torch.float64)
        perm = torch.randperm(len(run), generator=gen)
        s[perm[:h]] += 2.0
        parts.append(s)
    return torch.cat(parts)


@pytest.mark.parametrize("highs,rho_v", [
    ([25, 25, 25, 25, 25], 0.6),  # all base ratios equal: min and max are window 0 (quirk, counted twice)
    ([25, 25, 25, 25, 25], 0.45),
    ([10, 40, 10, 40, 25, 10], 0.6),  # ties at the min and at the max: first index fixed
    ([40, 10, 40, 10, 25, 40, 10], 0.5),
    ([50, 50, 50, 0, 0, 0], 0.7),  # base ratios hit both clamps
])
def test_window_ratio_ties(highs, rho_v):
    P = 9
    n_win = len(highs)
    mod = make_layout(2 * n_win, 50 * n_win, P)
    gen = torch.Generator().manual_seed(7)
    emb = torch.randn(mod.shape[0], 16, generator=gen, dtype=torch.float64)
    scores = _controlled_scores(mod, highs, 11)
    ctx = make_ctx(mod, P, emb, scores, 1.0, GRID_HW[P])
    rho_a = 1 - sum(highs) / (50 * n_win)
    params = yaml_params(g=0, rho_video=rho_v, rho_audio=rho_a)
    problems, _ = compare(ctx, params, 0.5, 0.5, dict(P=P, rho_v=rho_v, rho_a=rho_a, c=0.05, g=0),
                          dict(highs=highs))
    assert not problems, problems


def test_window_ratio_reference_quirk_values():
    """The reference's own section-6.3 E arithmetic on hand-worked numbers (guards the reference)."""
    # equal base ratios 0.55 over 3 windows of 18 tokens, rho_v = 0.6: target 32.4, base 29.7;
    # window 0 is both min and max -> fixed = 2*0.55*18 = 19.8; others 1,2: scale = 12.6/19.8
    r = ref_window_ratios([0.5, 0.5, 0.5], [18, 18, 18], 0, 0.6)
    assert r[0] == pytest.approx(0.55)
    # step 2 gives 0.35 (= 0.55 * 12.6 / 19.8) for both; total 22.5 misses 9.9 -> + 9.9 / 36 = 0.275
    assert r[1] == pytest.approx(0.625) and r[2] == pytest.approx(0.625)
    # two guided windows: no normalisation
    assert ref_window_ratios([1.0, 0.0], [18, 18], 0, 0.6) == [pytest.approx(0.35), pytest.approx(0.75)]


def test_video_only_and_audio_only_samples():
    P = 6
    gen = torch.Generator().manual_seed(3)
    for n_grids, n_audio in ((8, 0), (0, 200)):
        mod = make_layout(n_grids, n_audio, P)
        emb = torch.randn(mod.shape[0], 16, generator=gen, dtype=torch.float64)
        na = int((mod == AUDIO).sum())
        scores = torch.rand(na, generator=gen, dtype=torch.float64) if na else None
        ctx = make_ctx(mod, P, emb, scores, 1.0, GRID_HW[P])
        for missing in ("full_tokens", "compress_present"):
            params = yaml_params(missing_modality=missing)
            rho_v, rho_a = ref_mapping(0.3, 0.65, 0.05, 3)
            problems, _ = compare(ctx, params, 0.3, 0.65,
                                  dict(P=P, rho_v=rho_v, rho_a=rho_a, c=0.05, g=3, missing=missing),
                                  dict(n_grids=n_grids, n_audio=n_audio, missing=missing))
            assert not problems, (n_grids, n_audio, missing, problems)


def test_mapping_auto_equals_explicit_knobs():
    """Section 6.5: auto knobs from (r_v, r_a) behave exactly as the mapped numbers set directly."""
    ctx, *_ = random_case(5)
    for r_v, r_a, g in ((0.3, 0.65, 3), (0.25, 0.25, 3), (0.65, 0.9, 3), (0.4, 0.55, 0)):
        rho_v, rho_a = ref_mapping(r_v, r_a, 0.05, g)
        auto = run_project(yaml_params(g=g), r_v, r_a, ctx)
        explicit = run_project(yaml_params(g=g, rho_video=rho_v, rho_audio=rho_a), 0.5, 0.5, ctx)
        assert torch.equal(auto[0], explicit[0]), (r_v, r_a, g)
        assert torch.allclose(auto[1], explicit[1], atol=1e-12, rtol=0)
        sel = methods.build_selector("omnizip", yaml_params(g=g), r_v, r_a, MODEL)
        d = sel.describe()
        assert d["rho_video"] == pytest.approx(rho_v, abs=1e-12) and d["rho_audio"] == pytest.approx(rho_a, abs=1e-12)


def test_mapping_unreachable_video_retention():
    """Section 6.5: only r_v in [0.25, 0.65] is reachable; clamp=false refuses, clamp=true clamps."""
    for r_v in (0.2, 0.7):
        with pytest.raises(MethodConfigError):
            methods.build_selector("omnizip", yaml_params(), r_v, 0.65, MODEL)
    sel = methods.build_selector("omnizip", yaml_params(clamp=True), 0.2, 0.55, MODEL)
    assert sel.describe()["rho_video"] == pytest.approx(0.75)
    sel = methods.build_selector("omnizip", yaml_params(clamp=True), 0.7, 0.55, MODEL)
    assert sel.describe()["rho_video"] == pytest.approx(0.35)


def test_audio_density_float32_knife_edge():
    """S_a(i) is a float32 mean (upstream): P = 9, an audio run of 48 with 10 kept -> 2 tokens per frame
    (the exact fraction 10/48 would give int(9 * (1 - rho)) = 3).  Two windows: no normalisation."""
    P = 9
    mod = make_layout(4, 98, P)
    gen = torch.Generator().manual_seed(21)
    emb = torch.randn(mod.shape[0], 16, generator=gen, dtype=torch.float64)
    scores = _controlled_scores(mod, [25, 10], 5)
    ctx = make_ctx(mod, P, emb, scores, 1.0, GRID_HW[P])
    rho_a = 1 - 35 / 98
    exact = _clamp(0.75 - 0.40 * (10 / 48))
    assert int(P * (1 - exact)) == 3  # the case is a knife edge
    params = yaml_params(g=0, rho_video=0.6, rho_audio=rho_a)
    problems, _ = compare(ctx, params, 0.5, 0.5, dict(P=P, rho_v=0.6, rho_a=rho_a, c=0.05, g=0), {})
    assert not problems, problems
    vruns = _runs(torch.nonzero(mod == VIDEO).flatten().tolist())
    keep, _ = ref_omnizip(mod, emb, scores, P, 0.6, rho_a, 0.05, 0)
    assert int(keep[vruns[1]].sum()) == 2 * 2


def test_partial_grid_runs():
    """A video run that is not whole grids (does not occur with the real layout): frames beyond F*P are
    dropped, a run shorter than one grid is kept whole.  Two windows: no normalisation (N_v unused)."""
    P = 9
    for shift in (3, 11):
        mod = make_layout(4, 100, P).tolist()
        v0 = mod.index(VIDEO)
        a0 = mod.index(AUDIO)
        # move `shift` video tokens from window 0 to window 1 (total stays 4 grids)
        body = mod[a0:]
        mod = mod[:v0] + [VIDEO] * (2 * P - shift) + body
        a1 = len(mod) - 1 - mod[::-1].index(AUDIO) - 49  # first audio token of window 1
        v1 = mod.index(VIDEO, a0)
        mod = mod[:v1] + [VIDEO] * (2 * P + shift) + mod[a1:]
        mod = torch.tensor(mod)
        assert int((mod == VIDEO).sum()) == 4 * P
        gen = torch.Generator().manual_seed(shift)
        emb = torch.randn(mod.shape[0], 16, generator=gen, dtype=torch.float64)
        scores = torch.rand(int((mod == AUDIO).sum()), generator=gen, dtype=torch.float64)
        ctx = make_ctx(mod, P, emb, scores, 1.0, GRID_HW[P])
        rho_v, rho_a = ref_mapping(0.3, 0.65, 0.05, 3)
        problems, _ = compare(ctx, yaml_params(), 0.3, 0.65, dict(P=P, rho_v=rho_v, rho_a=rho_a, c=0.05, g=3), {})
        assert not problems, (shift, problems)


def test_BUG_anchor_merge_softmax_float32_under_float64_embeddings():
    """Project bug (minor): with compute_dtype=model and float64 embeddings, the anchor-merge weights
    w = softmax(scores) (6.3 C) are computed in float32 (methods/omnizip.py merge_anchors: ``.float()``),
    so the merged anchors miss the float64 result by ~1e-7.  The YAML says the merge runs in the
    embeddings' dtype; upstream's torch.softmax runs in the feature dtype.  No effect for bf16/fp32."""
    for seed in range(4):
        mod = make_layout(10, 250, 9)
        gen = torch.Generator().manual_seed(seed)
        emb = torch.randn(mod.shape[0], 24, generator=gen, dtype=torch.float64) * 3.0
        scores = torch.rand(int((mod == AUDIO).sum()), generator=gen, dtype=torch.float64)
        ctx = make_ctx(mod, 9, emb, scores, 1.0, GRID_HW[9])
        rho_v, rho_a = ref_mapping(0.3, 0.65, 0.05, 3)
        problems, err = compare(ctx, yaml_params(), 0.3, 0.65, dict(P=9, rho_v=rho_v, rho_a=rho_a, c=0.05, g=3), {},
                                atol=1e-12)
        assert not problems, f"seed {seed}: {problems}"


@pytest.mark.parametrize("P,n_win,all_audio,rho_v,last_single_grid", [
    (4, 3, True, 0.45, False),  # quirk: 0.5000000000000001 -> int(4 * 0.4999..) = 1 per frame (2 without it)
    (16, 9, True, 0.65, False),
    (6, 3, False, 0.7, True),  # no audio kept (base 0.75 everywhere), the last window holds one grid
])
def test_equal_base_ratios_counted_twice(P, n_win, all_audio, rho_v, last_single_grid):
    """All base ratios equal: min and max are the same window, its discard counted twice (6.3 E quirk).
    Step 3 repairs the total, so the quirk shows only in the last bit of the ratio -- which these cases
    turn into a different per-frame keep count (found by search)."""
    n_grids = 2 * n_win - (1 if last_single_grid else 0)
    mod = make_layout(n_grids, 50 * n_win, P)
    gen = torch.Generator().manual_seed(P)
    emb = torch.randn(mod.shape[0], 16, generator=gen, dtype=torch.float64)
    scores = torch.rand(int((mod == AUDIO).sum()), generator=gen, dtype=torch.float64)
    ctx = make_ctx(mod, P, emb, scores, 1.0, GRID_HW[P])
    rho_a = 0.0 if all_audio else 1.0
    params = yaml_params(g=0, rho_video=rho_v, rho_audio=rho_a)
    problems, _ = compare(ctx, params, 0.5, 0.5, dict(P=P, rho_v=rho_v, rho_a=rho_a, c=0.05, g=0), {})
    assert not problems, problems
