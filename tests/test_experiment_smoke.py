"""`metasolve reproduce poisson-jacobi` at the seconds-long smoke scale, as a function and a CLI."""

from __future__ import annotations

import json

import pytest
import torch
from figures import check_run_figure
from typer.testing import CliRunner

import metasolve as ms
from metasolve.cli import app
from metasolve.runner import reproduce

# GBMS paper, Table 3, Psi_base row, p = 0.01 (the smoke scale's only p).
PAPER_BASE_P001 = {1e-2: 30.15, 1e-4: 96.52, 1e-6: 164.41, 1e-8: 232.30}
KEYS = {"experiment", "method", "metric", "value", "paper"}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    return reproduce("poisson-jacobi", scale="smoke", out_dir=out, workers=1, progress=False)


def test_records_have_the_record_keys(smoke):
    records = smoke["records"]
    assert records
    for r in records:
        assert KEYS <= set(r), r
        assert r["experiment"] == "poisson-jacobi"
        assert r["method"] in {"baseline", "learned"}
    metrics = {r["metric"] for r in records}
    assert {"mean_iterations", "converged_fraction", "wall_time_ratio"} <= metrics


def test_baseline_records_carry_the_paper_numbers(smoke):
    base = [r for r in smoke["records"]
            if r["method"] == "baseline" and r["metric"] == "mean_iterations"]
    assert {r["test_eps"] for r in base} == set(PAPER_BASE_P001)
    for r in base:
        assert r["p"] == 0.01
        assert r["paper"] == pytest.approx(PAPER_BASE_P001[r["test_eps"]])
        # 32 test tasks: ours should still be in the paper's neighbourhood.
        assert abs(r["value"] - r["paper"]) < 0.1 * r["paper"]
    learned = [r for r in smoke["records"]
               if r["method"] == "learned" and r["metric"] == "mean_iterations"]
    assert {(r["loss"], r["m"], r["train_eps"]) for r in learned} == {
        ("L_m", 5, None), ("L_eps", None, 0.01), ("L_eps", None, 1e-4)}
    assert all(r["paper"] is not None for r in learned)
    assert all(r["value"] is not None and r["value"] >= 0 for r in learned)
    assert all(r["optimizer"] == "gauss-newton" and r["iterations"] == 2 for r in learned)
    # Continuation: the L~_eps rows are trained from the previous (larger eps) row's weights.
    warm = {(r["loss"], r["train_eps"]): r["warm_start_eps"] for r in learned}
    assert warm == {("L_m", None): None, ("L_eps", 0.01): None, ("L_eps", 1e-4): 0.01}


def test_the_surrogate_rows_form_one_chain_job_per_p(tmp_path):
    from dataclasses import replace

    from metasolve.experiments import poisson_jacobi

    rows = [cell["rows"] for cell in poisson_jacobi.cells(poisson_jacobi.FULL)]
    chains = [r for r in rows if len(r) > 1]
    assert chains == [[("L_eps", e) for e in (1e-2, 1e-4, 1e-6, 1e-8)]] * 2
    assert sorted(map(len, rows)) == [1] * 12 + [4, 4]  # 2 baselines, 10 L_m rows
    unchained = replace(poisson_jacobi.FULL, continuation=False)
    assert all(len(cell["rows"]) == 1 for cell in poisson_jacobi.cells(unchained))


def test_the_adam_scale_trains_with_appendix_c1s_optimizer(tmp_path):
    from dataclasses import replace

    from metasolve.experiments import poisson_jacobi

    settings = replace(poisson_jacobi.SMOKE, optimizer="adam")
    result = poisson_jacobi.run_cell({"settings": settings, "p": 0.01, "rows": [("L_m", 5)],
                                      "out_dir": str(tmp_path), "scale": "smoke"})
    learned = [r for r in result["records"] if r["metric"] == "mean_iterations"]
    assert learned and all(r["optimizer"] == "adam" and r["epochs"] == 2 for r in learned)
    assert list((tmp_path / "checkpoints").glob("*.safetensors"))


