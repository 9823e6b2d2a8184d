"""The claims suite: PAPER.md section 3's qualitative claims as controlled runs, seeds and verdicts.

Each claim compares arms; an arm is one run's probe top-1 (or one (t, block) point of that run's probe grid).
Runs are small diffs over a trajectory row, as the rows are over each other, and every run of the suite uses
one budget (conf/claims.yaml). Verdict rules (ldae/report/stats.py): a sign claim holds with the paper's sign
and |Δ| > 2 SE; "≈" holds if Δ ± 2 SE lies within ±tol; "≥" holds if Δ − 2 SE > −tol; a ∩ holds if the best
interior point beats both ends by > 2 SE; everything else is inconclusive.

The runner (`run_claims`) is resumable and splittable: a run folder with its results.json (and grid.json
where a claim reads the grid) is reused, so `claims=[...]` subsets can run as separate background jobs into
one folder, and `claims.json` is rewritten after every run.
"""

from __future__ import annotations

import logging
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

from ldae import keys
from ldae.report.stats import (CONTRADICTED, INCONCLUSIVE, approx_verdict, diff, geq_verdict, mean_se, shape_verdict,
                               sign_verdict)
from ldae.utils.io import atomic_write_json

log = logging.getLogger("ldae.claims")

# Runs: (experiment, overrides, fraction of the budget's epochs). Names are folder names.
RUNS: dict[str, tuple[str, tuple[str, ...], float]] = {
    **{f"07_d{d}": ("trajectory/07_patch_pca", (f"tokenizer.latent_dim={d}",), 1.0) for d in (8, 16, 64, 128, 256)},
    "07": ("trajectory/07_patch_pca", (), 1.0),  # d = 32
    **{row: (f"trajectory/{name}", (), 1.0) for row, name in (
        ("00", "00_dit_baseline"), ("01", "01_no_class_cond"), ("03", "03_no_adversarial"),
        ("04", "04_noise_schedule"), ("05", "05_patch_vae"), ("06", "06_patch_ae"), ("08", "08_predict_x0"),
        ("09", "09_no_input_scaling"), ("10", "10_image_input"), ("11", "11_image_output"),
        ("12", "12_predict_image"))},
    "12_pixels": ("trajectory/12_predict_image", ("tokenizer=none",), 1.0),  # Fig. 5: d = D, no tokenizer
    "12_single_level": ("trajectory/12_predict_image", ("schedule=single_level",), 1.0),
    "12_augment": ("trajectory/12_predict_image", ("data.crop=random_resized", "data.hflip=true"), 1.0),
    "12_half_epochs": ("trajectory/12_predict_image", (), 0.5),
}


@dataclass(frozen=True)
class Arm:
    label: str
    run: str
    t: int | None = None  # a point of the run's probe grid (t, split offset); None: the run's own probe_top1
    offset: int | None = None


@dataclass(frozen=True)
class Claim:
    id: str
    text: str
    kind: str  # sign | approx | geq | shape
    arms: tuple[Arm, ...]  # sign/approx/geq: (a, b), Δ = b − a; shape: ordered points along the axis
    expect: str = "+"  # the paper's sign of Δ (sign claims)
    paper: str = ""  # the paper's numbers
    # What is known of a contradiction (measured, or a hypothesis named as one): shown in its row if it occurs
    if_contradicted: str = ""

    @property
    def runs(self) -> list[str]:
        return list(dict.fromkeys(a.run for a in self.arms))


def _grid(run: str, points: list[tuple[str, int, int]]) -> tuple[Arm, ...]:
    return tuple(Arm(label, run, t, off) for label, t, off in points)


