"""Saving and loading trained solvers: round trips and every way a file can be wrong."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import save_file

import metasolve as ms
from metasolve.artifact import read_tensors, write_tensors


def _network_solver(family, seed=0):
    torch.manual_seed(seed)
    psi = ms.NetworkMetaSolver(family.n, {"x0": ms.BasisHead(ms.sine_basis(family.n))},
                               hidden=(15, 15), activation="silu")
    return ms.LearnedSolver(ms.Jacobi(), psi, family=family, monitor="error",
                            settings={"note": "test", "epochs": 3})


@pytest.fixture
def saved(tmp_path, poisson16):
    solver = _network_solver(poisson16)
    path = tmp_path / "model.safetensors"
    solver.save(path)
    return solver, path


def _assert_same_solver(a: ms.LearnedSolver, b: ms.LearnedSolver, tasks):
    sa, sb = a.metasolver.state_dict(), b.metasolver.state_dict()
    assert sa.keys() == sb.keys()
    for name in sa:
        assert sa[name].dtype == sb[name].dtype
        assert torch.equal(sa[name], sb[name]), name
    assert a.metasolver.config() == b.metasolver.config()
    assert type(a.method) is type(b.method) and a.method.config() == b.method.config()
    assert a.monitor == b.monitor
    with torch.no_grad():
        pa, pb = a.params(tasks.features), b.params(tasks.features)
        assert pa.keys() == pb.keys()
        for name in pa:
            assert torch.equal(pa[name], pb[name])
        xa = a.solve(tasks, rtol=1e-6, maxiter=5000)
        xb = b.solve(tasks, rtol=1e-6, maxiter=5000)
    assert torch.equal(xa.x, xb.x)
    assert torch.equal(xa.iterations, xb.iterations)


def test_round_trip_network_metasolver(saved, poisson16):
    solver, path = saved
    tasks = poisson16.sample(6, seed=7)
    for loaded in (ms.load(path), ms.LearnedSolver.load(path),
                   ms.load(path, family=ms.Poisson1DFamily(n=16, p=0.01))):
        assert isinstance(loaded, ms.LearnedSolver)
        _assert_same_solver(solver, loaded, tasks)
        assert loaded.family is not None
        assert loaded.family.config() == poisson16.config()
        assert loaded.settings == solver.settings
        assert not loaded.metasolver.training
    # The untrained random network does predict nonzero initial guesses: the check is not vacuous.
    assert solver.params(tasks.features)["x0"].abs().max() > 0


def test_round_trip_constant_metasolver_with_interval_head(tmp_path, poisson16):
    psi = ms.ConstantMetaSolver({"omega": ms.IntervalHead(0.5, 1.5)}, init={"omega": 0.8})
    solver = ms.LearnedSolver(ms.Jacobi(), psi, family=poisson16)
    tasks = poisson16.sample(4, seed=1)
    omega = solver.params(tasks.features)["omega"]
    assert omega.shape == (4,)
    assert torch.allclose(omega, torch.full((4,), 0.5 + torch.sigmoid(torch.tensor(0.8)).item(),
                                            dtype=torch.float64))
    path = tmp_path / "nested" / "omega.safetensors"
    solver.save(path)
    loaded = ms.load(path)
    assert isinstance(loaded.metasolver, ms.ConstantMetaSolver)
    assert isinstance(loaded.metasolver.heads["omega"], ms.IntervalHead)
    assert (loaded.metasolver.heads["omega"].low, loaded.metasolver.heads["omega"].high) == \
        (0.5, 1.5)
    _assert_same_solver(solver, loaded, tasks)


def test_load_in_a_fresh_process(saved, tmp_path):
    solver, path = saved
    tasks = solver.family.sample(5, seed=11)
    with torch.no_grad():
        expected = solver.solve(tasks, rtol=1e-6, maxiter=5000)
    out = tmp_path / "result.json"
    code = textwrap.dedent(f"""
        import json, sys
        import torch
        torch.set_num_threads(1)
        import metasolve as ms
        solver = ms.load({str(path)!r})
        tasks = solver.family.sample(5, seed=11)
        with torch.no_grad():
            sol = solver.solve(tasks, rtol=1e-6, maxiter=5000)
        json.dump({{"iterations": sol.iterations.tolist(), "x": sol.x.tolist(),
                   "family": solver.family.config()}}, open({str(out)!r}, "w"))
    """)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["iterations"] == expected.iterations.tolist()
    assert result["family"] == {"n": 16, "p": 0.01}
    assert torch.allclose(torch.tensor(result["x"], dtype=torch.float64), expected.x,
                          rtol=1e-12, atol=1e-14)


def _data_offset(path) -> int:
    raw = path.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    return 8 + header_len


def _assert_artifact_error(path, *fragments, **kwargs):
    with pytest.raises(ms.ArtifactError) as info:
        ms.load(path, **kwargs)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_corrupted_data_region(saved):
    _, path = saved
    raw = bytearray(path.read_bytes())
    start = _data_offset(path)
    assert len(raw) - start > 64
    for i in range(start + 16, start + 24):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))
    _assert_artifact_error(path, "checksum", str(path))


def test_truncated_file(saved):
    _, path = saved
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    _assert_artifact_error(path, str(path))
    path.write_bytes(raw[:5])  # not even the header length
    _assert_artifact_error(path, str(path))


@pytest.mark.parametrize("content", [b"this is not a safetensors file at all\n", b"",
                                     b"\x00" * 100])
def test_not_a_safetensors_file(tmp_path, content):
    path = tmp_path / "junk.safetensors"
    path.write_bytes(content)
    _assert_artifact_error(path, "safetensors")


def test_missing_file(tmp_path):
    _assert_artifact_error(tmp_path / "absent.safetensors", "absent.safetensors")


def test_plain_safetensors_file_without_metasolve_header(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(3)}, str(path))
    _assert_artifact_error(path, "not a metasolve artifact")
    save_file({"w": torch.zeros(3)}, str(path), metadata={"format": "something-else"})
    _assert_artifact_error(path, "not a metasolve artifact")
    save_file({"w": torch.zeros(3)}, str(path),
              metadata={"format": "metasolve-artifact", "format_version": "999"})
    _assert_artifact_error(path, "format version")


def test_mismatched_family(saved):
    _, path = saved
    _assert_artifact_error(path, "family", family=ms.Poisson1DFamily(n=16, p=0.0))
    _assert_artifact_error(path, "family", family=ms.Poisson1DFamily(n=8, p=0.01))


def test_tensors_not_matching_the_stored_architecture(saved, tmp_path):
    _, path = saved
    tensors, document = read_tensors(path)
    wrong = dict(tensors)
    wrong["metasolver.net.0.weight"] = torch.zeros(7, 16, dtype=torch.float64)
    write_tensors(tmp_path / "shape.safetensors", wrong, document)
    _assert_artifact_error(tmp_path / "shape.safetensors", "net.0.weight")
    missing = {k: v for k, v in tensors.items() if k != "metasolver.net.0.bias"}
    write_tensors(tmp_path / "missing.safetensors", missing, document)
    _assert_artifact_error(tmp_path / "missing.safetensors", "net.0.bias")


def test_a_checkpoint_is_not_a_solver(tmp_path):
    write_tensors(tmp_path / "ckpt.safetensors", {"a": torch.zeros(2)}, {"kind": "checkpoint"})
    _assert_artifact_error(tmp_path / "ckpt.safetensors", "checkpoint")


def test_save_writes_no_pickle_and_a_readable_json_description(saved):
    solver, path = saved
    tensors, document = read_tensors(path)
    assert document["kind"] == "learned_solver"
    assert document["method"] == {"name": "jacobi", "config": {"omega": 1.0}}
    assert document["family"] == {"name": "poisson1d", "config": {"n": 16, "p": 0.01}}
    assert document["metasolve_version"] == ms.__version__
    assert set(tensors) == {f"metasolver.{k}" for k in solver.metasolver.state_dict()}
    assert not list(path.parent.glob("*.tmp"))


def test_checksum_covers_the_json_description(saved, tmp_path):
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    _, path = saved
    with safe_open(str(path), framework="pt") as handle:
        header = dict(handle.metadata())
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    document = json.loads(header["document"])
    document["method"]["config"]["omega"] = 0.5  # valid JSON, different solver
    header["document"] = json.dumps(document, sort_keys=True)
    save_file(tensors, str(tmp_path / "tampered.safetensors"), metadata=header)
    _assert_artifact_error(tmp_path / "tampered.safetensors", "checksum")


def test_round_trip_keeps_heads_given_out_of_name_order(tmp_path):
    """Heads are split from the outputs in one fixed (name) order, so a meta-solver whose heads
    were given as {stage_weights, output_weights} predicts the same after a reload."""
    family = ms.MatrixSetFamily(torch.eye(3, dtype=torch.float64)[None] * 2, [1.0, 2.0, 3.0])
    psi = ms.ConstantMetaSolver({"stage_weights": ms.IdentityHead(3),
                                 "output_weights": ms.IdentityHead(3)},
                                init={"stage_weights": [0.1, 0.2, 0.3],
                                      "output_weights": [-1.0, -2.0, -3.0]})
    solver = ms.LearnedSolver(ms.R2N2(layers=3), psi, family=family)
    tasks = family.sample(2, seed=0)
    assert solver.params(tasks.features)["output_weights"][0].tolist() == [-1.0, -2.0, -3.0]
    solver.save(tmp_path / "r2n2.safetensors")
    loaded = ms.load(tmp_path / "r2n2.safetensors")
    for name, value in solver.params(tasks.features).items():
        torch.testing.assert_close(loaded.params(tasks.features)[name], value)
