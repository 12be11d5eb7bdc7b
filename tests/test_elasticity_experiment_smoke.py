"""`metasolve reproduce elasticity-iccg` at the seconds-long smoke scale (a 4 x 1 x 1 beam)."""

from __future__ import annotations

import json

import pytest
from figures import check_run_figure
from typer.testing import CliRunner

import metasolve as ms
from metasolve.cli import app
from metasolve.runner import render_markdown, reproduce
from metasolve.solvers.iccg import factorization_fails, smallest_safe_shift

KEYS = {"experiment", "method", "metric", "value", "paper"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    return reproduce("elasticity-iccg", scale="smoke", out_dir=out, workers=1, progress=False)


def _value(records, method, metric, **where):
    found = [r for r in records if r["method"] == method and r["metric"] == metric
             and all(r.get(k) == v for k, v in where.items())]
    assert len(found) == 1, (method, metric, where, found)
    return found[0]


def test_records_carry_table2_rows_and_paper_numbers(smoke):
    records = smoke["records"]
    for r in records:
        assert KEYS <= set(r), r
        assert r["experiment"] == "elasticity-iccg"
    n = 5 * 2 * 2 * 3  # unknowns of the smoke scale's 4 x 1 x 1 beam
    base = _value(records, "baseline", "mean_iterations", loss=None)
    best = _value(records, "oracle", "mean_iterations")
    assert (base["paper"], best["paper"]) == (115.26, 44.53)
    assert base["N"] == n and 0 < base["value"] <= n
    # The oracle picks per task from a grid that contains the baseline's shift.
    assert best["value"] <= base["value"]
    alpha = _value(records, "baseline", "alpha")
    assert alpha["paper"] == 0.036 and alpha["value"] > 0
    learned = {(r["loss"], r["m"], r["train_eps"]): r for r in records
               if r["method"] == "learned" and r["metric"] == "mean_iterations"}
    assert set(learned) == {("L_m", 5, None), ("L_eps", None, 1e-6)}
    assert learned[("L_m", 5, None)]["paper"] == 183.90
    assert learned[("L_eps", None, 1e-6)]["paper"] == 52.02
    assert learned[("L_eps", None, 1e-6)]["train_cap"] == n
    fractions = [r for r in records if r["metric"] == "converged_fraction"]
    assert len(fractions) == 4 and all(0 <= r["value"] <= 1 for r in fractions)
    assert len([r for r in records if r["metric"] == "wall_time_ratio"]) == 2
    # The practitioner's solver on the same test matrices, timed in the same run.
    pyamg = [r for r in records if r["method"] == "pyamg_cg"]
    assert len(pyamg) == 2 and all(r["value"] > 0 for r in pyamg)
    assert len([r for r in records if r["metric"] == "wall_time_ratio_pyamg"]) == 2


def test_smallest_safe_shift_is_the_edge_of_failure():
    family = ms.ElasticBeamFamily(cells=(4, 1, 1))
    matrix = family.sample(16, seed=11).problem.matrix
    alpha = smallest_safe_shift(matrix)
    assert alpha > 0
    assert not factorization_fails(matrix, alpha).any()
    assert factorization_fails(matrix, alpha * 0.99).any()


def test_models_and_plot_are_written_and_the_table_renders(smoke):
    path = smoke["json"]
    assert json.loads(path.read_text()) == json.loads(json.dumps(smoke["records"]))
    assert smoke["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    check_run_figure("elasticity-iccg", smoke)
    models = sorted(path.parent.glob("models/*.safetensors"))
    assert len(models) == 2
    for model in models:
        solver = ms.load(model)
        assert isinstance(solver.method, ms.ICCG)
        assert isinstance(solver.family, ms.ElasticBeamFamily)
    text = render_markdown(smoke["records"])
    assert "| Psi_base |" in text and "(115.26)" in text and "(0.036" in text


def test_cli_lists_the_experiment():
    result = CliRunner().invoke(app, ["list"])
    assert result.exit_code == 0 and "elasticity-iccg" in result.output
