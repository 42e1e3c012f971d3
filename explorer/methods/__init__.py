"""The registered methods. `load_methods()` imports every method module so that each registers itself."""

from __future__ import annotations

import importlib

from explorer.methods.base import REGISTRY, Batch, Decision, Method, MethodBase, register

#: method modules, simple to complex
METHOD_MODULES = ("sft", "random_select", "safeinstr", "dualselect", "seal", "pact", "tokenwise", "cwac")

__all__ = ["REGISTRY", "Batch", "Decision", "Method", "MethodBase", "register", "load_methods", "make_method"]


def load_methods() -> dict:
    for m in METHOD_MODULES:
        try:
            importlib.import_module(f"explorer.methods.{m}")
        except ModuleNotFoundError as e:
            if e.name != f"explorer.methods.{m}":  # a real missing dependency inside the module
                raise
    return REGISTRY


def make_method(name: str, config) -> Method:
    load_methods()
    _, cls = REGISTRY[name]
    return cls(config)