CLAIMS: tuple[Claim, ...] = (
    Claim("1", "∩-shaped probe in the PCA latent dim d (peak at low d)", "shape",
          tuple(Arm(f"d={d}", "07" if d == 32 else f"07_d{d}") for d in (8, 16, 32, 64, 128, 256)),
          paper="Table 2, PCA: 56.2 / 63.5 / 65.1 / 63.2 / 59.4 at d = 8..128"),
    Claim("2a", "patch-wise VAE ≥ conv VAE at the same d (16)", "geq",
          (Arm("conv VAE (04)", "04"), Arm("patch VAE (05)", "05")), paper="Table 2 at d = 16: 64.9 vs 63.4"),
    Claim("2b", "patch AE ≈ patch VAE (the KL term is unnecessary)", "approx",
          (Arm("patch VAE (05)", "05"), Arm("patch AE (06)", "06")), paper="64.9 vs 64.7"),
    Claim("2c", "PCA ≈ patch AE at the same d (16)", "approx",
          (Arm("patch AE (06)", "06"), Arm("PCA d=16", "07_d16")), paper="64.7 vs 63.5 (Table 2)"),
    Claim("3", "a pixel-space DAE (d = D) ≪ the low-d PCA latent", "sign",
          (Arm("pixels, d=D", "12_pixels"), Arm("PCA d=32 (l-DAE)", "12")), paper="Fig. 5: 23.6 at d = 768"),
    Claim("5", "removing class conditioning helps", "sign",
          (Arm("class-cond (00)", "00"), Arm("no class-cond (01)", "01")), paper="57.5 -> 62.5"),
    Claim("6", "linear-γ² beats linear-β", "sign",
          (Arm("linear β (03)", "03"), Arm("linear γ² (04)", "04")), paper="59.0 -> 63.4"),
    Claim("7", "ε-prediction > x0-prediction at the PCA step", "sign",
          (Arm("x0 (08)", "08"), Arm("ε (07)", "07")), paper="62.4 vs 65.1"),
    Claim("8", "no input scaling ≥ scaled", "geq",
          (Arm("γ_t scaling (08)", "08"), Arm("γ ≡ 1 (09)", "09")), paper="62.4 -> 63.6"),
    Claim("9a", "inverse PCA on the input costs nothing", "approx",
          (Arm("latent input (09)", "09"), Arm("image input (10)", "10")), paper="63.6 -> 63.6"),
    Claim("9b", "inverse PCA on the output costs nothing", "approx",
          (Arm("latent output (10)", "10"), Arm("image output (11)", "11")), paper="63.6 -> 63.9"),
    Claim("9c", "predicting the original image (w = 0.1 beyond d) is best", "sign",
          (Arm("V^T V x0 (11)", "11"), Arm("original x0 (12)", "12")), paper="63.9 -> 64.5"),
    Claim("10", "multi-level noise > a single level", "sign",
          (Arm("single level", "12_single_level"), Arm("multi-level (12)", "12")), paper="61.5 vs 64.5",
          if_contradicted="untested hypothesis: the budget. The single level (σ² = 1/3) trains every step near "
                          "the probe's small-noise input; linear γ² spends half its steps at σ² > 1, and the "
                          "multi-level l-DAE is still far from converged here (claim 14: +10 points from half "
                          "the budget to the budget)"),
    Claim("11", "augmentation changes little", "approx",
          (Arm("center crop (12)", "12"), Arm("random crop + flip", "12_augment")), paper="+0.5 with crops",
          if_contradicted="untested hypothesis: the budget. Crops down to 0.2 of the area and flips make each "
                          "step's task harder and the training images unlike the probe's center crops; the paper's "
                          "400 epochs leave time to absorb that, 10 epochs of 8000 images do not"),
    Claim("12", "the symmetric encoder/decoder split is best (∩ over the probed block)", "shape",
          _grid("12", [(f"split{o:+d}" if o else "split", 10, o) for o in (-2, -1, 0, 1, 2)]),
          paper="App. A: 58.5 .. 64.5 (12 of 24) .. 59.7"),
    Claim("13a", "probing at a small t ≥ clean (t = 0)", "geq",
          _grid("12", [("t=0", 0, 0), ("t=10", 10, 0)]), paper="App. A: 64.1 vs 64.5"),
    Claim("13b", "a large t hurts the clean-input probe", "sign",
          _grid("12", [("t=10", 10, 0), ("t=80", 80, 0)]), expect="-", paper="App. A: 64.5 -> 62.2"),
    Claim("14", "more epochs help", "sign",
          (Arm("half the epochs", "12_half_epochs"), Arm("the budget (12)", "12")), paper="400 < 800 < 1600 ep"),
)

LEFT_OUT = {
    "4": "generation quality ≠ representation quality: FID needs Inception weights, which cannot be fetched "
         "offline here (gen.fid.inception_path takes a local file)",
    "15": "the ordering against MoCo v3 and MAE: no MoCo v3 / MAE baselines are trained by ldae",
}


def claim_by_id(ids) -> list[Claim]:
    known = {c.id: c for c in CLAIMS}
    if ids is None:
        return list(CLAIMS)
    want = [str(i) for i in ids]
    bad = [i for i in want if i not in known]
    if bad:
        from ldae.config import ConfigError

        raise ConfigError(f"claims={want}: unknown claim ids {bad}; allowed: {', '.join(known)}")
    return [known[i] for i in want]


