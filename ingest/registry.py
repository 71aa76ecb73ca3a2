"""Explicit registries of implementations by name (pySigma-style), instead of loading code by path."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T", bound=type)


def registrar(registry: dict[str, T], attribute: str, what: str) -> Callable[[T], T]:
    """A class decorator that files each class in ``registry`` under its ``attribute`` value."""

    def register(cls: T) -> T:
        key = getattr(cls, attribute)
        if key in registry and registry[key] is not cls:
            raise ValueError(f"two {what} for {key!r}: {registry[key]!r} and {cls!r}")
        registry[key] = cls
        return cls

    return register