def test_json_and_plot_are_written(smoke):
    path = smoke["json"]
    assert path.is_file()
    assert json.loads(path.read_text()) == json.loads(json.dumps(smoke["records"]))
    assert smoke["plot"] is not None and smoke["plot"].is_file()
    assert smoke["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    check_run_figure("poisson-jacobi", smoke)
    models = list(path.parent.glob("models/*.safetensors"))
    assert len(models) == 3
    for model in models:
        assert isinstance(ms.load(model), ms.LearnedSolver)


def test_reproduce_rejects_unknown_names_and_scales(tmp_path):
    with pytest.raises(ValueError, match="unknown experiment"):
        reproduce("no-such-experiment", scale="smoke", out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="scale"):
        reproduce("poisson-jacobi", scale="huge", out_dir=tmp_path, progress=False)


runner = CliRunner()


def test_cli_list():
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    assert "poisson-jacobi" in result.output


def test_cli_reproduce_smoke_and_results(tmp_path):
    json_path = tmp_path / "records.json"
    result = runner.invoke(app, ["reproduce", "poisson-jacobi", "--smoke", "--out",
                                 str(tmp_path / "out"), "--workers", "1", "--no-progress",
                                 "--json", str(json_path)])
    assert result.exit_code == 0, result.output
    assert "164.41" in result.output  # the paper's number printed beside ours
    records = json.loads(json_path.read_text())
    assert any(r["metric"] == "mean_iterations" for r in records)
    assert list((tmp_path / "out").rglob("*.png"))

    rendered = runner.invoke(app, ["results", str(json_path)])
    assert rendered.exit_code == 0, rendered.output
    assert "| Psi_base |" in rendered.output and "(164.41)" in rendered.output


def test_cli_rejects_unknown_experiment(tmp_path):
    result = runner.invoke(app, ["reproduce", "no-such-experiment", "--smoke", "--out",
                                 str(tmp_path), "--workers", "1", "--no-progress"])
    assert result.exit_code != 0
    assert "unknown experiment" in result.output
    assert not list(tmp_path.iterdir())


def test_cli_rejects_quick_and_smoke_together(tmp_path):
    result = runner.invoke(app, ["reproduce", "poisson-jacobi", "--smoke", "--quick", "--out",
                                 str(tmp_path), "--workers", "1", "--no-progress"])
    assert result.exit_code != 0


def test_cli_results_rejects_a_bad_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a list"}')
    result = runner.invoke(app, ["results", str(bad)])
    assert result.exit_code != 0


@pytest.fixture(scope="module")
def robertson_smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("robertson")
    return reproduce("robertson-newton-sor", scale="smoke", out_dir=out, workers=1,
                     progress=False)


def test_robertson_smoke_records_and_files(robertson_smoke):
    records = robertson_smoke["records"]
    for r in records:
        assert KEYS <= set(r), r
        assert r["experiment"] == "robertson-newton-sor"
    base = {r["metric"]: r for r in records if r["method"] == "baseline"
            and r["meta_solver"] == "base"}
    assert base["relaxation"]["paper"] == pytest.approx(1.37)
    assert 1.0 <= base["relaxation"]["value"] < 2.0
    assert base["mean_iterations"]["paper"] == pytest.approx(70.51)
    assert base["converged_fraction"]["value"] > 0.5
    learned = {(r["meta_solver"], r["loss"]) for r in records if r["method"] == "learned"
               and r["metric"] == "mean_iterations"}
    assert learned == {("both", "L_m"), ("relax", "L_eps")}
    assert any(r["metric"] == "wall_time_ratio" and r["value"] > 0 for r in records)
    assert robertson_smoke["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    check_run_figure("robertson-newton-sor", robertson_smoke)
    models = list(robertson_smoke["json"].parent.glob("models/*.safetensors"))
    assert len(models) == 2
    for model in models:
        solver = ms.load(model)
        assert isinstance(solver.method, ms.NewtonSOR)
    text = ms.runner.render_markdown(records)
    assert "(70.51)" in text and "Psi_relax, L_eps (eps=1e-09)" in text


def test_cli_scale_names_a_scale_of_the_experiment(tmp_path):
    bad = runner.invoke(app, ["reproduce", "robertson-newton-sor", "--scale", "huge", "--out",
                              str(tmp_path), "--workers", "1", "--no-progress"])
    assert bad.exit_code != 0
    assert "paper-width" in bad.output  # the message lists the scales it has
    both = runner.invoke(app, ["reproduce", "robertson-newton-sor", "--scale", "smoke",
                               "--quick", "--out", str(tmp_path), "--no-progress"])
    assert both.exit_code != 0
    assert not list(tmp_path.iterdir())


def test_a_rerun_chain_resumes_every_row_where_it_ended(tmp_path):
    """Rerunning a finished continuation chain loads each row's checkpoint in turn, so the later
    rows see the same warm starts and give the same models and counts."""
    from metasolve.experiments import poisson_jacobi

    job = {"settings": poisson_jacobi.SMOKE, "p": 0.01, "rows": [("L_eps", 1e-2), ("L_eps", 1e-4)],
           "out_dir": str(tmp_path), "scale": "smoke"}
    first = poisson_jacobi.run_cell(dict(job))
    models = {path.name: ms.load(path).metasolver.state_dict()
              for path in (tmp_path / "models").glob("*")}
    second = poisson_jacobi.run_cell(dict(job))

    def counts(result):
        return [r["value"] for r in result["records"] if r["metric"] == "mean_iterations"]

    assert counts(first) == counts(second)
    assert [c["counts"] for c in first["cells"]] == [c["counts"] for c in second["cells"]]
    assert sorted(models) == ["p0.01-L_eps-0.0001.safetensors", "p0.01-L_eps-0.01.safetensors"]
    for name, weights in models.items():
        again = ms.load(tmp_path / "models" / name).metasolver.state_dict()
        assert weights.keys() == again.keys()
        assert all(torch.equal(weights[key], again[key]) for key in weights)
    # ... and the chain did move the weights: the two rows' models differ.
    a, b = models.values()
    assert not all(torch.equal(a[key], b[key]) for key in a)
