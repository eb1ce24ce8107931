"""W&B mode resolution (WANDB_MODE respected, offline when the host cannot be reached), the run config
(whole resolved config without secrets) and "logged" recorded apart from "done" (no network, no wandb run)."""

from __future__ import annotations

import json
import logging
import socket
from types import SimpleNamespace

import pytest

from seats_exp import tracking


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for key in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc key
    return monkeypatch


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens there


def test_auto_follows_wandb_mode(clean_env):
    clean_env.setenv("WANDB_API_KEY", "x" * 40)
    clean_env.setenv("WANDB_MODE", "offline")
    assert tracking.resolve_mode("auto") == "offline"
    clean_env.setenv("WANDB_MODE", "disabled")
    assert tracking.resolve_mode("auto") == "disabled"
    clean_env.setenv("WANDB_MODE", "dryrun")
    assert tracking.resolve_mode("auto") == "offline"
    assert tracking.resolve_mode("online") == "online"  # an explicit logger.mode is used as given


def test_auto_falls_back_offline_when_the_host_cannot_be_reached(clean_env, caplog):
    assert tracking.resolve_mode("auto") == "offline"  # no API key
    clean_env.setenv("WANDB_API_KEY", "x" * 40)
    port = _closed_port()
    clean_env.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
    with caplog.at_level(logging.WARNING, logger="seats_exp"):
        assert tracking.resolve_mode("auto") == "offline"
    assert f"host 127.0.0.1:{port} cannot be reached" in caplog.text and "logging offline" in caplog.text
    with socket.socket() as server:  # a host that answers: online
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        clean_env.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert tracking.resolve_mode("auto") == "online"


def _rc():
    task = SimpleNamespace(key="synthetic", generation={"max_new_tokens": 4})
    return SimpleNamespace(schedule=SimpleNamespace(video=0.3, audio=0.65), kv_scope="all_executed",
                           benchmark=SimpleNamespace(scoring="faithful", limit=3, sample_ids=["a"], tasks=[task]),
                           max_new_tokens_override=None)


def test_run_config_is_the_whole_config_without_secrets():
    config = {"model": {"name": "m", "hf_token": "hf_abc", "checkpoint": "/c"}, "experiment_name": "smoke",
              "logger": {"api_key": "k", "project": "p"}, "db": {"password": "pw", "PASSWORD_FILE": "/x"},
              "plan": {"tokens_per_grid": 144, "text_tokens": 100}, "eval": {"max_new_tokens_override": None},
              "secret": 1, "aws_secret_access_key": "s", "kv": {"key": "v"}}
    out = tracking.run_config(_rc(), {"git_commit": "abc", "run_dir": "/r"}, config)
    flat = json.dumps(out)
    for secret in ("hf_abc", '"k"', "pw", '"/x"', "aws_secret", '"v"'):
        assert secret not in flat, secret
    assert out["plan"] == {"tokens_per_grid": 144, "text_tokens": 100} and out["model"]["checkpoint"] == "/c"
    assert out["logger"] == {"project": "p"} and "secret" not in out
    assert (out["experiment_name"], out["git_commit"], out["benchmark_limit"], out["sample_ids"]) == ("smoke", "abc", 3, ["a"])
    assert out["generation"] == {"synthetic": {"max_new_tokens": 4}, "max_new_tokens_override": None}
    assert out["ratios"] == {"video": 0.3, "audio": 0.65}


def test_sample_rows_join_scores():
    records = [{"task": "t", "sample_id": "s1", "answer": "A.", "error": None, "llm_input_tokens": 9},
               {"task": "t", "sample_id": "s2", "answer": None, "error": "bad video"}]
    scores = [{"task": "t", "sample_id": "s1", "gold": "B", "prediction": "A", "score": 0, "category": "Sports"}]
    rows = [dict(zip(tracking.SAMPLE_COLUMNS, r)) for r in tracking.sample_rows(records, scores)]
    assert (rows[0]["gold"], rows[0]["prediction"], rows[0]["score"], rows[0]["category"]) == ("B", "A", 0, "Sports")
    assert rows[0]["answer"] == "A." and rows[0]["llm_input_tokens"] == 9
    assert rows[1]["gold"] is None and rows[1]["error"] == "bad video"


def test_failed_logging_leaves_the_point_unlogged(tmp_path, monkeypatch):
    from seats_exp import runner
    from seats_exp.store import RunStore

    store = RunStore(tmp_path)

    def broken(*args, **kwargs):
        raise ConnectionError("api.wandb.ai unreachable")

    monkeypatch.setattr(tracking, "log_run", broken)
    with pytest.raises(ConnectionError):
        runner._log_wandb(SimpleNamespace(), {}, [], store, "seed: 0\n")
    assert store.read_logged() is None
    monkeypatch.setattr(tracking, "log_run", lambda *a, **k: {"mode": "offline", "run_id": "r1"})
    runner._log_wandb(SimpleNamespace(), {}, [], store, "seed: 0\n")
    assert store.read_logged() == {"mode": "offline", "run_id": "r1"}