# ----------------------------------------------------------------------------------------------- verdicts

@dataclass
class Verdict:
    claim: Claim
    arms: list[dict] = field(default_factory=list)  # label, values per seed, mean, se
    delta: float | None = None
    se: float | None = None
    verdict: str = INCONCLUSIVE
    note: str = ""


def arm_values(arm: Arm, results: dict[str, dict[int, dict]]) -> list[float]:
    """An arm's top-1 per seed from {run: {seed: record}} (records hold probe_top1 and, where run, the grid)."""
    out = []
    for _, rec in sorted(results.get(arm.run, {}).items()):
        if arm.t is None:
            if isinstance(rec.get("probe_top1"), (int, float)):
                out.append(float(rec["probe_top1"]))
            continue
        hit = [g["top1"] for g in rec.get("grid", []) if g["t"] == arm.t and g["offset"] == arm.offset]
        out.extend(hit[:1])
    return out


def judge(claim: Claim, results: dict[str, dict[int, dict]], tol: float) -> Verdict:
    v = Verdict(claim)
    stats = []
    for arm in claim.arms:
        xs = arm_values(arm, results)
        m, se = mean_se(xs) if xs else (float("nan"), None)
        v.arms.append({"label": arm.label, "run": arm.run, "t": arm.t, "offset": arm.offset, "values": xs,
                       "mean": m if xs else None, "se": se})
        stats.append((m, se) if xs else None)
    if any(s is None for s in stats):
        v.note = "missing arms: " + ", ".join(a.label for a, s in zip(claim.arms, stats) if s is None)
        return v
    if claim.kind == "shape":
        v.verdict, best, detail = shape_verdict(stats)
        v.delta = min(detail["left"][0], detail["right"][0])
        ses = [d[1] for d in detail.values()]
        v.se = None if None in ses else max(ses)
        v.note = (f"best interior: {claim.arms[best].label}; Δ vs ends {detail['left'][0]:+.2f} / "
                  f"{detail['right'][0]:+.2f}")
        return v
    v.delta, v.se = diff(stats[0], stats[1])
    if claim.kind == "sign":
        v.verdict = sign_verdict(v.delta, v.se, claim.expect)
    elif claim.kind == "approx":
        v.verdict = approx_verdict(v.delta, v.se, tol)
    elif claim.kind == "geq":
        v.verdict = geq_verdict(v.delta, v.se, tol)
    else:
        raise ValueError(f"unknown claim kind {claim.kind!r}")
    if v.se is None:
        v.note = "one seed: no standard error"
    elif v.verdict == CONTRADICTED and claim.if_contradicted:
        v.note = claim.if_contradicted
    return v


def verdict_record(v: Verdict) -> dict:
    c = v.claim
    return {"id": c.id, "text": c.text, "kind": c.kind, "expect": c.expect if c.kind == "sign" else None,
            "paper": c.paper, "arms": v.arms, "delta": v.delta, "se_delta": v.se, "verdict": v.verdict,
            "note": v.note}


def _fmt(m, se) -> str:
    if m is None:
        return "—"
    return f"{m:.2f}" + (f" ± {se:.2f}" if se is not None else "")


def render_markdown(verdicts: list[dict], meta: dict) -> str:
    kinds = {"sign": "sign", "approx": f"≈ (±{meta['tol']:g})", "geq": f"≥ (−{meta['tol']:g})", "shape": "∩"}
    lines = [f"# Claims (PAPER.md section 3) at scale={meta['scale']}, data={meta['data']}, seeds={meta['seeds']}",
             "", f"Budget `{meta['budget_name']}` for every run: `{' '.join(meta['budget'])}`. Command: "
             f"`{meta['command']}`. Wall time {meta['wall_s']:.0f} s (this invocation; reused runs cost nothing).",
             "", "Linear-probe top-1 (%), mean ± SE over seeds; Δ = second arm − first (shape: the best interior "
             "point − the worse end), SE(Δ) = √(SE_a² + SE_b²). Verdict rules: a sign holds with the paper's sign "
             "and |Δ| > 2 SE (contradicted with the opposite sign); ≈ holds if Δ ± 2 SE lies within ±tol; ≥ holds "
             "if Δ − 2 SE > −tol; ∩ holds if the best interior point beats both ends by > 2 SE.", "",
             "| claim | what the paper says | kind | arms (mean ± SE) | Δ ± SE | verdict | paper | note |",
             "|---|---|---|---|---|---|---|---|"]
    for v in verdicts:
        arms = "; ".join(f"{a['label']}: {_fmt(a['mean'], a['se'])}" for a in v["arms"])
        kind = kinds[v["kind"]] + (f" ({v['expect']})" if v["kind"] == "sign" else "")
        d = "—" if v["delta"] is None else _fmt(v["delta"], v["se_delta"])
        lines.append(f"| {v['id']} | {v['text']} | {kind} | {arms} | {d} | **{v['verdict']}** | {v['paper']} | "
                     f"{v['note']} |")
    lines += ["", "Left out:"] + [f"- claim {k}: {why}" for k, why in LEFT_OUT.items()]
    counts = {}
    for v in verdicts:
        counts[v["verdict"]] = counts.get(v["verdict"], 0) + 1
    lines += ["", "Counts: " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))]
    return "\n".join(lines) + "\n"


