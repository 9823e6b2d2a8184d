"""The trajectory of PAPER.md Fig. 6: rows (or some) x seeds run in one process, each row composed from its
config (conf/experiment/trajectory/, each the previous row plus one change), the table of signs against the paper
(trajectory.md), the numbers (trajectory.json) and the plot (trajectory.png). The CLI: experiments/trajectory.py.

Each run is a subfolder `NN_name/seedS/` of the output folder with its own results.json; trajectory.json is
rewritten atomically after every run, and a rerun into the same folder resumes at the first unfinished row.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ldae import keys
from ldae.config import ConfigError
from ldae.paper import STEPS  # (config name, change, short label, paper top-1, paper FID)
from ldae.plan import chance_top1
from ldae.report.compose import budget_note, budget_overrides, compose_train
from ldae.report.compose import user_overrides as compose_user_overrides
from ldae.report.stats import mean_std
from ldae.rules import is_int
from ldae.utils.io import DiskFullError, atomic_write_json

log = logging.getLogger("ldae.trajectory")

# Keys of conf/trajectory.yaml that are not train.yaml's: never passed on to a row.
OWN_KEYS = ("steps", "seeds", "budget", "baselines_once")


# ---------------------------------------------------------------------------------------------- pure logic

def step_sign(delta: float, se: float | None) -> str:
    """'+' / '−' where |Δ| > 2 SE, '≈' where it is not, '?' where SE cannot be estimated (one seed)."""
    if se is None:
        return "?"
    if abs(delta) > 2 * se:
        return "+" if delta > 0 else "−"
    return "≈"


def paper_sign(delta: float) -> str:
    return "+" if delta > 0 else "−" if delta < 0 else "="


def agreement(ours: str, paper: str) -> str:
    """yes / no where our sign is resolved, '≈' where it is not, 'n/a' without a standard error."""
    if ours == "?":
        return "n/a (1 seed)"
    if ours == "≈":
        return "yes (both ≈)" if paper == "=" else "≈"
    return "yes" if ours == paper else "no"


def format_fid(values: list) -> str:
    """The FID column: a number (mean over seeds) where measured, else what results.json says."""
    if not values:
        return "—"
    nums = [v for v in values if isinstance(v, (int, float))]
    if nums:
        m, s = mean_std(nums)
        return f"{m:.1f}" + (f" ± {s:.1f}" if s is not None else "")
    return str(values[0])


def summarize(runs: dict[str, list[dict]], steps: list[int]) -> list[dict]:
    """Table rows from the per-run results (`runs[name]` = the results.json of each seed of that row).

    Δ of a row is against the previous row in `steps` that has results; SE = √(s₁²/n₁ + s₀²/n₀).
    """
    rows, prev = [], None
    for i in steps:
        name, change, short, paper_top1, paper_fid = STEPS[i]
        res = [r for r in runs.get(name, []) if isinstance(r.get("probe_top1"), (int, float))]
        row = {"step": i, "name": name, "change": change, "short": short, "paper_top1": paper_top1,
               "paper_fid": paper_fid, "n": len(res), "errors": [r["error"] for r in runs.get(name, []) if "error" in r]}
        if res:
            top1 = [float(r["probe_top1"]) for r in res]
            m, s = mean_std(top1)
            notes = sorted({n for r in res for n in r.get("notes", []) or []})
            if any(r.get("class_cond") for r in res):
                notes.insert(0, "uses class labels (gray in the paper)")
            row.update(top1=top1, mean=m, std=s, fid=format_fid([r["gen_fid"] for r in res if "gen_fid" in r]),
                       wall_s=sum(float(r.get("wall_s", 0)) for r in res) / len(res), flags=notes)
            if prev is not None:
                d = m - prev["mean"]
                se = None if s is None or prev["std"] is None else math.sqrt(s**2 / len(top1) + prev["std"] ** 2 / prev["n"])
                ours, theirs = step_sign(d, se), paper_sign(paper_top1 - prev["paper_top1"])
                row.update(delta=d, se=se, sign=ours, paper_delta=paper_top1 - prev["paper_top1"], paper_sign=theirs,
                           agrees=agreement(ours, theirs))
            prev = row
        rows.append(row)
    return rows


def render_markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"# Trajectory (PAPER.md Fig. 6) at scale={meta.get('scale')}, data={meta.get('data')}, "
             f"seeds={meta.get('seeds')}", "",
             "Linear-probe top-1 (%), mean ± std over seeds. Δ is against the previous row shown; a sign only where "
             "|Δ| > 2 SE (else ≈; ? with one seed). The paper's numbers: Fig. 6 (probe), Table 1 (FID).", "",
             "| step | change | ours top-1 | paper | Δ ours | Δ paper | sign agrees | FID (ours / paper) | wall | flags |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "mean" in r:
            ours = f"{r['mean']:.2f}" + (f" ± {r['std']:.2f}" if r["std"] is not None else "") + f" (n={r['n']})"
        else:
            ours = "error: " + "; ".join(r["errors"])[:80] if r["errors"] else "not run"
        if "delta" in r:
            se = f" ± {r['se']:.2f}" if r["se"] is not None else ""
            d_ours, d_paper, agrees = f"{r['delta']:+.2f}{se} ({r['sign']})", f"{r['paper_delta']:+.1f}", r["agrees"]
        else:
            d_ours = d_paper = agrees = "—"
        fid = f"{r.get('fid', '—')} / {r['paper_fid'] if r['paper_fid'] is not None else '—'}"
        wall = f"{r['wall_s']:.0f} s" if "wall_s" in r else "—"
        lines.append(f"| {r['step']:02d} | {r['change']} | {ours} | {r['paper_top1']:.1f} | {d_ours} | {d_paper} | "
                     f"{agrees} | {fid} | {wall} | {'; '.join(r.get('flags', []))} |")
    base = meta.get("baselines")
    if base:
        for key, label in (("pixels", "baseline: raw pixels"), ("random", "baseline: random encoder")):
            m, s = mean_std(base[key])
            ours = f"{m:.2f}" + (f" ± {s:.2f}" if s is not None else "") + f" (n={len(base[key])})"
            lines.append(f"| — | {label} (once, {base['row']}'s architecture) | {ours} | — | — | — | — | — | — | |")
    if meta.get("chance") is not None:
        lines.append(f"| — | chance (100 / classes) | {meta['chance']:.2f} | — | — | — | — | — | — | |")
    lines += ["", f"Budget per row: `{' '.join(meta.get('budget', [])) or 'the scale’s own'}`; command line: "
              f"`{' '.join(meta.get('overrides', []))}`. Total wall time {meta.get('wall_s', 0):.0f} s.", ""]
    if meta.get("budget_note"):
        lines += [f"About this budget: {meta['budget_note']}", ""]
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str = "", chance: float | None = None,
         baselines: dict | None = None) -> None:
    """Fig. 6 in the paper's manner: our probe accuracy per step (error bars: std over seeds), chance level
    (100 / classes) as a dotted line, and the paper's numbers on a second axis."""
    from ldae.pictures import _pyplot, save_figure

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 0.75 * len(rows) + 2), 4.2))
    xs = list(range(len(rows)))
    done = [(x, r) for x, r in zip(xs, rows) if "mean" in r]
    if done:
        ax.errorbar([x for x, _ in done], [r["mean"] for _, r in done], yerr=[r["std"] or 0.0 for _, r in done],
                    marker="o", color="tab:blue", capsize=3, label="ours")
        for x, r in done:
            ax.annotate(f"{r['mean']:.1f}", (x, r["mean"]), textcoords="offset points", xytext=(0, 7),
                        ha="center", fontsize=7, color="tab:blue")
    if chance is not None:  # at small budgets the rows sit near it: the line says how near
        ax.axhline(chance, ls=":", lw=1, color="tab:red", label=f"chance ({chance:.0f}%)")
    for key, color in (("pixels", "tab:green"), ("random", "tab:purple")):
        if baselines and baselines.get(key):
            m = mean_std(baselines[key])[0]
            ax.axhline(m, ls="-.", lw=1, color=color, label=f"baseline: {key} ({m:.1f}%)")
    ax.set_ylabel("ours: linear probe top-1 (%)", color="tab:blue")
    ax2 = ax.twinx()
    ax2.plot(xs, [r["paper_top1"] for r in rows], marker="s", ls="--", color="tab:gray", label="paper (Fig. 6)")
    for x, r in zip(xs, rows):
        ax2.annotate(f"{r['paper_top1']:.1f}", (x, r["paper_top1"]), textcoords="offset points", xytext=(0, -12),
                     ha="center", fontsize=7, color="tab:gray")
    ax2.set_ylabel("paper: ImageNet linear probe (%)", color="tab:gray")
    ax.set_xticks(xs, [f"{r['step']:02d}\n{r['short']}" for r in rows], fontsize=7)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, loc="lower right", fontsize=8)
    ax.set_title(title or "trajectory", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)


