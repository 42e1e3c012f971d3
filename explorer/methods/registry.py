"""The method registry: `@register(name, ConfigClass)` on a method class makes it runnable by name;
`load_methods()` imports every method module so that each registers itself, and `make_method` builds
one. The protocol a method implements (Method, MethodBase, Decision, Context) is in
explorer/methods/protocol.py."""

from __future__ import annotations

import importlib
from typing import Callable

from explorer.methods.protocol import Method

#: name -> (config dataclass, method class); filled as the method modules are imported
REGISTRY: dict[str, tuple[type, Callable[..., Method]]] = {}

#: method modules, simple to complex
METHOD_MODULES = ("sft", "random_select", "safeinstr", "dualselect", "seal", "pact", "tokenwise", "cwac")


def register(name: str, config_cls: type):
    """Class decorator: register a method under `name` with its config dataclass."""

    def wrap(cls):
        cls.name = name
        REGISTRY[name] = (config_cls, cls)
        return cls

    return wrap


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
