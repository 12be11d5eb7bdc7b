"""The calibration a saved learned solver carries (what its safeguard reads): per calibrated
tolerance, the mean iterations of the learned method and of the classical method on the training
tasks, their ratio, and whether the safeguard runs the learned part at that tolerance
(``metasolve.learned.safeguard.learned_does_not_pay``).

    python benchmarks/calibration_ratios.py \\
        metasolve-out/autospec-eigen/quick/models/eigen.safetensors
"""

from __future__ import annotations

import argparse

import metasolve as ms
from metasolve.learned.safeguard import learned_does_not_pay


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a saved learned solver (.safetensors)")
    args = parser.parse_args(argv)
    model = ms.load(args.model)
    calibration = model.calibration
    if not calibration or "learned_mean_iterations" not in calibration:
        raise SystemExit(f"{args.model} carries no calibration with the learned method's counts")
    print(f"{calibration['tasks']} calibration tasks, cap {calibration['maxiter']}, monitor "
          f"{calibration['monitor']}")
    print()
    print("| rtol | learned | classical | learned / classical | the safeguard runs the learned "
          "part |")
    print("|---|---|---|---|---|")
    for rtol, mine, theirs in zip(calibration["rtols"], calibration["learned_mean_iterations"],
                                  calibration["mean_iterations"], strict=True):
        ratio = f"{mine / theirs:.3f}" if theirs > 0 else "-"
        runs = learned_does_not_pay(calibration, {"rtol": rtol,
                                                  "monitor": calibration["monitor"]}) is None
        print(f"| {rtol:g} | {mine:.2f} | {theirs:.2f} | {ratio} | {'yes' if runs else 'no'} |")


if __name__ == "__main__":
    main()
