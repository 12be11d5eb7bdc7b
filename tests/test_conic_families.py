"""The cvxpy-canonicalized cone-program families (neural SCS paper, sec. 3.3, 4.4.1, 6) and the
``scs`` reference adapter: reproducible sampling, the paper's cone structures (Tables 1-2),
optimal values against cvxpy + Clarabel, warm starts, argument checks."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

cp = pytest.importorskip("cvxpy")
pytest.importorskip("scs")

from metasolve.baselines.scs_reference import (  # noqa: E402
    scs_problem_data,
    solve_batch_with_scs,
    solve_with_scs,
)
from metasolve.problems import ConeProgram, ConeSpec  # noqa: E402
from metasolve.tasks.base import family_from_config  # noqa: E402
from metasolve.tasks.conic import (  # noqa: E402
    PAPER_SIZES,
    CanonicalConeProgram,
    DynamicLassoFamily,
    KalmanFamily,
    LassoFamily,
)

torch.set_num_threads(1)

SMALL = {
    "lasso": lambda: LassoFamily(p=10, q=20),
    "lasso_fixed": lambda: LassoFamily(p=10, q=20, fixed_matrix_seed=3),
    "lasso_observations": lambda: LassoFamily(p=10, q=20, fixed_matrix_seed=3,
                                              observations=2),
    "dynamic_2": lambda: DynamicLassoFamily(p=10, q=20, steps=2),
    "dynamic_3": lambda: DynamicLassoFamily(p=10, q=20, steps=3),
    "kalman": lambda: KalmanFamily(steps=10),
}
SHARED = {"lasso_fixed", "lasso_observations", "dynamic_2", "dynamic_3", "kalman"}


def _structure(program: ConeProgram) -> dict:
    matrix = program.matrix if program.shared_matrix else program.matrix[0]
    return {"n": program.variables, "m": program.constraints,
            "nnz": int(matrix.count_nonzero()), "zero": program.cones.zero,
            "nonneg": program.cones.nonneg, "soc": list(program.cones.soc)}


@pytest.mark.parametrize("key", sorted(SMALL))
def test_sampling_is_reproducible_and_consistent(key):
    family = SMALL[key]()
    first, again, other = family.sample(3, seed=5), family.sample(3, seed=5), \
        family.sample(3, seed=6)
    prog = first.problem
    assert isinstance(prog, CanonicalConeProgram)
    for name in ("matrix", "rhs", "cost", "context", "offset"):
        assert torch.equal(getattr(prog, name), getattr(again.problem, name)), name
    assert not torch.equal(prog.rhs, other.problem.rhs)
    assert prog.dtype == torch.float64
    assert prog.cones == family.cones and prog.cones.dim == prog.constraints
    assert first.features is prog.context
    assert tuple(first.features.shape) == (3, family.feature_dim)
    assert prog.shared_matrix == (key in SHARED) == family.shared_matrix
    m, n = prog.constraints, prog.variables
    assert tuple(prog.matrix.shape) == ((m, n) if key in SHARED else (3, m, n))
    # The features are exactly the entries of [vec(A); b; c] that vary.
    idx = family.varying_entries
    for i in range(3):
        a = prog.matrix if prog.shared_matrix else prog.matrix[i]
        expected = torch.cat([a.reshape(-1)[idx["A"]], prog.rhs[i, idx["b"]],
                              prog.cost[i, idx["c"]]])
        assert torch.equal(first.features[i], expected)
    # Entries outside the varying set are identical across instances.
    fixed_b = np.setdiff1d(np.arange(m), idx["b"])
    assert torch.equal(prog.rhs[:, fixed_b], other.problem.rhs[:, fixed_b])
    # Instances drawn by draw_parameters are the ones sample() canonicalized.
    values = family.draw_parameters(3, torch.Generator().manual_seed(5))
    assert torch.equal(family.canonicalize(values).problem.rhs, prog.rhs)
    # index() keeps the extra fields.
    sub = prog.index(slice(1, 3))
    assert isinstance(sub, CanonicalConeProgram) and sub.variable_map == prog.variable_map
    assert torch.equal(sub.offset, prog.offset[1:3])
    # Config round trip through the registry, and pickling without the cvxpy cache.
    # (The rebuilt families create new cvxpy objects with other ids: the canonical layout
    # must not depend on them.)
    for copy in (family_from_config(family.name, family.config()),
                 pickle.loads(pickle.dumps(family))):
        redrawn = copy.sample(3, seed=5).problem
        for name in ("matrix", "rhs", "cost", "context"):
            assert torch.equal(getattr(redrawn, name), getattr(prog, name)), name
        assert redrawn.variable_map == prog.variable_map


def test_kalman_varies_only_in_zero_cone_rows_of_b():
    # Sec. 5.3.3: for Kalman filtering A (and c) are fixed; b varies only in zero-cone rows.
    family = KalmanFamily(steps=10)
    idx = family.varying_entries
    assert idx["A"].size == 0 and idx["c"].size == 0
    assert idx["b"].size == 2 * 10 and idx["b"].max() < family.cones.zero


@pytest.mark.parametrize("key, family", [
    ("lasso_p10_q20", lambda: LassoFamily(p=10, q=20)),
    ("lasso_p10_q40", lambda: LassoFamily(p=10, q=40, fixed_matrix_seed=0)),
    ("lasso_p10_q60", lambda: LassoFamily(p=10, q=20, fixed_matrix_seed=0, observations=3)),
    ("lasso_p50_q100", lambda: LassoFamily(p=50, q=100, fixed_matrix_seed=0)),
    ("dynamic_lasso_2_steps", lambda: DynamicLassoFamily(steps=2)),
    ("dynamic_lasso_3_steps", lambda: DynamicLassoFamily(steps=3)),
    ("kalman_50_steps", lambda: KalmanFamily(steps=50)),
])
def test_canonical_sizes_match_the_paper_tables(key, family):
    assert _structure(family().sample(1, seed=0).problem) == PAPER_SIZES[key]


@pytest.mark.parametrize("key", sorted(SMALL))
def test_scs_matches_cvxpy_clarabel(key):
    family = SMALL[key]()
    seed = 11
    prog = family.sample(1, seed=seed).problem
    values = family.draw_parameters(1, torch.Generator().manual_seed(seed))[0]
    problem = family.cvxpy_problem(values)
    # Our parametrized canonicalization equals cvxpy's own for this instance.
    data, _, _ = problem.get_problem_data(cp.SCS, solver_opts={"use_quad_obj": False})
    ours, _ = scs_problem_data(prog, 0)
    assert abs(ours["A"] - data["A"]).max() < 1e-12
    np.testing.assert_allclose(ours["b"], data["b"], atol=1e-12)
    np.testing.assert_allclose(ours["c"], data["c"], atol=1e-12)

    reference = problem.solve(solver=cp.CLARABEL)
    result = solve_with_scs(prog, 0, eps_abs=1e-8, eps_rel=1e-8)
    assert result["status"] == "solved"
    x = torch.from_numpy(result["x"])[None]
    value = float(prog.objective(x)[0])
    assert value == pytest.approx(result["objective"] + float(prog.offset[0]))
    assert abs(value - reference) <= 1e-5 * max(1.0, abs(reference))
    # The variable map reads the original variables out of x (the Lasso solution is unique:
    # F has full column rank).
    if key.startswith("lasso"):
        z = prog.variable(x, "z")[0].numpy()
        np.testing.assert_allclose(z, problem.variables()[0].value, atol=1e-4)
    for var in problem.variables():
        assert tuple(prog.variable(x, var.name()).shape) == (1, *var.shape)
    # The extracted variables satisfy the original constraints (checks offsets and the
    # column-major reshape).
    if key == "kalman":
        xs, w, v = (prog.variable(x, name)[0].numpy() for name in ("x", "w", "v"))
        np.testing.assert_allclose(xs[:, 1:], family.drift @ xs[:, :-1] + family.input @ w,
                                   atol=1e-6)
        np.testing.assert_allclose(values["y"], family.observation @ xs[:, :-1] + v, atol=1e-6)
    if key.startswith("dynamic"):
        z, v = (prog.variable(x, name)[0].numpy() for name in ("z", "v"))
        np.testing.assert_allclose(z[:, 1:], z[:, :-1] + family.delta + family.beta * v,
                                   atol=1e-6)


@pytest.mark.parametrize("key", ["lasso", "kalman"])
def test_warm_start_from_own_solution_is_much_faster(key):
    prog = SMALL[key]().sample(1, seed=2).problem
    cold = solve_with_scs(prog, 0, eps_abs=1e-6, eps_rel=1e-6)
    warm = solve_with_scs(prog, 0, eps_abs=1e-6, eps_rel=1e-6,
                          warm_start={k: cold[k] for k in ("x", "y", "s")})
    assert cold["status"] == warm["status"] == "solved"
    assert cold["iterations"] >= 50
    assert warm["iterations"] <= cold["iterations"] // 5
    assert warm["objective"] == pytest.approx(cold["objective"], rel=1e-5, abs=1e-6)
    for key_ in ("solve_time", "setup_time", "wall_time", "setup_wall_time"):
        assert warm[key_] >= 0


def test_batch_reuse_is_exact_without_normalization_and_scale_adaptation():
    prog = KalmanFamily(steps=10).sample(4, seed=0).problem
    settings = {"normalize": False, "adaptive_scale": False, "eps_abs": 1e-6, "eps_rel": 1e-6}
    reused = solve_batch_with_scs(prog, **settings)  # reuse=None picks reuse here
    fresh = solve_batch_with_scs(prog, reuse=False, **settings)
    assert [r["reused"] for r in reused] == [False, True, True, True]
    assert not any(r["reused"] for r in fresh)
    assert [r["iterations"] for r in reused] == [r["iterations"] for r in fresh]
    for a, b in zip(reused, fresh, strict=True):
        np.testing.assert_allclose(a["x"], b["x"], atol=1e-10)
    # Default settings: no reuse unless asked; forced reuse still solves every instance.
    assert not any(r["reused"] for r in solve_batch_with_scs(prog, indices=[0, 1]))
    forced = solve_batch_with_scs(prog, reuse=True, indices=[2, 3])
    assert [r["status"] for r in forced] == ["solved", "solved"]


def test_scs_adapter_rejects_bad_input():
    prog = LassoFamily(p=4, q=8).sample(2, seed=0).problem
    with pytest.raises(ValueError, match="index"):
        solve_with_scs(prog, 2)
    with pytest.raises(TypeError, match="unknown keys"):
        solve_with_scs(prog, 0, warm_start={"z": np.zeros(3)})
    with pytest.raises(ValueError, match=r"warm_start\['x'\]"):
        solve_with_scs(prog, 0, warm_start={"x": np.zeros(3)})
    with pytest.raises(TypeError):
        solve_with_scs(prog, 0, not_a_setting=1)
    with pytest.raises(ValueError, match="warm_starts"):
        solve_batch_with_scs(prog, warm_starts=[None])


@pytest.mark.parametrize("build, argument", [
    (lambda: LassoFamily(p=-1), "p"),
    (lambda: LassoFamily(q=0), "q"),
    (lambda: LassoFamily(density=0.0), "density"),
    (lambda: LassoFamily(density=1.5), "density"),
    (lambda: LassoFamily(noise=-0.1), "noise"),
    (lambda: LassoFamily(observations=0), "observations"),
    (lambda: LassoFamily(fixed_matrix_seed=-1), "fixed_matrix_seed"),
    (lambda: DynamicLassoFamily(p=-3), "p"),
    (lambda: DynamicLassoFamily(steps=0), "steps"),
    (lambda: DynamicLassoFamily(density=0.0), "density"),
    (lambda: KalmanFamily(steps=0), "steps"),
    (lambda: KalmanFamily(rho=0.0), "rho"),
    (lambda: KalmanFamily(outlier_fraction=1.5), "outlier_fraction"),
])
def test_bad_arguments_raise_value_error_naming_them(build, argument):
    with pytest.raises(ValueError, match=argument):
        build()


def test_canonical_program_validates_its_extra_fields():
    prog = KalmanFamily(steps=2).sample(2, seed=0).problem
    fields = {"matrix": prog.matrix, "rhs": prog.rhs, "cost": prog.cost, "cones": prog.cones}
    with pytest.raises(ValueError, match="offset"):
        CanonicalConeProgram(**fields, offset=torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="variable_map"):
        CanonicalConeProgram(**fields, variable_map=(("x", prog.variables, (2,)),))
    with pytest.raises(KeyError, match="nope"):
        prog.variable(torch.zeros(2, prog.variables, dtype=torch.float64), "nope")
    assert isinstance(prog.cones, ConeSpec)
