"""Compare runs side by side: a table (report.md, report.csv) and a plot (report.png), from local run folders or
from a wandb project. Seeds of one point are aggregated as mean ± std; trajectory rows come in the paper's order.

    python experiments/report.py multirun/2026-11-27_10-00-00            # a sweep folder (every results.json below)
    python experiments/report.py outputs/ldae outputs/trajectory --group trajectory --out /tmp/cmp
    python experiments/report.py --wandb ENTITY/PROJECT --group sweep/table2 --tag scale=cpu

Output: next to the (first) input folder, or --out; for --wandb, ./report-ENTITY-PROJECT unless --out.
The logic is ldae/report/runs.py.
"""

from __future__ import annotations

import argparse

from ldae.cli import fail
from ldae.errors import ConfigError
from ldae.report.runs import compare


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="*", help="run folders or sweep folders (every results.json below)")
    ap.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read the runs of a wandb project instead")
    ap.add_argument("--group", help="only this group (family), e.g. trajectory or sweep/table2")
    ap.add_argument("--tag", action="append", help="only runs with this tag (repeatable: all must match)")
    ap.add_argument("--out", help="output folder (default: the first folder; ./report-ENTITY-PROJECT for --wandb)")
    args = ap.parse_args()
    if bool(args.folders) == bool(args.wandb):
        ap.error("give run folders or --wandb ENTITY/PROJECT (one of the two)")
    try:
        compare(args.folders, args.wandb, args.group, args.tag, args.out)
    except ConfigError as e:
        fail("report", str(e))


if __name__ == "__main__":
    main()
