"""The three neural SCS experiments at smoke scale: records, plots, tables, and the deployment
into the real scs package."""

from __future__ import annotations

import pytest
from conftest import check_smoke_outputs

from metasolve.runner import reproduce

NAMES = ("neural-scs-kalman", "neural-scs-lasso", "neural-scs-lasso-variants")


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("neural-scs")
    return {name: reproduce(name, scale="smoke", out_dir=out, workers=1, progress=False)
            for name in NAMES}


def test_smoke_runs_write_records_plots_and_tables(smoke_runs):
    check_smoke_outputs(smoke_runs)


def test_every_method_reports_residuals_at_the_paper_iterations(smoke_runs):
    records = smoke_runs["neural-scs-kalman"]["records"]
    for method in ("scs", "scs_aa", "neural_mlp", "neural_recurrent"):
        for kind in ("fixed_point", "primal", "dual"):
            iterations = {r["iteration"] for r in records if r["method"] == method
                          and r["metric"] == f"median_{kind}_residual"}
            assert iterations == {1, 5, 10, 20, 30, 40, 50}


def test_deployment_counts_real_scs_iterations(smoke_runs):
    records = smoke_runs["neural-scs-kalman"]["records"]
    means = {(r["method"], r.get("deploy_iterations")): r["value"] for r in records
             if r["metric"] == "scs_mean_iterations"}
    warm = {(f"scs_{name}", k) for name in ("neural_mlp", "neural_recurrent", "torch_scs")
            for k in (2, 5)}
    assert set(means) == {("scs_cold", None), ("scs_cold_scs_aa", None),
                          ("scs_previous", None)} | warm
    assert all(value > 0 for value in means.values())
    totals = {(r["method"], r["deploy_iterations"]): r["value"] for r in records
              if r["metric"] == "scs_total_iterations"}
    assert set(totals) == warm
    for (method, k), total in totals.items():
        assert total == pytest.approx(means[(method, k)] + k)


def test_deployment_rows_name_each_start_and_its_iterations():
    from metasolve.evaluation.records import record
    from metasolve.experiments.neural_scs_common import deployment_rows

    name, label = "neural-scs-kalman", "Kalman, 4 steps"

    def start(method, mean, **extra):
        return [record(name, method, "scs_mean_iterations", mean, set=label, **extra),
                record(name, method, "iteration_ratio_to_cold", mean / 200, set=label, **extra)]

    records = (start("scs_cold", 200) + start("scs_neural_recurrent", 60, deploy_iterations=50)
               + [record(name, "scs_neural_recurrent", "scs_total_iterations", 110, set=label,
                         deploy_iterations=50)]
               + start("scs_learned", 190))  # a record written before starts named their counts
    rows = deployment_rows(records, name, [label])
    assert [row[1] for row in rows] == ["cold", "SCS+Neural-MLP (Alg. 2), 10 its",
                                        "SCS+Neural (Alg. 1, GRU), 50 its"]
    assert rows[2][2:4] == ["60.0", "110.0"]
    assert rows[2][5] == "0.300"
