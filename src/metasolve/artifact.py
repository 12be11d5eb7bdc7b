"""The file format of trained solvers and checkpoints: safetensors for tensors, JSON for the rest.

One file holds both: named tensors, and in the safetensors header a JSON document (what the file
is, its ``kind``, and whatever the writer needs to rebuild the object) plus a SHA-256 of the
document and the tensor bytes. Reading never unpickles anything; :func:`read_tensors` checks the
format tag, its version and the checksum, and raises :class:`ArtifactError` (a ``ValueError``)
saying what is wrong otherwise.

Bounded reading: a file is untrusted input until checked. :func:`read_tensors` refuses a header
longer than the file or than :data:`MAX_HEADER_BYTES` (4 MiB) before reading it, a JSON document
that is not an object, and nesting deeper than :data:`MAX_DEPTH` (32; parse-time recursion
errors included). :meth:`~metasolve.learned.solver.LearnedSolver.load` then checks the document
against its schema before building anything, with ceilings computed from the JSON alone: at
most ``MAX_PARAMETERS`` (10 million) weights and a family ``declared_size`` of at most
``MAX_FAMILY_SIZE`` (2**24 entries), both in :mod:`metasolve.learned.solver` and raised per call
with ``load(path, max_parameters=..., max_family_size=...)``.

The checksum proves integrity, not origin: whoever writes a file computes it, so it detects
corruption and truncation, not a forged file. Load files only from sources you trust (a file
chooses which registered classes are built); the limits bound what a forged one can cost.

This module knows the format only, not what is stored:
:meth:`~metasolve.learned.solver.LearnedSolver.save` and
:meth:`~metasolve.learned.solver.LearnedSolver.load` (``metasolve.save``, ``metasolve.load``)
write and rebuild trained solvers, and the trainers write their checkpoints, all through
:func:`write_tensors` and :func:`read_tensors` (docs/architecture.md, section 10).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import uuid
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

FORMAT = "metasolve-artifact"
FORMAT_VERSION = 1

#: The largest safetensors header (tensor index plus JSON document) :func:`read_tensors` reads,
#: in bytes. The header is parsed as a whole, so its length bounds what parsing can allocate;
#: the documents metasolve writes are a few kilobytes.
MAX_HEADER_BYTES = 4 * 2**20

#: The deepest nesting of lists and objects a JSON document may have. Documents metasolve
#: writes are a few levels deep; a deeply nested one would only exhaust the stack of whatever
#: walks it.
MAX_DEPTH = 32


class ArtifactError(ValueError):
    """A model or checkpoint file is missing, corrupted, truncated or does not match."""


def _digest(tensors: dict[str, torch.Tensor], document: str) -> str:
    """SHA-256 over the JSON document and every tensor's name, dtype, shape and bytes."""
    h = hashlib.sha256(document.encode())
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        h.update(name.encode())
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def tensor_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 of named tensors (names, dtypes, shapes and bytes): equal exactly when the
    tensors are bitwise equal."""
    return _digest(tensors, "")


def json_depth(value, limit: int | None = None) -> int:
    """The nesting depth of lists and dicts in ``value`` (0 for a scalar), counted without
    recursion, so an adversarially deep document cannot exhaust the stack; stops early once
    ``limit`` is exceeded (the depth returned is then ``limit + 1``)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if limit is not None and deepest > limit:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def write_tensors(path, tensors: dict[str, torch.Tensor], document: dict) -> Path:
    """Atomically write ``tensors`` with ``document`` (JSON) and a checksum in the header.

    The file is written under a unique temporary name beside ``path`` and then renamed over it,
    so a reader sees the old file or the new one, never a partial one, even when several
    processes save to the same path at once.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    # Refuse what read_tensors would refuse, so that no writer makes a file it cannot read.
    if json_depth(document, MAX_DEPTH) > MAX_DEPTH:
        raise ValueError(f"the document nests lists and objects deeper than {MAX_DEPTH} levels")
    text = json.dumps(document, sort_keys=True)
    if len(text.encode()) > MAX_HEADER_BYTES // 2:
        raise ValueError(f"the JSON document takes {len(text.encode())} bytes; at most "
                         f"{MAX_HEADER_BYTES // 2} fit in a header")
    header = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "document": text,
              "sha256": _digest(tensors, text)}
    # A temporary name of its own for every write, so that two processes saving the same path
    # never rename (or truncate) each other's half-written file; created exclusively, with the
    # permissions an ordinary file gets (``mkstemp`` would make it owner-only).
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "xb"):
            pass
        save_file(tensors, str(tmp), metadata=header)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _check_header_length(path: Path, max_header_bytes: int) -> None:
    """A safetensors file starts with its header's length (8 bytes, little-endian): refuse a
    file too short to hold it, or one whose header is longer than the file or the limit,
    before the header is read at all."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError as exc:
        raise ArtifactError(f"{path} cannot be read: {exc}") from exc
    if len(head) < 8:
        raise ArtifactError(f"{path} is not a readable safetensors file: {size} bytes, too "
                            "short for the header length (truncated?)")
    (length,) = struct.unpack("<Q", head)
    if length > size - 8:
        raise ArtifactError(f"{path} is not a readable safetensors file: its header claims "
                            f"{length} bytes but the file holds {size - 8} after the length "
                            "(truncated or not safetensors)")
    if length > max_header_bytes:
        raise ArtifactError(f"{path}: the safetensors header takes {length} bytes, more than "
                            f"the {max_header_bytes} this reader accepts (max_header_bytes)")


