"""Load a Thinker and its processor through ``from_pretrained`` (hub id or local folder).

Published Omni checkpoints hold the whole model (Thinker, talker, token2wav); only the Thinker is
loaded, by mapping the checkpoint's ``thinker.`` weights onto transformers' own Thinker class.
The tiny test models take exactly this path after being written to a folder.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from seats_exp.models.adapters import OmniAdapter, adapter_for

log = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# config.model_type of a whole Omni checkpoint, or of a Thinker-only one, per family
_MODEL_TYPES = {
    "qwen2_5_omni": ("qwen2_5_omni", "qwen2_5_omni_thinker"),
    "qwen3_omni": ("qwen3_omni_moe", "qwen3_omni_moe_thinker"),
}


class ModelLoadError(RuntimeError):
    pass


@dataclass
class LoadedModel:
    thinker: torch.nn.Module
    processor: object
    adapter: OmniAdapter
    checkpoint: str
    device: torch.device


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def looks_like_local_path(checkpoint: str) -> bool:
    return checkpoint.startswith(("/", "./", "../", "~")) or Path(checkpoint).exists()


def load_model(checkpoint: str, *, family: str, dtype: str = "bfloat16", attn_implementation: str = "sdpa",
               device: str = "auto", tiny: bool = False, seed: int = 0) -> LoadedModel:
    from transformers import AutoConfig, AutoProcessor

    if tiny:
        from seats_exp.models.tiny import build_tiny_checkpoint

        build_tiny_checkpoint(family, checkpoint, seed=seed)
    elif looks_like_local_path(checkpoint) and not Path(checkpoint).expanduser().is_dir():
        raise ModelLoadError(f"model.checkpoint={checkpoint!r} does not exist (expected a checkpoint folder or a hub id)")
    if family == "qwen3_omni":
        from transformers import Qwen3OmniMoeThinkerForConditionalGeneration as thinker_cls
    else:
        from transformers import Qwen2_5OmniThinkerForConditionalGeneration as thinker_cls
    try:
        config = AutoConfig.from_pretrained(checkpoint)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"model.checkpoint={checkpoint!r} could not be read as a checkpoint: {exc}") from exc
    expected = _MODEL_TYPES[family]
    if config.model_type not in expected:
        raise ModelLoadError(f"model.family={family!r} but model.checkpoint={checkpoint!r} holds a "
                             f"{config.model_type!r} checkpoint (expected {' or '.join(expected)})")
    thinker_config = getattr(config, "thinker_config", config)
    dev = resolve_device(device)
    thinker = thinker_cls.from_pretrained(
        checkpoint,
        config=thinker_config,
        key_mapping={r"^thinker\.": ""},
        dtype=_DTYPES[dtype],
        attn_implementation=attn_implementation,
    ).to(dev).eval()
    processor = AutoProcessor.from_pretrained(checkpoint)
    adapter = adapter_for(thinker)
    if adapter.family != family:
        raise ModelLoadError(f"model.family={family!r} but {checkpoint} holds a {adapter.family} Thinker")
    log.info("loaded %s Thinker from %s (%d layers, %s, %s, %s)", family, checkpoint, adapter.num_layers,
             dtype, attn_implementation, dev)
    return LoadedModel(thinker=thinker, processor=processor, adapter=adapter, checkpoint=checkpoint, device=dev)
