"""Forged and malformed model files: each is an ArtifactError, found before anything is built.

The forged files carry a valid checksum (they are rewritten with the library's own
``write_tensors``, or hashed the same way), so what rejects them is the schema, not the
checksum. Memory is measured in a fresh process: ``tracemalloc`` for Python allocations and the
growth of ``ru_maxrss`` (peak resident memory) across the load, which also sees torch's.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import save_file

import metasolve as ms
from metasolve.artifact import FORMAT, FORMAT_VERSION, _digest, read_tensors, write_tensors
from metasolve.learned.solver import MAX_FAMILY_SIZE, MAX_PARAMETERS

# The extra memory a rejected file may cost (bytes).
BUDGET = 50 * 2**20


@pytest.fixture
def saved(tmp_path, poisson16):
    torch.manual_seed(0)
    psi = ms.NetworkMetaSolver(16, {"x0": ms.BasisHead(ms.sine_basis(16))}, hidden=(15, 15))
    solver = ms.LearnedSolver(ms.Jacobi(), psi, family=poisson16)
    path = tmp_path / "model.safetensors"
    solver.save(path)
    return solver, path


def _forge(path, target, edit):
    """``target``: the artifact at ``path`` with its document changed in place by ``edit``,
    written with a valid checksum."""
    tensors, document = read_tensors(path)
    edit(document)
    write_tensors(target, tensors, document)
    return target


def _forge_text(path, target, text: str):
    """``target``: the tensors at ``path`` with ``text`` as the document, bypassing the checks
    ``write_tensors`` makes (for documents no writer would produce), checksum valid."""
    tensors, _ = read_tensors(path)
    header = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "document": text,
              "sha256": _digest(tensors, text)}
    save_file(tensors, str(target), metadata=header)
    return target


def _rejects(path, *fragments, **kwargs) -> str:
    with pytest.raises(ms.ArtifactError) as info:
        ms.load(path, **kwargs)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


# --- forged sizes: rejected within the memory budget --------------------------------------------


def _huge_network(doc):
    doc["metasolver"]["hidden"] = [8000, 8000]


def _huge_family(n):
    def edit(doc):
        doc["family"]["config"]["n"] = n
    return edit


def _huge_basis(doc):
    doc["metasolver"]["heads"]["x0"]["config"]["shape"] = [10**6, 10**6]


FORGED = {
    "network-8000x8000": (_huge_network, "weights"),
    "family-n-6000": (_huge_family(6000), "declares size"),
    "family-n-1e7": (_huge_family(10**7), "declares size"),
    "basis-1e6x1e6": (_huge_basis, "weights"),
}

_CHILD = textwrap.dedent("""
    import json, os, resource, sys, tracemalloc
    import torch
    torch.set_num_threads(1)
    import metasolve as ms
    import metasolve.api  # the package imports its API on first use: import it before measuring
    forged = sys.argv[2]
    # ru_maxrss is a high-water mark: reset it (Linux: clear_refs 5 resets the peak RSS) and
    # compare the peak after the load with the resident size just before it, an upper bound of
    # the load's extra memory that earlier, freed allocations cannot hide or inflate.
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        with open("/proc/self/statm") as handle:
            current = int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    except OSError:  # not Linux: fall back to the peak so far
        current = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    try:
        if forged == "control":  # what a load that builds 200 MB would show
            torch.ones(25_000_000, dtype=torch.float64)
            raise ms.ArtifactError("control")
        ms.load(forged)
        outcome = "loaded"
    except ms.ArtifactError as exc:
        outcome = "ArtifactError: " + str(exc)
    except BaseException as exc:
        outcome = type(exc).__name__ + ": " + str(exc)[:300]
    traced = tracemalloc.get_traced_memory()[1]
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:  # the peak since the reset, where ru_maxrss also counts exited threads' peaks
        with open("/proc/self/status") as handle:
            after = next(int(line.split()[1]) for line in handle if line.startswith("VmHWM"))
    except (OSError, StopIteration):
        pass
    print(json.dumps({"outcome": outcome, "rss_growth": (after - current) * 1024,
                      "traced_peak": traced}))