# ---------------------------------------------------------------------------------------------- running

def user_overrides(task_overrides: list[str]) -> list[str]:
    return compose_user_overrides(task_overrides, OWN_KEYS, "experiments/trajectory.py")


def selected_steps(cfg: DictConfig) -> list[int]:
    raw = cfg.steps
    if raw is None:
        return list(range(len(STEPS)))
    steps = [raw] if is_int(raw) else list(raw) if OmegaConf.is_list(raw) else None
    if steps is None or not all(is_int(s) for s in steps):
        raise ConfigError(f"steps={raw} is not a list of row numbers; allowed: null (all rows) or a list such as "
                          f"'steps=[0,5,12]' of 0..{len(STEPS) - 1}")
    bad = [s for s in steps if not 0 <= s < len(STEPS)]
    if bad:
        raise ConfigError(f"steps={steps}: unknown rows {bad}; allowed: 0..{len(STEPS) - 1}")
    return sorted(set(steps))


def check_own_keys(cfg: DictConfig) -> None:
    """The keys trajectory.yaml adds to train.yaml; the CLI's precheck runs it before Hydra starts."""
    selected_steps(cfg)
    if not (is_int(cfg.seed) and cfg.seed >= 0):  # the rows' seeds are seed, seed+1, ...
        raise ConfigError(f"seed={cfg.seed} must be an integer >= 0")
    n = cfg.seeds
    if not (is_int(n) and n >= 1):
        raise ConfigError(f"seeds={n} must be an integer >= 1 (the number of seeds per row: seed, seed+1, ...)")
    if not isinstance(cfg.baselines_once, bool):
        raise ConfigError(f"baselines_once={cfg.baselines_once} must be true or false")
    keys.check(cfg, keys.TRAJECTORY)  # the rest of its declared keys


