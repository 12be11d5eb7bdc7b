"""Classes by name, so an artifact's JSON can say what it was built from and load can rebuild it.

One :class:`Registry` each for methods, task families, meta-solver heads and losses.
"""

from __future__ import annotations


class Registry(dict):
    """``name -> class``; ``register`` is a class decorator, ``build`` constructs from config.

    Args:
        what: what is registered, for messages ("method", "task family", ...).
        key: the class attribute holding the name.
        hint: appended to the unknown-name message.
    """

    def __init__(self, what: str, key: str = "name", hint: str = ""):
        super().__init__()
        self.what, self.key, self.hint = what, key, hint

    def register(self, cls):
        name = getattr(cls, self.key, "")
        if not name:
            raise ValueError(f"{cls.__name__} must set a non-empty `{self.key}`")
        self[name] = cls
        return cls

    def build(self, name: str, config: dict):
        if name not in self:
            raise ValueError(f"unknown {self.what} {name!r}; registered: {sorted(self)}"
                             f"{self.hint}")
        try:
            return self[name](**config)
        except TypeError as exc:
            raise ValueError(f"invalid configuration for {self.what} {name!r}: {exc}") from exc
