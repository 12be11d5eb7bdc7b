"""The three R2N2 experiments at smoke scale: records, plots, tables and the facts that hold at
any scale (GMRES bounds the R2N2's first step; the certificate matches what the runs show)."""

from __future__ import annotations

import math

import pytest
from conftest import check_smoke_outputs

from metasolve.runner import reproduce

NAMES = ("r2n2-linear", "r2n2-chandrasekhar", "r2n2-vanderpol")


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("r2n2")
    return {name: reproduce(name, scale="smoke", out_dir=out, workers=1, progress=False)
            for name in NAMES}


def _values(records, metric, **where):
    return [r["value"] for r in records if r["metric"] == metric
            and all(r.get(k) == v for k, v in where.items())]


def test_smoke_runs_write_records_plots_and_tables(smoke_runs):
    check_smoke_outputs(smoke_runs)


def test_gmres_bounds_the_r2n2_step_whatever_its_training(smoke_runs):
    records = smoke_runs["r2n2-linear"]["records"]
    fractions = _values(records, "delta_r_ratio_at_most_one")
    assert len(fractions) == 7 and all(f == 1.0 for f in fractions)
    assert max(_values(records, "delta_r_ratio_max")) <= 1 + 1e-9


def test_certificate_agrees_with_the_runs(smoke_runs):
    """A norm below 1 contracts every residual; a spectral radius above 1 with a growing
    residual is the divergence SM4 predicts."""
    records = smoke_runs["r2n2-linear"]["records"]
    for name in ("A1", "A2", "A3", "A7", "A8"):
        norm = _values(records, "certificate_norm", set=name)[0]
        radius = _values(records, "certificate_spectral_radius", set=name)[0]
        final = _values(records, "final_mean_relative_residual", set=name)[0]
        assert radius <= norm * (1 + 1e-12)
        if norm < 1:
            assert final <= norm ** 5 * 1.000001
        if final is None or not math.isfinite(final) or final > 1:
            assert radius > 1


def test_equal_budget_is_recorded(smoke_runs):
    chandrasekhar = smoke_runs["r2n2-chandrasekhar"]["records"]
    assert _values(chandrasekhar, "evaluations_per_iteration", method="r2n2") == [3.0]
    assert all(v >= 3 for v in _values(chandrasekhar, "evaluations_per_iteration",
                                       method="nk_gmres"))
    vanderpol = smoke_runs["r2n2-vanderpol"]["records"]
    assert {r["order_p"] for r in vanderpol} == {3, 8}
    assert len(_values(vanderpol, "mean_error_ratio")) == 8
