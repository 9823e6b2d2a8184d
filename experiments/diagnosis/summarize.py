"""Tables of the final-rows diagnosis (experiments/diagnosis/final_rows.sh) from its trajectory.json files.

    python experiments/diagnosis/summarize.py outputs/diagnosis [MORE_FOLDERS...] > experiments/results/....md

Probe top-1 mean ± SE over seeds per (run, row); differences with SE(Δ) = √(SE_a² + SE_b²) and a sign only
where |Δ| > 2 SE.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ldae.report.stats import diff, mean_se

ROWS = {7: "07_patch_pca", 9: "09_no_input_scaling", 10: "10_image_input", 11: "11_image_output",
        12: "12_predict_image"}


BASES: list[Path] = []  # the folders the runs' trajectory.json files are looked up in, in order


def find(name: str) -> Path | None:
    return next((b / name for b in BASES if (b / name / "trajectory.json").is_file()), None)


def load(folder: Path) -> dict[int, tuple[list[float], list[int], float]]:
    """{row: (top-1 per seed, steps per seed, mean wall s)} of one trajectory.json."""
    doc = json.loads((folder / "trajectory.json").read_text())
    out = {}
    for row, name in ROWS.items():
        recs = [r for r in doc["runs"].get(name, []) if isinstance(r.get("probe_top1"), (int, float))]
        if recs:
            out[row] = ([float(r["probe_top1"]) for r in recs], [int(r.get("steps", 0)) for r in recs],
                        sum(float(r.get("wall_s", 0)) for r in recs) / len(recs))
    return out


def fmt(m: float, se: float | None) -> str:
    return f"{m:.2f}" + (f" ± {se:.2f}" if se is not None else "")


def fmt_delta(a, b) -> str:
    d, se = diff(a, b)
    sign = "?" if se is None else ("+" if d > 2 * se else "−" if d < -2 * se else "≈")
    return f"{fmt(d, se)} ({sign})"


def budget_table(names: list[str]) -> list[str]:
    lines = ["| budget | steps | " + " | ".join(f"row {r:02d}" for r in ROWS) +
             " | 11 − 10 | 12 − 10 | 12 − 07 |", "|---" * (len(ROWS) + 5) + "|"]
    for name in names:
        if find(name) is None:
            continue
        res = load(find(name))
        stats = {r: mean_se(v[0]) for r, v in res.items()}
        steps = next(iter(res.values()))[1][0] if res else 0
        cells = [fmt(*stats[r]) if r in stats else "—" for r in ROWS]
        deltas = [fmt_delta(stats[a], stats[b]) if a in stats and b in stats else "—"
                  for a, b in ((10, 11), (10, 12), (7, 12))]
        lines.append(f"| {name} | {steps} | " + " | ".join(cells + deltas) + " |")
    return lines


def factor_table(baseline: str, factors: list[tuple[str, str]]) -> list[str]:
    ref = load(find(baseline))
    lines = ["| factor | row | baseline (2 ep) | with the factor | Δ vs baseline | with the factor − row 10 (2 ep) |",
             "|---|---|---|---|---|---|"]
    row10 = mean_se(ref[10][0])
    for name, what in factors:
        if find(name) is None:
            lines.append(f"| {what} | — | — | not run | — | — |")
            continue
        res = load(find(name))
        stats = {r: mean_se(v[0]) for r, v in res.items()}
        for r in sorted(stats):
            b = mean_se(ref[r][0])
            vs10 = fmt_delta(row10, stats[r]) if r != 10 else "—"
            lines.append(f"| {what} | {r:02d} | {fmt(*b)} | {fmt(*stats[r])} | {fmt_delta(b, stats[r])} | {vs10} |")
    return lines


def main() -> None:
    print("## Budget: probe top-1 (%) against pretraining steps (Fashion-MNIST, scale=cpu model, 8000 images)\n")
    print("\n".join(budget_table(["budget_ep2", "budget_ep5", "budget_ep10"])))
    print("\n## Factors at the trajectory budget (2 epochs = 124 steps)\n")
    print("\n".join(factor_table("budget_ep2", [
        ("lr_quarter", "lr / 4 (optim.base_lr=5e-4)"), ("pca_no_scaling", "tokenizer.scaling=none"),
        ("head_default_init", "model.adaln_zero=false"), ("residual_w1", "target.residual_weight=1.0"),
        ("basis_pixels_check", "none (row 11 again, on the code with output_basis)"),
        ("head_pca_basis", "target.output_basis=tokenizer")])))


if __name__ == "__main__":
    BASES.extend(Path(a) for a in (sys.argv[1:] or ["outputs/diagnosis"]))
    main()