def compose_rows(names: list[str], seeds: list[int], overrides: list[str]) -> dict[tuple[str, int], DictConfig]:
    """Every row's composed config, each validated, before the first row runs: a bad value is one line now,
    not one traceback per row after the earlier rows' hours."""
    from ldae.config import validate

    rows = {}
    for name in names:
        for seed in seeds:
            try:
                rcfg = compose_train([f"experiment=trajectory/{name}", *overrides, f"seed={seed}"])
                validate(rcfg)
            except ConfigError as e:
                raise ConfigError(f"row {name} (seed {seed}): {e}") from None
            rows[name, seed] = rcfg
    return rows


def finished_row(row_out: Path, rcfg: DictConfig) -> dict | None:
    """The results.json of a row that an earlier, killed run of the same command finished, or None. Only a run of
    this very config counts (the fingerprint ignores output folders), so a changed budget recomputes the row."""
    import json

    from ldae.resume import fingerprint

    path = row_out / "results.json"
    try:
        res = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(res, dict) or not isinstance(res.get("probe_top1"), (int, float)):
        return None
    return res if res.get("config_fingerprint") == fingerprint(rcfg) else None


def run_trajectory(cfg: DictConfig, out: str | Path, task_overrides: list[str]) -> dict:
    """Run the selected rows x seeds into `out`; write trajectory.json after every run, then .md and .png.
    Rerun into the same `out`, it reuses the rows an earlier (killed) run finished."""
    from ldae.train import RunInterrupted, run

    out = Path(out)
    check_own_keys(cfg)
    steps = selected_steps(cfg)
    nseeds = int(cfg.seeds)
    budget, extra = budget_overrides(cfg), user_overrides(task_overrides)
    seeds = [int(cfg.seed) + k for k in range(nseeds)]
    row_cfgs = compose_rows([STEPS[i][0] for i in steps], seeds, [*budget, *extra])
    out.mkdir(parents=True, exist_ok=True)
    meta = {"scale": cfg.scale_name, "data": cfg.data.name, "seeds": seeds, "steps": steps, "budget": budget,
            "chance": chance_top1(cfg), "budget_note": budget_note(cfg),
            "overrides": extra, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "wall_s": 0.0}
    runs: dict[str, list[dict]] = {}
    t0, total, k = time.time(), len(steps) * nseeds, 0

    def save(final: bool = False) -> dict:
        meta["wall_s"] = time.time() - t0
        meta["finished"] = final
        doc = {"meta": meta, "rows": summarize(runs, steps), "runs": runs}
        atomic_write_json(out / "trajectory.json", doc)
        return doc

    for i in steps:
        name = STEPS[i][0]
        for seed in seeds:
            k += 1
            row_out = out / name / f"seed{seed}"
            rec = {"seed": seed, "dir": str(row_out)}
            t1 = time.time()
            rcfg = row_cfgs[name, seed]
            res = finished_row(row_out, rcfg)
            try:
                reused = res is not None  # a killed trajectory restarts at its first unfinished row
                if not reused:
                    res = run(rcfg, row_out)
                rec.update({key: res[key] for key in ("probe_top1", "pretrain_loss", "wall_s", "tokenizer_psnr",
                                                      "latent_dim", "latent_dim_paper", "steps") if key in res})
                rec["class_cond"] = bool(rcfg.model.class_cond)
                for key in ("gen_fid", "notes"):
                    if key in res:
                        rec[key] = res[key]
                msg = f"top-1 {res['probe_top1']:.2f}%" + (" (finished earlier: its results.json reused)" if reused else "")
            except (RunInterrupted, DiskFullError):  # stop the whole trajectory; a rerun resumes at this row
                save()
                raise
            except Exception as e:  # one broken row must not cost the others: recorded, and the exit code says so
                log.exception("row %s seed %d failed", name, seed)
                rec.update(error=f"{type(e).__name__}: {e}".splitlines()[0], wall_s=time.time() - t1)
                msg = f"FAILED ({rec['error']})"
            runs.setdefault(name, []).append(rec)
            save()
            print(f"[trajectory {k}/{total}] {name} seed {seed}: {msg} in {time.time() - t1:.0f} s "
                  f"(total {time.time() - t0:.0f} s) -> {row_out}", flush=True)

    if cfg.baselines_once:
        meta["baselines"] = run_baselines(STEPS[steps[-1]][0], seeds, out, [*budget, *extra])
    doc = save(final=True)
    (out / "trajectory.md").write_text(render_markdown(doc["rows"], meta))
    plot(doc["rows"], out / "trajectory.png",
         title=f"l-DAE trajectory: scale={meta['scale']}, data={meta['data']}, {nseeds} seed(s)",
         chance=meta["chance"], baselines=meta.get("baselines"))
    print(f"[trajectory] {out / 'trajectory.md'}, trajectory.json, trajectory.png", flush=True)
    return doc


def run_baselines(row: str, seeds: list[int], out: Path, overrides: list[str]) -> dict:
    """Raw pixels and a random encoder, probed once per seed with `row`'s config: {name: [top-1 per seed]}."""
    import json

    from ldae.evaluation import baseline_probes

    found: dict[str, list[float]] = {"pixels": [], "random": []}
    for seed in seeds:
        folder = out / "baselines" / f"seed{seed}"
        path = folder / "baselines.json"
        if path.is_file():
            res = json.loads(path.read_text())
        else:
            folder.mkdir(parents=True, exist_ok=True)
            t1 = time.time()
            res = baseline_probes(compose_train([f"experiment=trajectory/{row}", *overrides, f"seed={seed}"]), folder)
            atomic_write_json(path, res)
            print(f"[trajectory] baselines seed {seed}: pixels {res['baseline_pixels_top1']:.2f}%, random encoder "
                  f"{res['baseline_random_top1']:.2f}% in {time.time() - t1:.0f} s", flush=True)
        found["pixels"].append(float(res["baseline_pixels_top1"]))
        found["random"].append(float(res["baseline_random_top1"]))
    return {"row": row, **found}
