"""Two runs from scratch give the same records (docs/architecture.md, convention 13): every
experiment at its smoke scale, run twice into fresh folders, agrees record by record once the
timings are dropped."""

import pytest

from metasolve.evaluation.records import without_timings
from metasolve.experiments import EXPERIMENTS
from metasolve.runner import reproduce


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_a_rerun_from_scratch_gives_identical_records(name, tmp_path):
    first, second = (without_timings(reproduce(name, scale="smoke", out_dir=tmp_path / run,
                                               workers=1, progress=False)["records"])
                     for run in ("first", "second"))
    assert first, f"{name} wrote no records"
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        assert a == b


def test_without_timings_drops_timing_metrics_and_settings():
    records = [{"experiment": "e", "method": "m", "metric": "wall_time_ratio", "value": 0.5},
               {"experiment": "e", "method": "m", "metric": "mean_iterations", "value": 3.0,
                "train_seconds": 1.5, "n": 4}]
    assert without_timings(records) == [{"experiment": "e", "method": "m",
                                         "metric": "mean_iterations", "value": 3.0, "n": 4}]