def read_tensors(path, max_header_bytes: int = MAX_HEADER_BYTES
                 ) -> tuple[dict[str, torch.Tensor], dict]:
    """Read and verify a file written by :func:`write_tensors`; the document is a JSON object.

    Raises :class:`ArtifactError` for a missing, short, truncated or non-safetensors file, a
    header longer than ``max_header_bytes``, a wrong format tag or version, a checksum mismatch,
    and a document that is not valid JSON, not an object, or nested deeper than
    :data:`MAX_DEPTH`.
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"no metasolve file at {path}")
    _check_header_length(path, max_header_bytes)
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ArtifactError(f"{path} is not a readable safetensors file (corrupted or "
                            f"truncated?): {exc}") from exc
    if header.get("format") != FORMAT:
        raise ArtifactError(f"{path} is a safetensors file but not a metasolve artifact "
                            f"(format tag {header.get('format')!r}, expected {FORMAT!r})")
    if header.get("format_version") != str(FORMAT_VERSION):
        raise ArtifactError(f"{path} has artifact format version "
                            f"{header.get('format_version')!r}; this metasolve reads "
                            f"{FORMAT_VERSION}")
    if header.get("sha256") != _digest(tensors, header.get("document", "")):
        raise ArtifactError(f"{path}: contents do not match their checksum (corrupted file)")
    try:
        document = json.loads(header["document"])
    except (KeyError, ValueError) as exc:  # JSONDecodeError is a ValueError
        raise ArtifactError(f"{path}: the JSON description is missing or invalid: {exc}") from exc
    except RecursionError as exc:
        raise ArtifactError(f"{path}: the JSON description nests too deeply to parse (at most "
                            f"{MAX_DEPTH} levels are allowed)") from exc
    if not isinstance(document, dict):
        raise ArtifactError(f"{path}: the JSON description is a {json_type(document)}, "
                            "expected an object")
    if json_depth(document, MAX_DEPTH) > MAX_DEPTH:
        raise ArtifactError(f"{path}: the JSON description nests lists and objects deeper than "
                            f"{MAX_DEPTH} levels")
    return tensors, document


_JSON_NAMES = {dict: "object", list: "list", str: "string", bool: "boolean",
               type(None): "null", int: "number", float: "number"}


def json_type(value) -> str:
    """The JSON name of a parsed value's type (``object``, ``list``, ...), for messages."""
    return _JSON_NAMES.get(type(value), type(value).__name__)


def json_type_name(cls: type) -> str:
    """The JSON name of a Python type, for messages."""
    return _JSON_NAMES.get(cls, cls.__name__)