""")


def _load_in_child(valid, forged) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(valid), str(forged)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _assert_cheap_rejection(valid, forged, fragment):
    result = _load_in_child(valid, forged)
    assert result["outcome"].startswith("ArtifactError"), result["outcome"]
    assert fragment in result["outcome"], result["outcome"]
    # ru_maxrss is in kilobytes on Linux (bytes on macOS, where this overestimates: still safe).
    assert result["rss_growth"] < BUDGET, result
    assert result["traced_peak"] < BUDGET, result
    print(f"{forged.name}: rss growth {result['rss_growth'] / 2**20:.1f} MiB, "
          f"traced peak {result['traced_peak'] / 2**20:.2f} MiB")
    return result


def test_the_memory_probe_sees_torch_allocations(saved):
    """The measurement below is not vacuous: 200 MB allocated by torch show in ru_maxrss
    (though not in tracemalloc)."""
    _, path = saved
    result = _load_in_child(path, "control")
    assert result["rss_growth"] > 150 * 2**20, result


@pytest.mark.parametrize("case", sorted(FORGED))
def test_forged_sizes_are_refused_before_building(saved, tmp_path, case):
    _, path = saved
    edit, fragment = FORGED[case]
    forged = _forge(path, tmp_path / f"{case}.safetensors", edit)
    _rejects(forged, fragment)  # in this process too, for the message
    _assert_cheap_rejection(path, forged, fragment)


def test_deeply_nested_document_is_refused_cheaply(saved, tmp_path):
    _, path = saved
    _, document = read_tensors(path)
    depth = 100_000
    # json.dumps would itself recurse; write the nesting out by hand.
    text = json.dumps(document, sort_keys=True)[:-1] + ', "settings": {"x": ' \
        + "[" * depth + "]" * depth + "}}"
    forged = _forge_text(path, tmp_path / "deep.safetensors", text)
    _rejects(forged, "nest")
    _assert_cheap_rejection(path, forged, "nest")
    # Nesting below the parser's recursion limit but above the schema's is refused too.
    text = json.dumps(document, sort_keys=True)[:-1] + ', "settings": {"x": ' \
        + "[" * 500 + "]" * 500 + "}}"
    _rejects(_forge_text(path, tmp_path / "deep500.safetensors", text), "deeper than")


def test_header_length_beyond_the_file_or_the_limit(saved, tmp_path):
    _, path = saved
    raw = path.read_bytes()
    absurd = tmp_path / "absurd.safetensors"
    absurd.write_bytes(struct.pack("<Q", 2**62) + raw[8:])
    _rejects(absurd, "header claims")
    _assert_cheap_rejection(path, absurd, "header claims")
    # A header that fits the file but exceeds the reader's limit.
    (length,) = struct.unpack("<Q", raw[:8])
    with pytest.raises(ms.ArtifactError, match="max_header_bytes"):
        read_tensors(path, max_header_bytes=length - 1)


# --- malformed documents -------------------------------------------------------------------------


MALFORMED = {
    "method-config-list": (lambda d: d["method"].update(config=[1, 2]), "method"),
    "method-not-object": (lambda d: d.update(method=["jacobi"]),
                          "['method'] must be a JSON object, got a list"),
    "method-unknown": (lambda d: d["method"].update(name="no-such-method"), "unknown method"),
    "method-name-number": (lambda d: d["method"].update(name=5),
                           "must be a JSON string, got a number"),
    "metasolver-missing": (lambda d: d.pop("metasolver"), "lacks the key(s) ['metasolver']"),
    "metasolver-kind-unknown": (lambda d: d["metasolver"].update(kind="oracle"),
                                "unknown meta-solver kind"),
    "hidden-string": (lambda d: d["metasolver"].update(hidden="15,15"), "hidden"),
    "hidden-floats": (lambda d: d["metasolver"].update(hidden=[15.0, 15]), "hidden"),
    "hidden-bool": (lambda d: d["metasolver"].update(hidden=[True]), "hidden"),
    "heads-list": (lambda d: d["metasolver"].update(heads=[1]), "heads"),
    "head-kind-unknown": (lambda d: d["metasolver"]["heads"]["x0"].update(kind="magic"),
                          "unknown head kind"),
    "head-config-list": (lambda d: d["metasolver"]["heads"]["x0"].update(config=[16, 16]),
                         "config"),
    "in-features-string": (lambda d: d["metasolver"].update(in_features="16"), "in_features"),
    "family-list": (lambda d: d.update(family=["poisson1d"]), "family"),
    "family-config-list": (lambda d: d["family"].update(config=[16]), "family"),
    "family-n-string": (lambda d: d["family"]["config"].update(n="16"), "n must be an int"),
    "monitor-unknown": (lambda d: d.update(monitor="vibes"), "monitor"),
    "settings-list": (lambda d: d.update(settings=[1]), "settings"),
    "unknown-key": (lambda d: d.update(extra=1), "unknown key"),
    "kind-missing": (lambda d: d.pop("kind"), "lacks the key(s) ['kind']"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_documents_are_artifact_errors(saved, tmp_path, case):
    _, path = saved
    edit, fragment = MALFORMED[case]
    _rejects(_forge(path, tmp_path / f"{case}.safetensors", edit), fragment)


@pytest.mark.parametrize("text,fragment", [("[1, 2, 3]", "is a list, expected an object"),
                                           ('"model"', "is a string"),
                                           ("{not json", "invalid")])
def test_document_that_is_not_an_object(saved, tmp_path, text, fragment):
    _, path = saved
    _rejects(_forge_text(path, tmp_path / "doc.safetensors", text), fragment)


def test_wrong_tensor_shape_names_the_tensor(saved, tmp_path):
    _, path = saved
    tensors, document = read_tensors(path)
    tensors["metasolver.net.2.weight"] = torch.zeros(15, 14, dtype=torch.float64)
    write_tensors(tmp_path / "shape.safetensors", tensors, document)
    _rejects(tmp_path / "shape.safetensors", "metasolver.net.2.weight", "(15, 14)", "(15, 15)")


def test_pickles_and_other_files_are_artifact_errors(saved, tmp_path):
    solver, _ = saved
    pickled = tmp_path / "model.pt"
    torch.save(solver.model.state_dict(), pickled)
    _rejects(pickled, "safetensors")
    plain = tmp_path / "plain.pkl"
    plain.write_bytes(pickle.dumps({"kind": "learned_solver"}))
    _rejects(plain, "safetensors")
    short = tmp_path / "short.safetensors"
    short.write_bytes(b"\x01\x00")
    _rejects(short, "too short")


# --- the limits are the caller's to raise ----------------------------------------------------


def test_limits_are_arguments_and_valid_files_still_load(saved, poisson16):
    solver, path = saved
    weights = sum(t.numel() for t in solver.model.state_dict().values())
    assert weights < MAX_PARAMETERS and 2 * 16 * 16 < MAX_FAMILY_SIZE
    _rejects(path, f"has {weights} weights", "max_parameters", max_parameters=weights - 1)
    _rejects(path, "declares size 512", "max_family_size", max_family_size=511)
    # The family limit only matters for a family that is rebuilt.
    ms.load(path, family=poisson16, max_family_size=1)
    loaded = ms.load(path, max_parameters=weights, max_family_size=512)
    tasks = poisson16.sample(4, seed=3)
    with torch.no_grad():
        a = solver.solve(tasks, rtol=1e-6, maxiter=5000)
        b = loaded.solve(tasks, rtol=1e-6, maxiter=5000)
    assert torch.equal(a.x, b.x) and torch.equal(a.iterations, b.iterations)


def test_declared_counts_match_the_built_modules():
    """The arithmetic counts the schema compares with the ceiling are exact."""
    from metasolve.learned import IntermittentSCS, RecurrentSCS

    parts = [
        ms.NetworkMetaSolver(16, {"x0": ms.BasisHead(ms.sine_basis(16)),
                                  "w": ms.IntervalHead(1, 2)}, hidden=(15, 7)),
        ms.ConstantMetaSolver({"a": ms.IdentityHead(3), "b": ms.PositiveHead(),
                               "c": ms.BoundedHead(2)}),
        ms.AutoSpecEngine(probe_steps=5, degree=7, paradigm="recurrence", hidden=(9,)),
        ms.AutoSpecEngine(probe_steps=5, degree=7, paradigm="filter", hidden=(9, 4), modes=0),
        RecurrentSCS(dim=12, hidden=5, encoder=(7, 3), scaled_corrections=True),
        IntermittentSCS(dim=12, context_dim=3, hidden=(5,), overparametrize=True, history=2,
                        access=[3, 40]),
    ]
    for part in parts:
        held = sum(t.numel() for t in part.state_dict().values())
        assert type(part).parameter_count(part.config()) == held, part
