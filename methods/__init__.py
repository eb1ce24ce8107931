"""Method registry: one module per method, registered by name.

Adding a method = one module here (a ``BaseSelector`` subclass plus a builder decorated with
``@register("name")``) and one YAML in ``conf/method/``.  Nothing else changes.

Methods from other installed packages: an entry point in the group ``seats_exp.methods`` names a
module that calls ``register`` (imported after the built-in modules); its YAML comes from the
package's ``seats_exp.searchpath`` entry point (see ``seats_exp/package.py``).  A name that is
already taken -- by a built-in method or another package -- is a ``MethodConfigError`` naming both.

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


def with_defaults(name: str, params: dict[str, Any], defaults: dict[str, Any],
                  choices: dict[str, tuple] | None = None) -> dict[str, Any]:
    """A method's settings: ``defaults`` overlaid with ``params``; an unknown key, or a value outside
    its ``choices``, is a ``MethodConfigError`` naming the key and what is allowed."""
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise MethodConfigError(f"method {name} does not take {unknown}; allowed keys: {sorted(defaults)}")
    merged = {**defaults, **params}
    for key, allowed in (choices or {}).items():
        if merged[key] not in allowed:
            raise MethodConfigError(f"method.{key} must be one of {list(allowed)}, got {merged[key]!r}")
    return merged


Builder = Callable[[dict[str, Any], float, float, ModelInfo], BaseSelector]
_REGISTRY: dict[str, Builder] = {}
_ORIGIN: dict[str, str] = {}  # method name -> module that registered it
_entry_points_loaded = False


def _builtin(module: str) -> bool:
    return module.split(".")[0] == __name__


def register(name: str) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        origin = getattr(fn, "__module__", "?")
        if name in _REGISTRY and _ORIGIN[name] != origin:  # the same module imported again replaces itself
            taken = _ORIGIN[name]
            if _builtin(taken) or _builtin(origin):
                builtin, other = (taken, origin) if _builtin(taken) else (origin, taken)
                raise MethodConfigError(f"method name {name!r} clashes with the built-in method {name!r} ({builtin}); "
                                        f"{other} must register its method under another name")
            raise MethodConfigError(f"method name {name!r} is registered by both {taken} and {origin}; "
                                    "rename one of them")
        _REGISTRY[name] = fn
        _ORIGIN[name] = origin
        return fn

    return deco


def _load_all() -> None:
    global _entry_points_loaded
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")
    if _entry_points_loaded:
        return
    from seats_exp.package import METHODS_GROUP, describe_entry_point, entry_points

    for ep in entry_points(METHODS_GROUP):
        try:
            ep.load()
        except MethodConfigError as exc:
            raise MethodConfigError(f"{exc} (from {describe_entry_point(ep)})") from exc
        except Exception as exc:  # an installed package that cannot be imported: say which one
            raise MethodConfigError(f"methods of {describe_entry_point(ep)} could not be imported: "
                                    f"{type(exc).__name__}: {exc}") from exc
    _entry_points_loaded = True


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
