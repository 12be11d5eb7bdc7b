"""A Sphinx directive for the API reference: ``metasolve-module``.

``.. metasolve-module:: metasolve.solvers`` documents the module's docstring and every name of
its ``__all__`` (or, without one, every public class and function defined in it) with autodoc,
leaving out the names that ``import metasolve as ms`` already exposes, which the page of the
top-level API documents. So the reference stays complete when a name is added to a module.
"""

from __future__ import annotations

import importlib
import inspect

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective
from sphinx.util.nodes import nested_parse_with_titles


def public_names(module) -> list[str]:
    """The module's ``__all__``, or its public classes and functions defined in it."""
    names = getattr(module, "__all__", None)
    if names is not None:
        return list(names)
    return [name for name, value in vars(module).items()
            if not name.startswith("_") and (inspect.isclass(value) or inspect.isfunction(value))
            and getattr(value, "__module__", None) == module.__name__]


def undocumented_elsewhere(module) -> list[str]:
    """``public_names(module)`` less the objects the top-level package re-exports."""
    import metasolve

    top = {id(getattr(metasolve, name)) for name in metasolve.__all__}
    return [name for name in public_names(module) if id(getattr(module, name)) not in top]


def autodoc_lines(module_name: str, name: str, value) -> list[str]:
    target = f"{module_name}.{name}"
    if inspect.isclass(value):
        return [f".. autoclass:: {target}", "   :members:", ""]
    if inspect.isfunction(value) or inspect.isbuiltin(value):
        return [f".. autofunction:: {target}", ""]
    return [f".. autodata:: {target}", "   :no-value:", ""]


class MetasolveModule(SphinxDirective):
    required_arguments = 1
    has_content = False

    def run(self) -> list[nodes.Node]:
        module_name = self.arguments[0]
        module = importlib.import_module(module_name)
        lines = [f".. automodule:: {module_name}", ""]
        for name in undocumented_elsewhere(module):
            lines += autodoc_lines(module_name, name, getattr(module, name))
        container = nodes.container()
        nested_parse_with_titles(self.state, StringList(lines, source=self.get_source_info()[0]),
                                 container)
        return container.children


BUILTIN_DOCSTRINGS = {inspect.getdoc(t).strip() for t in (dict, list, tuple, set, frozenset, str,
                                                             int, float, bool, type, object)}


def drop_type_docstring(app, what, name, obj, options, lines) -> None:
    """A constant or property without a docstring of its own would show the docstring of its
    value's built-in type (``dict``'s, ...); show nothing instead."""
    if what not in ("data", "attribute", "property"):
        return
    text = "\n".join(lines).strip()
    if text and text in BUILTIN_DOCSTRINGS:
        lines.clear()


def import_object(name: str):
    """The object a dotted name stands for (a module, or attributes of one), or None."""
    parts = name.split(".")
    for split in range(len(parts), 0, -1):
        try:
            value = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        try:
            for attribute in parts[split:]:
                value = getattr(value, attribute)
        except AttributeError:
            return None
        return value
    return None


def documented_names(env) -> dict[int, str]:
    """``id(object) -> the name it is documented under``, for the classes and functions of the
    reference (built once per build)."""
    names = getattr(env, "_metasolve_documented", None)
    if names is None:
        names = {}
        for name, entry in env.get_domain("py").objects.items():
            if entry.objtype in ("class", "function", "exception", "data"):
                value = import_object(name)
                if value is not None and not isinstance(value, (int, float, str)):
                    names.setdefault(id(value), name)
        env._metasolve_documented = names
    return names


def resolve_alias(app, env, node, contnode):
    """Docstrings name objects where they are defined (``metasolve.solvers.jacobi.Jacobi``);
    the reference documents them where users import them (``metasolve.Jacobi``). Link the one
    to the other."""
    target = node.get("reftarget", "")
    if node.get("refdomain") != "py" or not target.startswith("metasolve."):
        return None
    parts = target.split(".")
    names = documented_names(env)
    for split in range(len(parts), 1, -1):
        value = import_object(".".join(parts[:split]))
        if value is None or id(value) not in names:
            continue
        alias = ".".join([names[id(value)], *parts[split:]])
        if alias == target:
            return None
        return env.get_domain("py").resolve_xref(env, node["refdoc"], app.builder,
                                                 node["reftype"], alias, node, contnode)
    return None


def setup(app):
    app.add_directive("metasolve-module", MetasolveModule)
    app.connect("autodoc-process-docstring", drop_type_docstring)
    app.connect("missing-reference", resolve_alias)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
