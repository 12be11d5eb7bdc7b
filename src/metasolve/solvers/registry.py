"""Methods by name, so artifacts (JSON) can name the method they were trained with."""

from __future__ import annotations

from ..registry import Registry

METHODS = Registry("method")
register_method = METHODS.register
method_from_config = METHODS.build
