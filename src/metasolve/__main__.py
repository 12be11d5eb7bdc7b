"""``python -m metasolve``: the ``metasolve`` command."""

from .cli import app

app(prog_name="metasolve")
