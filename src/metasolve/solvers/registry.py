"""Methods by name, so artifacts (JSON) can name the method they were trained with."""

from __future__ import annotations

METHODS: dict[str, type] = {}


def register_method(cls):
    """Class decorator: make ``cls`` constructible from ``{"name": ..., "config": {...}}``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} must set a non-empty `name`")
    METHODS[cls.name] = cls
    return cls


def method_from_config(name: str, config: dict):
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; registered: {sorted(METHODS)}")
    return METHODS[name](**config)
