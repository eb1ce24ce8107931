"""The lmms-eval model: a Qwen-Omni Thinker with a token selector attached.

Registered through the ``lmms_eval.models`` entry point (``MANIFEST``), so both work:

    seats-exp model=... method=... benchmark=...                 (builds a ``Runtime`` and passes it in)
    python -m lmms_eval --model seats_omni --model_args pretrained=<dir>,family=qwen2_5_omni,method=seats,...

Per request: the video is loaded through the real processor path (audio from the video's own
track when it has one), the Thinker generates greedily with the task's generation kwargs applied
for real, and a per-sample record (answer, kept tokens per layer, FLOPs, timings) goes to the
run's sink.  A sample whose media cannot be used is recorded with its reason and answered with
``ERROR_MARKER + reason``, which the task code counts as an error -- never as a silent empty answer.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from lmms_eval.api.model import lmms

from evaluation.common import ERROR_MARKER, is_error
from evaluation.media import MediaError, MediaSettings, build_inputs

log = logging.getLogger(__name__)

try:  # lmms-eval >= 0.7 registry payload
    from lmms_eval.models.registry_v2 import ModelManifest

    MANIFEST = ModelManifest(model_id="seats_omni", simple_class_path="evaluation.lmms_model.SeatsOmni")
except ImportError:  # pragma: no cover - older lmms-eval
    MANIFEST = None

# Tasks whose upstream evaluation uses the persona system prompt (seats-reference 14.2, item 23).
_PERSONA_TASK_HINTS = ("dailyomni", "daily", "worldsense", "synthetic")


def sample_seed(run_seed: int, task: str, doc_id: int) -> int:
    digest = hashlib.sha256(f"{run_seed}:{task}:{doc_id}".encode()).hexdigest()
    return int(digest[:12], 16)


@dataclass
class Runtime:
    """Everything one evaluation needs, built once by ``seats_exp.runner`` (or by the CLI args)."""

    model: Any  # seats_exp.models.loading.LoadedModel
    engine: Any  # seats_exp.engine.Engine (attached)
    dims: Any  # seats_exp.models.adapters.ModelDims
    task_settings: dict[str, dict] = field(default_factory=dict)  # lmms task name -> settings
    seed: int = 0
    sink: Callable[[dict], None] | None = None
    # resume: (task, sample id, occurrence) -> answer.  Matched on the question's own id, never on the row
    # number, so a saved answer is only ever scored against the question it answered (``resume_key``).
    done: dict[tuple[str, str, int], str] = field(default_factory=dict)
    fidelity: bool = False
    progress: bool = True
    family: str = "qwen2_5_omni"
    # Data parallel (seats_exp.distributed.Shard): generate only owned docs, take the others from the other ranks.
    shard: Any = None
    # lmms-eval CLI path: model_args media settings, used only for tasks that carry no seats settings
    cli_media: dict = field(default_factory=dict)


def resume_key(task: str, doc: dict, doc_id: int) -> tuple[str, str, int]:
    """(task, sample id, occurrence) of a document: what a saved answer is matched on."""
    sid = doc.get("_sample_id")
    return (task, str(doc_id if sid is None else sid), int(doc.get("_occurrence") or 0))


def record_key(record: dict) -> tuple[str, str, int]:
    """The same key read back from a ``samples.jsonl`` record."""
    sid = record.get("sample_id")
    return (str(record["task"]), str(record.get("doc_id") if sid is None else sid), int(record.get("occurrence") or 0))


def guard_response_cache() -> None:
    """Keep error replies out of lmms-eval's ``--use_cache`` response cache.

    lmms-eval stores every non-empty deterministic reply in SQLite and appends it to an audit log it
    replays into the database on the next start; an error reply (a missing or corrupt video) would be
    replayed after the file is fixed.  Error replies are therefore neither stored nor replayable
    (their audit line carries no cache key).  Idempotent."""
    try:
        from lmms_eval.caching.response_cache import ResponseCache
    except ImportError:  # pragma: no cover - lmms-eval without the response cache
        return
    if getattr(ResponseCache, "_seats_guarded", False):
        return
    valid, audit = ResponseCache._is_valid_response, ResponseCache._log_to_audit

    def _text(response):
        return getattr(response, "text", response)

    def is_valid_response(response, request_type):
        return not is_error(_text(response)) and valid(response, request_type)

    def log_to_audit(self, request_type, task_name, doc_id, idx, gen_kwargs, response, **kwargs):
        if is_error(_text(response)):
            kwargs["cache_key"] = ""  # the audit replay skips lines without a key
        return audit(self, request_type, task_name, doc_id, idx, gen_kwargs, response, **kwargs)

    ResponseCache._is_valid_response = staticmethod(is_valid_response)
    ResponseCache._log_to_audit = log_to_audit
    ResponseCache._seats_guarded = True


class SeatsOmni(lmms):
    is_simple = True

    def __init__(self, runtime: Runtime | None = None, pretrained: str | None = None, family: str = "qwen2_5_omni",
                 method: str = "full_tokens", video_ratio: float = 1.0, audio_ratio: float = 1.0,
                 attn_implementation: str = "sdpa", dtype: str = "bfloat16", device: str = "auto",
                 kv_scope: str = "all_executed", seed: int = 0, batch_size: int = 1, fps: float = 2.0,
                 max_frames: int = 768, **kwargs):
        super().__init__()
        if int(batch_size) != 1:
            raise ValueError(f"batch_size={batch_size}: seats_omni runs batch size 1 (token selection is per sample)")
        if runtime is None:
            if pretrained is None:
                raise ValueError("seats_omni needs model_args pretrained=<checkpoint folder or hub id>")
            from seats_exp.runner import build_runtime_from_args

            runtime = build_runtime_from_args(
                pretrained=pretrained, family=family, method=method, video_ratio=float(video_ratio),
                audio_ratio=float(audio_ratio), attn_implementation=attn_implementation, dtype=dtype,
                device=device, kv_scope=kv_scope, seed=int(seed), fps=float(fps), max_frames=int(max_frames),
                method_params=kwargs,
            )
        self.runtime = runtime
        guard_response_cache()
        self._media_cache: dict[str, MediaSettings] = {}
        self._rank, self._world_size = 0, 1
        self.task_dict = {}

    # -- lmms-eval API ----------------------------------------------------------------------------------
    def loglikelihood(self, requests):
        raise NotImplementedError("seats_omni only supports generate_until tasks (multiple-choice generation)")

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("seats_omni does not support multi-round generation")

    def generate_until(self, requests) -> list[str]:
        from tqdm import tqdm

        answers = []
        shard = self.runtime.shard
        owned: dict[tuple[str, int], str] = {}  # this rank's answers, shared with the other ranks
        bar = tqdm(total=len(requests), desc="samples", disable=not self.runtime.progress)
        for req in requests:
            context, gen_kwargs, doc_to_visual, doc_id, task, split = req.args
            key = (task, int(doc_id))
            if shard is not None and not shard.owns(*key):
                answers.append(None)  # another rank's document: filled in after the exchange below
                bar.update(1)
                continue
            doc = self.task_dict[task][split][doc_id]
            saved = resume_key(task, doc, int(doc_id))
            if saved in self.runtime.done:
                owned[key] = self.runtime.done[saved]
                answers.append(owned[key])
                bar.update(1)
                continue
            owned[key] = self._answer(context, dict(gen_kwargs or {}), doc_to_visual, int(doc_id), task, doc)
            answers.append(owned[key])
            bar.update(1)
        bar.close()
        if shard is not None:
            merged = shard.exchange(owned)
            keys = [(req.args[4], int(req.args[3])) for req in requests]
            answers = [merged[k] if a is None else a for a, k in zip(answers, keys)]
        return answers

    # -- one sample ---------------------------------------------------------------------------------------
    def media_settings(self, task: str, doc: dict | None = None) -> MediaSettings:
        """The task's loader settings.  ``seats-exp`` passes them in (``Runtime.task_settings``); on the
        lmms-eval CLI path they are read from the materialised task's manifest (``_manifest`` of its
        documents), so both entry points send the same media for the same task.  A task without seats
        settings gets the upstream defaults, with the model_args ``fps``/``max_frames``."""
        s = self.runtime.task_settings.get(task)
        if s is not None:
            return MediaSettings(**s)
        if task in self._media_cache:
            return self._media_cache[task]
        manifest = (doc or {}).get("_manifest")
        if manifest:
            from evaluation import benchmarks

            import json
            from pathlib import Path

            entries = json.loads(Path(manifest).read_text(encoding="utf-8"))["tasks"]
            if task not in entries:
                raise MediaError(f"task {task} is not in its manifest {manifest}; materialise the tasks again")
            settings = MediaSettings(**benchmarks.media_settings(entries[task], self.runtime.family))
        else:  # not a seats task: upstream defaults and the upstream system-prompt rule
            from evaluation.common import system_text

            persona = any(h in task.lower() for h in _PERSONA_TASK_HINTS)
            settings = MediaSettings.defaults(self.runtime.family, system_text("persona" if persona else "empty"))
            for name in ("fps", "max_frames"):
                if self.runtime.cli_media.get(name) is not None:
                    setattr(settings, name, self.runtime.cli_media[name])
        self._media_cache[task] = settings
        return settings

    def _answer(self, context: str, gen_kwargs: dict, doc_to_visual, doc_id: int, task: str, doc: dict) -> str:
        rt = self.runtime
        record: dict[str, Any] = {"task": task, "doc_id": doc_id, "sample_id": doc.get("_sample_id", doc_id),
                                  "occurrence": int(doc.get("_occurrence") or 0)}
        started = time.perf_counter()
        try:
            if doc.get("_problem"):  # a row that cannot be scored: no generation, the reason is recorded
                raise MediaError(f"bad annotation row: {doc['_problem']}")
            visuals = doc_to_visual(doc)
            if not visuals:
                raise MediaError("the task gave no video for this sample")
            video = visuals[0]
            inputs, has_audio = build_inputs(rt.model.processor, rt.family, video, context,
                                             self.media_settings(task, doc))
            record["audio_in_video"] = has_audio
            if not has_audio:
                record["warning"] = "video has no audio track; run without audio-in-video"
        except MediaError as exc:
            record.update(error=str(exc), answer=None, seconds=time.perf_counter() - started)
            log.warning("sample %s/%s skipped: %s", task, doc_id, exc)
            if rt.sink:
                rt.sink(record)
            return ERROR_MARKER + str(exc)
        answer, cost = self._generate(inputs, has_audio, gen_kwargs, task, doc_id)
        record.update(answer=answer, error=None, seconds=time.perf_counter() - started, **cost)
        if rt.fidelity:
            record["fidelity"] = self._fidelity(inputs, has_audio)
        if rt.sink:
            rt.sink(record)
        return answer

    def _generation_args(self, gen_kwargs: dict) -> dict:
        args = {"max_new_tokens": int(gen_kwargs.get("max_new_tokens", 4096)), "num_beams": int(gen_kwargs.get("num_beams", 1) or 1)}
        temperature = float(gen_kwargs.get("temperature", 0) or 0)
        args["do_sample"] = bool(gen_kwargs.get("do_sample", False)) and temperature > 0
        if args["do_sample"]:
            args["temperature"] = temperature
            if gen_kwargs.get("top_p") is not None:
                args["top_p"] = float(gen_kwargs["top_p"])
        return args

    @torch.no_grad()
    def _generate(self, inputs, has_audio: bool, gen_kwargs: dict, task: str, doc_id: int):
        rt = self.runtime
        thinker = rt.model.thinker
        inputs = inputs.to(rt.model.device)
        for k, v in list(inputs.items()):
            if torch.is_floating_point(v):
                inputs[k] = v.to(thinker.dtype)
        thinker.model.rope_deltas = None  # never reuse positions of an unrelated call
        rt.engine.sample_seed = sample_seed(rt.seed, task, doc_id)
        tok = rt.model.processor.tokenizer
        out = thinker.generate(
            **inputs, use_audio_in_video=has_audio, eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id, **self._generation_args(gen_kwargs),
        )
        new_tokens = out[0, inputs["input_ids"].shape[1]:]
        answer = tok.decode(new_tokens, skip_special_tokens=True)
        records = rt.engine.pop_records()
        return answer, self._cost(records[0] if records else None, len(new_tokens))

    def _cost(self, rec, generated: int) -> dict:
        from seats_exp.cost import prefill_flops

        if rec is None:
            return {"generated_tokens": generated}
        dims = self.runtime.dims
        lengths = rec.layer_lengths
        full = prefill_flops(dims, [rec.input_length] * dims.num_layers)
        flops = prefill_flops(dims, lengths, rec.final_length) if len(lengths) == dims.num_layers else None
        per_layer = rec.kept_counts
        return {
            "generated_tokens": generated,
            "input_tokens": rec.input_length,
            "llm_input_tokens": rec.llm_input_length,
            "layer_lengths": lengths,
            "kept_video": [c["video"] for c in per_layer],
            "kept_audio": [c["audio"] for c in per_layer],
            "drop_events": rec.events,
            "prefill_flops": flops,
            "prefill_flops_full": full,
            "time_encoders": rec.timings.get("encoders"),
            "time_encoder_stats": rec.timings.get("encoder_stats"),  # None without a statistics collector
            "time_selection": rec.timings.get("selection"),
            "time_llm_prefill": rec.timings.get("llm_prefill"),
            "peak_memory_bytes": rec.peak_memory_bytes,
            "notes": dict(rec.notes),  # per-sample notes of the selector (e.g. why a method was skipped)
        }

    @torch.no_grad()
    def _fidelity(self, inputs, has_audio: bool) -> dict:
        """First-answer-token agreement and KL(full || pruned) of its distribution."""
        rt = self.runtime
        thinker = rt.model.thinker

        def first_logits():
            thinker.model.rope_deltas = None
            out = thinker(**inputs, use_audio_in_video=has_audio, use_cache=True)
            return out.logits[0, -1].float()

        pruned = first_logits()
        rt.engine.pop_records()
        rt.engine.detach()
        try:
            full = first_logits()
        finally:
            rt.engine.attach()
        logp_full, logp_pruned = torch.log_softmax(full, -1), torch.log_softmax(pruned, -1)
        kl = torch.sum(logp_full.exp() * (logp_full - logp_pruned)).item()
        return {"top1_agree": bool(full.argmax() == pruned.argmax()), "kl": float(kl)}
