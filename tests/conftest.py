"""Shared fixtures: tiny checkpoints (both families), short clips, and the CI switch for system tools."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REPO = Path(__file__).resolve().parent.parent


def require_tool(name: str) -> str:
    """Return the path of a system tool; skip the test on a laptop without it, fail under CI=true."""
    path = shutil.which(name)
    if path is None:
        if IN_CI:
            pytest.fail(f"{name} is required under CI=true (.ci/run installs it)")
        pytest.skip(f"{name} not installed")
    return path


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tiny_models")


def _tiny(tiny_root: Path, family: str) -> Path:
    from seats_exp.models.tiny import build_tiny_checkpoint

    return build_tiny_checkpoint(family, tiny_root / family)


@pytest.fixture(scope="session")
def tiny_qwen2_5(tiny_root) -> Path:
    return _tiny(tiny_root, "qwen2_5_omni")


@pytest.fixture(scope="session")
def tiny_qwen3(tiny_root) -> Path:
    return _tiny(tiny_root, "qwen3_omni")


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> dict[str, Path]:
    """A 4-s clip with sound, one without an audio track, and a corrupt file."""
    from evaluation.synthetic import write_clip, write_corrupt_video

    d = tmp_path_factory.mktemp("clips")
    return {
        "av": write_clip(d / "av.mp4", colour="red", pitch="high"),
        "silent": write_clip(d / "silent.mp4", colour="blue", audio=False),
        "corrupt": write_corrupt_video(d / "corrupt.mp4"),
    }


def load_tiny(path: Path, family: str, attn: str = "sdpa"):
    """Load a tiny checkpoint through the production loader (fp32, CPU)."""
    from seats_exp.models.loading import load_model

    return load_model(str(path), family=family, dtype="float32", attn_implementation=attn, device="cpu")


def tiny_inputs(loaded, clip: Path, prompt: str = "Question: what colour is shown?\nChoices: A. red\nB. blue"):
    from evaluation.media import MediaSettings, build_inputs

    family = loaded.adapter.family
    inputs, has_audio = build_inputs(loaded.processor, family, clip, prompt, MediaSettings.defaults(family))
    return inputs, has_audio


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Annotation files in every benchmark's real schema, with clips (tests/bench_fixtures.py)."""
    import bench_fixtures as bf

    return bf.write_all(tmp_path_factory.mktemp("bench_data"))


@pytest.fixture(scope="module")
def hf_cache(tmp_path_factory):
    # lmms-eval reads this once per process (lru_cache); keep datasets' arrow cache out of ~/.cache
    path = str(tmp_path_factory.mktemp("hf_datasets"))
    old = os.environ.get("LMMS_EVAL_DATASETS_CACHE")
    os.environ["LMMS_EVAL_DATASETS_CACHE"] = path
    yield path
    if old is None:
        os.environ.pop("LMMS_EVAL_DATASETS_CACHE", None)
    else:
        os.environ["LMMS_EVAL_DATASETS_CACHE"] = old


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
