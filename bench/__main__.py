"""`python -m bench [--quick] [--json OUT]` (what `python -m tvr_demo bench` runs): the suite, its tables, its JSON."""

import argparse

from bench.run import run_suite


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer rows and sizes (a few minutes on 2 cores)")
    parser.add_argument("--json", default=None, help="write the results here (bench/results/NAME.json for the README)")
    args = parser.parse_args()
    run_suite(quick=args.quick, json_out=args.json)


if __name__ == "__main__":
    main()
