"""Tie-aware per-instance comparisons (docs/architecture.md, convention 13)."""

import math

import pytest
import torch

from metasolve.evaluation.metrics import TIE_RTOL, compare_instances, comparison_records
from metasolve.evaluation.render import format_comparison


def test_differences_within_the_tolerance_are_ties_and_beyond_it_count():
    reference = torch.ones(6, dtype=torch.float64)
    candidate = torch.tensor([1 - 1e-15, 1 + 1e-15, 1 - 0.5 * TIE_RTOL, 1 + 0.5 * TIE_RTOL,
                              1 - 2 * TIE_RTOL, 1 + 2 * TIE_RTOL], dtype=torch.float64)
    result = compare_instances(candidate, reference)
    assert (result.wins, result.ties, result.losses) == (1, 4, 1)
    assert result.fractions() == {"better": 1 / 6, "tied": 4 / 6, "worse": 1 / 6}
    # The strict comparison the tolerance replaces would call half of the round-off ties wins.
    assert int((candidate[:2] < reference[:2]).sum()) == 1


def test_non_finite_values_lose_against_finite_ones_and_tie_with_each_other():
    inf, nan = math.inf, math.nan
    result = compare_instances([nan, 1.0, inf, nan], [1.0, inf, nan, inf])
    assert (result.wins, result.ties, result.losses) == (1, 2, 1)


def test_values_both_below_atol_tie_and_zero_rtol_is_strict():
    assert compare_instances([1e-12], [1e-10], atol=1e-8).ties == 1
    assert compare_instances([1e-12], [1e-10]).wins == 1
    strict = compare_instances([1.0, 1.0, 2.0], [1.0 + 1e-12, 1.0, 1.0], rtol=0.0)
    assert (strict.wins, strict.ties, strict.losses) == (1, 1, 1)


@pytest.mark.parametrize(("kwargs", "word"), [({"rtol": -0.1}, "rtol"), ({"rtol": 1.0}, "rtol"),
                                              ({"atol": -1.0}, "atol"),
                                              ({"atol": math.nan}, "atol")])
def test_bad_tolerances_are_named(kwargs, word):
    with pytest.raises(ValueError, match=word):
        compare_instances([1.0], [1.0], **kwargs)


def test_instance_counts_must_match():
    with pytest.raises(ValueError, match="same number of instances"):
        compare_instances([1.0, 2.0], [1.0])


def test_a_fraction_prints_whole_only_when_exact():
    assert str(compare_instances([1.0] * 300, [1.0] * 300)) == "0% / 100% / 0%"
    assert str(compare_instances([1.0] * 299 + [3.0], [2.0] * 300)) == "99.7% / 0% / 0.3%"


def test_records_carry_the_tolerance_and_render_as_three_percentages():
    result = compare_instances([1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 2.0, 2.0])
    records = comparison_records("exp", "learned", "chebyshev", result, operator="A")
    assert [r["metric"] for r in records] == ["fraction_better_than_chebyshev",
                                              "fraction_tied_with_chebyshev",
                                              "fraction_worse_than_chebyshev"]
    assert all(r["tie_rtol"] == TIE_RTOL for r in records)
    assert format_comparison(records, "exp", "learned", "chebyshev", operator="A") \
        == "25.0% / 25.0% / 50.0%"
    assert format_comparison(records, "exp", "learned", "chebyshev", operator="B") == "-"