def plot(verdicts: list[dict], path: Path, title: str) -> None:
    """One panel per claim: each arm's mean with ±1 SE bars and its seeds as dots."""
    from ldae.pictures import _pyplot, save_figure

    plt = _pyplot()

    n = len(verdicts)
    cols = min(5, n)
    rows = -(-n // cols)
    width = max(3.2 * cols, 6.4)  # a part of one claim still gets room for its title
    fig, axes = plt.subplots(rows, cols, figsize=(width, 2.8 * rows + 0.4), squeeze=False)
    for ax, v in zip(axes.flat, verdicts):
        xs = list(range(len(v["arms"])))
        for x, a in zip(xs, v["arms"]):
            if a["mean"] is None:
                continue
            ax.errorbar([x], [a["mean"]], yerr=[a["se"] or 0.0], fmt="o", color="C0", capsize=4)
            ax.scatter([x] * len(a["values"]), a["values"], s=8, color="C1", zorder=3)
        ax.set_xticks(xs, [a["label"] for a in v["arms"]], rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("probe top-1 (%)", fontsize=7)
        ax.set_title(f"{v['id']}: {v['verdict']}", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    # ~14 characters per inch at 9 pt: wrapped, the title stays inside a narrow figure
    fig.suptitle(textwrap.fill(title + " (bars: ±1 SE over seeds; dots: seeds)", int(width * 14)), fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)


# ------------------------------------------------------------------------------------------------ runner

def run_claims(cfg, out: str | Path, extra: list[str], budget: list[str], command: str) -> dict:
    """Run every run that the selected claims need (× seeds) into `out`, then judge them and write
    claims.json / claims.md / claims.png. Finished run folders are reused."""
    from ldae.config import ConfigError

    keys.check(cfg, keys.CLAIMS)  # seeds, tol, claims, budget_name: before any folder or run
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    claims = claim_by_id(cfg.claims)
    nseeds = int(cfg.seeds)
    if nseeds < 1:
        raise ConfigError(f"seeds={nseeds} must be an integer >= 1")
    seeds = [int(cfg.seed) + k for k in range(nseeds)]
    grid_runs = {a.run for c in claims for a in c.arms if a.t is not None}
    grid_ts = sorted({a.t for c in claims for a in c.arms if a.t is not None})
    grid_offsets = sorted({a.offset for c in claims for a in c.arms if a.t is not None})
    runs = list(dict.fromkeys(r for c in claims for r in c.runs))
    meta = {"scale": cfg.scale_name, "data": cfg.data.name, "seeds": seeds, "claims": [c.id for c in claims],
            "budget_name": cfg.budget_name, "budget": budget, "overrides": extra, "tol": float(cfg.tol),
            "command": command, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "wall_s": 0.0, "run_wall_s": {}}
    results: dict[str, dict[int, dict]] = {}
    t0 = time.time()

    def save(final: bool) -> dict:
        meta["wall_s"] = time.time() - t0
        meta["finished"] = final
        verdicts = [verdict_record(judge(c, results, float(cfg.tol))) for c in claims]
        doc = {"meta": meta, "claims": verdicts, "left_out": LEFT_OUT,
               "runs": {r: {str(s): rec for s, rec in by_seed.items()} for r, by_seed in results.items()}}
        atomic_write_json(out / "claims.json", doc)
        return doc

    total, k = len(runs) * len(seeds), 0
    for name in runs:
        for seed in seeds:
            k += 1
            t1 = time.time()
            rec = run_one(name, seed, out / name / f"seed{seed}", budget, extra,
                          grid=(grid_ts, grid_offsets) if name in grid_runs else None)
            results.setdefault(name, {})[seed] = rec
            meta["run_wall_s"][f"{name}/seed{seed}"] = rec.get("wall_s")
            save(final=False)
            msg = f"top-1 {rec['probe_top1']:.2f}%" if "probe_top1" in rec else f"FAILED ({rec.get('error')})"
            print(f"[claims {k}/{total}] {name} seed {seed}: {msg} in {time.time() - t1:.0f} s "
                  f"(total {time.time() - t0:.0f} s)", flush=True)
    doc = save(final=True)
    (out / "claims.md").write_text(render_markdown(doc["claims"], meta))
    plot(doc["claims"], out / "claims.png", f"ldae claims: scale={meta['scale']}, data={meta['data']}, "
                                              f"{len(seeds)} seed(s)")
    print(f"[claims] {out / 'claims.md'}, claims.json, claims.png", flush=True)
    return doc


def epochs_overrides(budget: list[str], fraction: float) -> list[str]:
    """The budget's epochs (and warm-up, in proportion) times `fraction`: claim 14's shorter run."""
    if fraction == 1.0:
        return []
    from ldae.report.compose import compose_train

    base = compose_train(budget)
    return [f"trainer.max_epochs={max(1, round(base.trainer.max_epochs * fraction))}",
            f"optim.warmup_epochs={base.optim.warmup_epochs * fraction:g}"]


def run_one(name: str, seed: int, folder: Path, budget: list[str], extra: list[str],
            grid: tuple[list[int], list[int]] | None) -> dict:
    """One run of the suite (reused when its folder holds results.json and, if asked, grid.json)."""
    import json

    from ldae.report.compose import compose_train

    res_path, grid_path = folder / "results.json", folder / "grid.json"
    rec: dict = {"dir": str(folder)}
    t0 = time.time()
    try:
        if res_path.is_file():
            res = json.loads(res_path.read_text())
        else:
            from ldae.train import run

            experiment, overrides, fraction = RUNS[name]
            rcfg = compose_train([f"experiment={experiment}", *budget, *epochs_overrides(budget, fraction),
                                  *overrides, *extra, f"seed={seed}"])
            res = run(rcfg, folder)
            if not res_path.is_file():  # auto-resume may have finished it in an earlier folder: keep a copy here
                atomic_write_json(res_path, res)
        rec.update({k: res[k] for k in ("probe_top1", "pretrain_loss", "latent_dim", "latent_dim_paper", "steps",
                                        "wall_s") if k in res})
        if grid is not None:
            if grid_path.is_file():
                rec["grid"] = json.loads(grid_path.read_text())["grid"]
            else:
                rec["grid"] = grid_of(res, folder, *grid)
                atomic_write_json(grid_path, {"grid": rec["grid"]})
    except Exception as e:  # one broken run must not cost the others: recorded, and the exit code says so
        log.exception("claims run %s seed %d failed", name, seed)
        rec["error"] = f"{type(e).__name__}: {e}".splitlines()[0]
    rec.setdefault("wall_s", time.time() - t0)
    return rec


def grid_of(res: dict, folder: Path, ts: list[int], offsets: list[int]) -> list[dict]:
    """The probe grid of a finished run: heads per (t, split + offset) on its last checkpoint."""
    from omegaconf import OmegaConf

    from ldae.checkpoints import module_from_checkpoint
    from ldae.evaluation import probe_grid

    ckpt = run_folder(folder) / "checkpoints" / "last.ckpt"
    module, run_cfg = module_from_checkpoint(str(ckpt))
    split, depth = module.backbone.encoder_depth, len(module.backbone.blocks)
    blocks = {o: split + o for o in offsets if 1 <= split + o <= depth}  # a shallow model reads fewer points
    OmegaConf.set_struct(run_cfg, False)
    points = probe_grid(run_cfg, module, folder / "grid", ts, sorted(blocks.values()))
    by_block = {b: o for o, b in blocks.items()}
    return [{**p, "offset": by_block[p["block"]]} for p in points]


def run_folder(folder: Path) -> Path:
    """Where a run's files are: its own folder, or the earlier one it auto-resumed into (RESUMED_IN.txt)."""
    ptr = folder / "RESUMED_IN.txt"
    return Path(ptr.read_text().strip()) if ptr.is_file() else folder
