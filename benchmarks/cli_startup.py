"""How long the ``metasolve`` command takes to start: ``--help``, ``--version`` and ``list``.

Each command runs ``--repeats`` times in a fresh interpreter (``python -m metasolve ...``, the
same start as the console script), and the script prints the median, minimum and maximum
wall-clock per command; for scale, the same for ``python -c "import torch"``, which the command
line no longer pays for. The goal (issue 25) is under a second for ``--help`` and ``list``.

    python benchmarks/cli_startup.py                 # 7 repeats
    python benchmarks/cli_startup.py --repeats 15

Run it from the repository root after installing metasolve (or with ``PYTHONPATH=src``).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

COMMANDS = {
    "metasolve --help": [sys.executable, "-m", "metasolve", "--help"],
    "metasolve --version": [sys.executable, "-m", "metasolve", "--version"],
    "metasolve list": [sys.executable, "-m", "metasolve", "list"],
    "python -c 'import torch' (reference)": [sys.executable, "-c", "import torch"],
}


def seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7, help="runs per command (default 7)")
    args = parser.parse_args(argv)
    print(f"wall-clock of {args.repeats} runs per command, after one warm-up run:\n")
    print("| command | median s | min s | max s |")
    print("|---|---|---|---|")
    for name, command in COMMANDS.items():
        seconds(command)  # a first run warms the file cache; not counted
        times = [seconds(command) for _ in range(args.repeats)]
        print(f"| {name} | {statistics.median(times):.3f} | {min(times):.3f} | "
              f"{max(times):.3f} |")


if __name__ == "__main__":
    main()
