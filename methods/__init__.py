"""Method registry: one module per method, registered by name.

Adding a method = one module here (a ``BaseSelector`` subclass plus a builder decorated with
``@register("name")``) and one YAML in ``conf/method/``.  Nothing else changes.

A builder receives the method's own settings (the ``method`` config group minus ``name``), the
resolved retention pair from the ``schedule`` group, and a ``ModelInfo`` describing the loaded
model; it returns a selector.  Builders raise ``MethodConfigError`` with a sentence naming the bad
key for any invalid combination; the CLI calls them before any weight is loaded.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Any, Callable

from seats_exp.selection import BaseSelector


class MethodConfigError(ValueError):
    """An invalid method setting; the message names the key and the allowed values."""


@dataclass(frozen=True)
class ModelInfo:
    """What a method may know about the model before weights are loaded."""

    variant: str  # e.g. "qwen2_5_omni_7b", "qwen3_omni_30b_a3b", "tiny_qwen2_5_omni"
    family: str  # "qwen2_5_omni" | "qwen3_omni"
    num_layers: int  # decoder depth
    audio_tokens_per_second: float  # 25 (Qwen2.5) or 13 (Qwen3)


Builder = Callable[[dict[str, Any], float, float, ModelInfo], BaseSelector]
_REGISTRY: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} registered twice")
        _REGISTRY[name] = fn
        return fn

    return deco


def _load_all() -> None:
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")


def available() -> list[str]:
    _load_all()
    return sorted(_REGISTRY)


def build_selector(
    name: str, params: dict[str, Any], video_ratio: float, audio_ratio: float, model: ModelInfo
) -> BaseSelector:
    _load_all()
    if name not in _REGISTRY:
        raise MethodConfigError(f"method.name={name!r} is not a known method; choose one of {available()}")
    for key, value in (("video", video_ratio), ("audio", audio_ratio)):
        if not (0.0 < float(value) <= 1.0):
            raise MethodConfigError(f"schedule.{key}={value} is outside (0, 1]")
    return _REGISTRY[name](dict(params), float(video_ratio), float(audio_ratio), model)
