"""The safeguard's guess test applied to every instance, against the default (only outside the
training features): the saved models of a ``metasolve reproduce`` run on the experiment's shifted
sets (the same sets and table as ``metasolve reproduce NAME --shift ood``).

    metasolve reproduce poisson-jacobi --quick
    python benchmarks/safeguard_gbms.py metasolve-out poisson-jacobi quick --check-guess always

Prints the shifted-sets table (mean iterations unguarded, safeguarded and classical, and the
safeguard's counts) for the chosen ``--check-guess`` (``outside``, ``always`` or ``never``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from metasolve.evaluation.render import markdown_tables
from metasolve.evaluation.shifts import evaluate_saved_models, shift_table
from metasolve.experiments import get
from metasolve.learned.safeguard import GUESS_CHECKS


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the --out folder of the reproduce run")
    parser.add_argument("name", help="the experiment (one with shifted sets)")
    parser.add_argument("scale", help="the scale it ran at (quick, full, ...)")
    parser.add_argument("--check-guess", choices=GUESS_CHECKS, default="outside",
                        help="which instances' learned guesses the safeguard tests")
    args = parser.parse_args(argv)
    module = get(args.name)
    records = evaluate_saved_models(module, module.SCALES[args.scale],
                                    args.out / args.name / args.scale / "models",
                                    check_guess=args.check_guess)
    print(markdown_tables([shift_table(records)]))


if __name__ == "__main__":
    main()
