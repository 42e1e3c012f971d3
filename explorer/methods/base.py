"""The method registry: `@register(name, ConfigClass)` on a method class makes it runnable by name.
The protocol a method implements (Method, MethodBase, Decision, Context) is in explorer/methods/protocol.py;
it is re-exported here because every method module imports it from here."""

from __future__ import annotations

from typing import Callable

from explorer.data.batch import Batch
from explorer.methods.protocol import Context, Decision, Method, MethodBase, dist_of, help_field

__all__ = ["Batch", "Context", "Decision", "Method", "MethodBase", "REGISTRY", "dist_of", "help_field", "register"]


#: name -> (config dataclass, method class); filled by explorer.methods.__init__
REGISTRY: dict[str, tuple[type, Callable[..., Method]]] = {}


def register(name: str, config_cls: type):
    """Class decorator: register a method under `name` with its config dataclass."""

    def wrap(cls):
        cls.name = name
        REGISTRY[name] = (config_cls, cls)
        return cls

    return wrap
