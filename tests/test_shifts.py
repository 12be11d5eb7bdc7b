"""The safeguard measured on shifted sets (evaluation.shifts): the three solves agree with a
reference where they converge, and the records say what the safeguard did."""

import pytest
import torch

import metasolve as ms
from metasolve.evaluation.shifts import (
    evaluate_saved_models,
    measure,
    reference_answer,
    shift_records,
    shift_table,
    wrong_answers,
)
from metasolve.experiments import poisson_jacobi
from metasolve.runner import reproduce


@pytest.fixture(scope="module")
def poisson_model(tmp_path_factory):
    out = tmp_path_factory.mktemp("shift")
    reproduce("poisson-jacobi", scale="smoke", out_dir=out, workers=1, progress=False)
    path = sorted((out / "poisson-jacobi" / "smoke" / "models").glob("*.safetensors"))[0]
    return ms.load(path)


def test_reference_answer_is_the_dense_solve_of_a_linear_system():
    matrix = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    rhs = torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=torch.float64)
    answer = reference_answer(ms.LinearSystem(matrix, rhs))
    torch.testing.assert_close(answer @ matrix.T, rhs)


def test_poisson_shifted_sets_lose_nothing_and_flag_the_shift(poisson_model):
    settings = poisson_jacobi.SCALES["smoke"]
    sets = poisson_jacobi.shifted_sets(settings, poisson_model, count=24)
    assert [s.shift for s in sets] == ["none", "P1 sources", "10x sources"]
    records = []
    for shifted in sets:
        measured = measure(poisson_model, shifted, chunk=10)
        assert measured["classical_cost"].shape == (len(shifted.tasks),)
        records += shift_records("poisson-jacobi", "m", shifted, measured)
    get = {(r["shift"], r["method"], r["metric"]): r["value"] for r in records}
    for shift in ("none", "P1 sources", "10x sources"):
        assert get[(shift, "safeguarded", "classical_solved_lost_fraction")] == 0.0
        for method in ("unguarded", "safeguarded", "classical"):
            assert get[(shift, method, "wrong_answer_fraction")] == 0.0
    # Every source ten times larger leaves the training features' envelope.
    assert get[("10x sources", "safeguarded", "out_of_distribution_fraction")] == 1.0
    table = shift_table(records)
    assert [row[2] for row in table.body] == ["none", "P1 sources", "10x sources"]


def test_wrong_answers_counts_only_converged_instances_off_the_reference():
    reference = torch.ones(4, 3, dtype=torch.float64)
    x = reference.clone()
    x[1] += 1e-6  # within WRONG_ANSWER_RTOL
    x[2] *= 2.0
    x[3] = float("nan")
    converged = torch.tensor([True, True, True, True])
    assert wrong_answers(x, reference, converged).tolist() == [False, False, True, True]
    assert not wrong_answers(x, reference, torch.zeros(4, dtype=torch.bool)).any()


def test_reproduce_with_shift_adds_the_shifted_records_and_their_table(tmp_path):
    result = reproduce("r2n2-linear", scale="smoke", out_dir=tmp_path, workers=1,
                       progress=False, shift="ood")
    shifted = [r for r in result["records"] if "shift" in r]
    assert {r["shift"] for r in shifted} == {"none", "shifted diagonal", "random symmetric",
                                             "noisier base"}
    assert {r["model"] for r in shifted} == {"a1", "a123", "multi"}
    assert result["tables"][-1].title.startswith("The safeguard on shifted sets")
    # The experiment's own tables never see the shifted records.
    plain = reproduce("r2n2-linear", scale="smoke", out_dir=tmp_path, workers=1,
                      progress=False)
    assert len(result["tables"]) == len(plain["tables"]) + 1
    for r in shifted:
        if r["metric"] == "classical_solved_lost_fraction":
            assert r["value"] == 0.0


def test_an_experiment_without_shifted_sets_refuses_the_shift(tmp_path, monkeypatch):
    from metasolve.experiments import EXPERIMENTS, get

    # Every shipped experiment has shifted sets (the requirement).
    assert all(hasattr(get(name), "shifted_sets") for name in EXPERIMENTS)
    monkeypatch.delattr(get("autospec-eigen"), "shifted_sets")
    with pytest.raises(ValueError, match="no shifted sets"):
        reproduce("autospec-eigen", scale="smoke", out_dir=tmp_path, shift="ood")
    with pytest.raises(ValueError, match="shift"):
        reproduce("r2n2-linear", scale="smoke", out_dir=tmp_path, shift="sideways")


def test_fixed_budget_shifted_sets_end_no_worse_than_the_classical_method(tmp_path):
    """The small-Lasso variants' shifted sets at SCS's fixed budget: the safeguarded mean
    residual is never above the classical one, since each instance keeps the better result."""
    from metasolve.experiments import neural_scs_lasso_variants as variants

    reproduce(variants.NAME, scale="smoke", out_dir=tmp_path, workers=1, progress=False)
    records = evaluate_saved_models(variants, variants.SCALES["smoke"],
                                    tmp_path / variants.NAME / "smoke" / "models", count=4)
    assert {r["shift"] for r in records} == {"none", "noise x10", "density x5"}
    ratios = [r["value"] for r in records
              if r["metric"] == "mean_final_relative_residual_ratio_to_classical"]
    assert len(ratios) == 6 and max(ratios) <= 1.0 + 1e-12


def test_reference_answer_after_torch_sets_its_threads():
    """The dense reference of the shifted sets is right after ``torch.set_num_threads`` (which
    every in-process run calls): on some CPU builds torch's batched LU then returns invalid
    pivots for matrices that need pivoting, such as the elastic beams."""
    from metasolve.evaluation.shifts import reference_answer

    problem = ms.ElasticBeamFamily(section=0.1).sample(8, seed=0).problem
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        answer = reference_answer(problem)
    finally:
        torch.set_num_threads(before)
    residual = problem.rhs - (problem.matrix @ answer.unsqueeze(2)).squeeze(2)
    relative = torch.linalg.vector_norm(residual, dim=1) / torch.linalg.vector_norm(
        problem.rhs, dim=1)
    assert relative.max() <= 1e-8
