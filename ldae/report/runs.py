"""Runs side by side: a table (report.md, report.csv) and a plot (report.png) of finished runs, read from local
run folders or from a wandb project. Seeds of one point are aggregated as mean ± std; trajectory rows come in the
paper's order. The CLI: experiments/report.py.

Local runs: each results.json (with its family, point, swept keys and tags from ldae/run_identity.py) and the
pretraining loss curve from csv/pretrain/metrics.csv beside it. wandb: the stage runs of one run folder
(config `run.dir`) are merged into one record: summary `pretrain/loss`, `tokenizer/psnr`, `gen/fid` from the
pretrain (and tokenizer) run, `probe/top1` from the probe_encoder run. Both paths feed the same table code.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

from ldae.config import ConfigError
from ldae.paper import STEP_INDEX, STEPS, paper_top1
from ldae.report.stats import mean_std

METRICS = ("probe_top1", "pretrain_loss", "tokenizer_psnr", "gen_fid", "wall_s")


# ---------------------------------------------------------------------------------------------- records

def record_from_results(res: dict, curve: list[tuple[int, float]] | None = None, source: str = "") -> dict:
    """One run (one seed of one point) in the form the table reads; old results.json without an identity
    fall back to the experiment name."""
    name = res.get("experiment", "?")
    return {"group": res.get("group") or res.get("family") or name, "family": res.get("family") or name,
            "point": res.get("point") or name, "experiment": name, "seed": res.get("seed"),
            "swept": {k: v for k, v in (res.get("swept") or {}).items() if k != "seed"},
            "tags": list(res.get("tags") or []), "tokenizer_name": res.get("tokenizer_name"),
            "latent_dim_paper": res.get("latent_dim_paper"), "curve": curve or [], "source": source,
            **{k: res.get(k) for k in METRICS}}


def loss_curve(run_dir: Path) -> list[tuple[int, float]]:
    """(step, pretrain/loss) rows of the run's CSV metrics (empty when there are none)."""
    path = run_dir / "csv" / "pretrain" / "metrics.csv"
    if not path.exists():
        return []
    out = []
    with path.open() as f:
        for row in csv.DictReader(f):
            if row.get("pretrain/loss"):
                out.append((int(float(row["step"])), float(row["pretrain/loss"])))
    return out


def _malformed(res) -> str | None:
    """Why a parsed results.json cannot be a row (None: it can). A run without probe_top1 is unfinished, not
    malformed: it is left out silently."""
    if not isinstance(res, dict):
        return f"a JSON {type(res).__name__ if res is not None else 'null'}, not a results object"
    top1 = res.get("probe_top1", 0.0)
    if top1 is not None and _num(top1) is None:
        return f"probe_top1={top1!r} is not a finite number"
    return None


def local_records(folders: list[str | Path]) -> list[dict]:
    """Every usable results.json below `folders`; a corrupt or malformed one is skipped with one line."""
    recs = []
    for folder in folders:
        for path in sorted(Path(folder).rglob("results.json")):
            try:
                res = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
                print(f"report: skipping {path} ({e})", file=sys.stderr)
                continue
            why = _malformed(res)
            if why is not None:
                print(f"report: skipping {path} ({why})", file=sys.stderr)
                continue
            if res.get("probe_top1") is not None:
                recs.append(record_from_results(res, loss_curve(path.parent), str(path.parent)))
    return recs


def wandb_curve(run) -> list[tuple[int, float]]:
    """(step, pretrain/loss) of a pretrain run's history (sampled by wandb's API)."""
    try:
        rows = run.history(keys=["pretrain/loss", "trainer/global_step"], pandas=False)
    except Exception as e:  # noqa: BLE001 - a curve is a nicety; the table does not need it
        print(f"report: no history for run {run.id} ({e})", file=sys.stderr)
        return []
    return [(int(h.get("trainer/global_step", h.get("_step", 0))), float(h["pretrain/loss"]))
            for h in rows if h.get("pretrain/loss") is not None]


def wandb_records(project: str, api=None, group: str | None = None) -> list[dict]:
    """Records from a wandb project through the public API (`api` is wandb.Api() unless given, e.g. a fake).
    Stage runs sharing config `run.dir` are one run; `group` is filtered on the server."""
    if api is None:
        import wandb

        api = wandb.Api()
    merged: dict[str, dict] = {}
    for run in api.runs(project, filters={"group": group} if group else None):
        cfg, summ = dict(run.config), dict(run.summary)
        key = cfg.get("run.dir") or run.id
        res = merged.setdefault(key, {"experiment": cfg.get("name", run.name), "family": cfg.get("run.family"),
                                      "group": run.group, "point": cfg.get("run.point", run.name),
                                      "seed": cfg.get("seed"), "tags": list(run.tags or []),
                                      "swept": {k[len("run.swept."):]: v for k, v in cfg.items()
                                                if k.startswith("run.swept.")},
                                      "tokenizer_name": cfg.get("tokenizer.name"),
                                      "latent_dim_paper": cfg.get("tokenizer.latent_dim")
                                      if cfg.get("tokenizer.latent_units", "paper") == "paper" else None,
                                      "wall_s": 0.0})
        res["wall_s"] += float(summ.get("_runtime") or 0.0)
        stage = run.job_type or cfg.get("run.stage")
        if stage == "pretrain":
            res.update(pretrain_loss=summ.get("pretrain/loss"), gen_fid=summ.get("gen/fid"), curve=wandb_curve(run))
        if stage in ("pretrain", "tokenizer") and summ.get("tokenizer/psnr") is not None:
            res["tokenizer_psnr"] = summ["tokenizer/psnr"]
        if stage == "probe_encoder":
            res["probe_top1"] = summ.get("probe/top1")
    return [record_from_results(r, r.pop("curve", None), source=k) for k, r in merged.items()
            if r.get("probe_top1") is not None]


def select(records: list[dict], group: str | None = None, tag: list[str] | None = None) -> list[dict]:
    """Records of `group` (exact) that carry every tag in `tag`."""
    return [r for r in records if (group is None or r["group"] == group)
            and all(t in r["tags"] for t in (tag or []))]


# ---------------------------------------------------------------------------------------------- the table

def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _sort_value(v):
    try:
        return (0, float(v), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(v))


def aggregate(records: list[dict]) -> list[dict]:
    """One row per (group, point): n seeds, mean ± std of each metric, the swept values, the paper's number.
    Order: groups by name; trajectory rows by row number (the paper's order), others by swept values."""
    points: dict[tuple[str, str], list[dict]] = {}
    for r in records:
        points.setdefault((r["group"], r["point"]), []).append(r)
    rows = []
    for (group, point), rs in points.items():
        first = rs[0]
        row = {"group": group, "point": point, "experiment": first["experiment"], "n": len(rs),
               "seeds": sorted(r["seed"] for r in rs if r["seed"] is not None), "swept": dict(first["swept"]),
               "curves": [r["curve"] for r in rs if r["curve"]],
               "paper_top1": paper_top1(first["family"], first["experiment"], first["tokenizer_name"],
                                        first["latent_dim_paper"])}
        for m in METRICS:
            nums = [x for x in (_num(r.get(m)) for r in rs) if x is not None]
            row[m], row[m + "_std"] = mean_std(nums)
            if not nums and any(r.get(m) is not None for r in rs):  # e.g. gen_fid "no FID weights"
                row[m + "_text"] = str(next(r[m] for r in rs if r.get(m) is not None))
        row["step"] = STEP_INDEX.get(first["experiment"]) if first["family"] == "trajectory" else None
        rows.append(row)
    rows.sort(key=lambda r: (r["group"], r["step"] if r["step"] is not None else len(STEPS),
                             [_sort_value(v) for v in r["swept"].values()], r["point"]))
    return rows


def swept_columns(rows: list[dict]) -> list[str]:
    """Swept keys of any row (the experiment key is the point's name already)."""
    return list(dict.fromkeys(k for r in rows for k in r["swept"] if k != "experiment"))


def fmt(row: dict, m: str, digits: int = 2) -> str:
    if row.get(m) is None:
        return row.get(m + "_text", "—")
    s = f"{row[m]:.{digits}f}"
    return s + (f" ± {row[m + '_std']:.{digits}f}" if row.get(m + "_std") is not None else "")


HEADER = ["group", "point", "n seeds", "probe top-1 (%)", "paper top-1", "pretrain loss", "tokenizer PSNR (dB)",
          "gen FID", "wall (s)"]


def table_rows(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    keys = swept_columns(rows)
    body = [[r["group"], r["point"], str(r["n"]), fmt(r, "probe_top1"),
             f"{r['paper_top1']:.1f}" if r["paper_top1"] is not None else "—", fmt(r, "pretrain_loss", 4),
             fmt(r, "tokenizer_psnr"), fmt(r, "gen_fid", 1), fmt(r, "wall_s", 0),
             *[str(r["swept"].get(k, "—")) for k in keys]] for r in rows]
    return HEADER + keys, body


def render_markdown(rows: list[dict], sources: str) -> str:
    header, body = table_rows(rows)
    lines = [f"# Comparison of {sum(r['n'] for r in rows)} runs ({len(rows)} points)", "",
             f"From {sources}. Metrics: mean ± sample std over seeds (n seeds); paper: PAPER.md Fig. 6 / Table 2 "
             "(ImageNet, DiT-L, 400 epochs) where the same point exists.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    return "\n".join(lines) + "\n"


def write_csv(rows: list[dict], path: Path) -> None:
    keys = swept_columns(rows)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["group", "point", "experiment", "n", "seeds", *[x for m in METRICS for x in (m, m + "_std")],
                    "paper_top1", *keys])
        for r in rows:
            w.writerow([r["group"], r["point"], r["experiment"], r["n"], " ".join(map(str, r["seeds"])),
                        *[x for m in METRICS for x in (r[m] if r[m] is not None else r.get(m + "_text", ""),
                                                      r[m + "_std"] if r[m + "_std"] is not None else "")],
                        r["paper_top1"] if r["paper_top1"] is not None else "",
                        *[r["swept"].get(k, "") for k in keys]])


def point_colors(rows: list[dict], cmap) -> list:
    """One colour per experiment where several points share one (a sweep over several experiments, e.g. the
    tokenizers of table2), else one per point."""
    exps = list(dict.fromkeys(r["experiment"] for r in rows))
    by_exp = 1 < len(exps) < len(rows)
    return [cmap((exps.index(r["experiment"]) if by_exp else i) % 10) for i, r in enumerate(rows)]


def plot(rows: list[dict], path: Path, title: str = "") -> None:
    """Top: probe top-1 per point (error bars: std over seeds where n > 1; the paper's number on a second axis
    where known). Below: the pretraining loss curves (CSV), in the colours of the bars."""
    from ldae.pictures import _pyplot, save_figure

    plt = _pyplot()
    have_curves = any(r["curves"] for r in rows)
    width = max(7.0, 0.55 * len(rows) + 3)
    fig, axes = plt.subplots(2 if have_curves else 1, 1, figsize=(width, 8.0 if have_curves else 4.6), squeeze=False,
                             gridspec_kw={"height_ratios": [1.3, 1.0][: 1 + have_curves]})
    ax = axes[0][0]
    xs = list(range(len(rows)))
    colors = point_colors(rows, plt.cm.tab10)
    done = [(x, r) for x, r in zip(xs, rows) if r["probe_top1"] is not None]
    ax.bar([x for x, _ in done], [r["probe_top1"] for _, r in done], color=[colors[x] for x, _ in done], alpha=0.85,
           label="ours (mean ± std over seeds)")
    spread = [(x, r) for x, r in done if r["probe_top1_std"] is not None]
    if spread:
        ax.errorbar([x for x, _ in spread], [r["probe_top1"] for _, r in spread],
                    yerr=[r["probe_top1_std"] for _, r in spread], fmt="none", ecolor="black", capsize=4)
    for x, r in done:
        ax.annotate(f"{r['probe_top1']:.1f}\nn={r['n']}", (x, r["probe_top1"] + (r["probe_top1_std"] or 0.0)),
                    textcoords="offset points", xytext=(0, 4), ha="center", va="bottom", fontsize=7)
    paper = [(x, r["paper_top1"]) for x, r in zip(xs, rows) if r["paper_top1"] is not None]
    top = max([r["probe_top1"] + (r["probe_top1_std"] or 0.0) for _, r in done] or [1.0])
    ax.set_ylim(0, top * (1.7 if paper else 1.25))  # with the paper's curve: bars below, its band above them
    ax.set_ylabel("linear probe top-1 (%)")
    labels = [(f"{r['step']:02d} {STEPS[r['step']][2]}" if r["step"] is not None else r["point"]) for r in rows]
    groups = list(dict.fromkeys(r["group"] for r in rows))
    if len(groups) > 1:
        labels = [f"{lab}\n[{r['group']}]" for lab, r in zip(labels, rows)]
    slant = max(map(len, labels)) > 10
    ax.set_xticks(xs, labels, rotation=30 if slant else 0, ha="right" if slant else "center", fontsize=7)
    ax.set_xlim(-0.6, len(rows) - 0.4)
    handles, names = ax.get_legend_handles_labels()
    if paper:
        ax2 = ax.twinx()
        # One line per experiment (a table2 row), not across them; a trajectory (one point each) is one line.
        series = {} if len({r["experiment"] for r in rows}) == len(rows) else {r["experiment"]: [] for r in rows}
        for x, p in paper:
            series.setdefault(rows[x]["experiment"] if series else "", []).append((x, p))
        for k, pts in enumerate(v for v in series.values() if v):
            ax2.plot([x for x, _ in pts], [p for _, p in pts], "s--", color="tab:gray",
                     label="paper (ImageNet)" if k == 0 else None)
        lo, hi = min(p for _, p in paper), max(p for _, p in paper)
        span = max(hi - lo, 1.0)
        ax2.set_ylim(lo - 2.6 * span, hi + 0.35 * span)  # the paper's values in the top quarter of the panel
        for x, p in paper:
            ax2.annotate(f"{p:.1f}", (x, p), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7,
                         color="tab:gray")
        ax2.set_ylabel("paper: ImageNet linear probe (%)", color="tab:gray")
        h2, n2 = ax2.get_legend_handles_labels()
        handles, names = handles + h2, names + n2
    ax.legend(handles, names, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, fontsize=7, frameon=False)
    fig.suptitle(title or f"linear probe top-1 per point: {', '.join(groups)}", fontsize=10)
    if have_curves:
        axc = axes[1][0]
        for x, r in zip(xs, rows):
            for k, c in enumerate(r["curves"]):
                axc.plot([s for s, _ in c], [v for _, v in c], color=colors[x], alpha=0.8, lw=1,
                         label=labels[x].replace("\n", " ") if k == 0 else None)
        axc.set_xlabel("optimiser step")
        axc.set_ylabel("pretrain/loss")
        axc.set_title("pretraining loss (one line per seed; colours as above)", fontsize=9)
        axc.grid(alpha=0.3)
        vals = [v for r in rows for c in r["curves"] for _, v in c if v > 0]
        if vals and max(vals) > 100 * min(vals):  # a spike would flatten the rest: log scale
            axc.set_yscale("log")
        if len(rows) <= 12:
            axc.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def write_report(records: list[dict], out: Path, sources: str) -> dict:
    """report.md, report.csv and report.png in `out`; returns {name: path}."""
    rows = aggregate(records)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"md": out / "report.md", "csv": out / "report.csv", "png": out / "report.png"}
    paths["md"].write_text(render_markdown(rows, sources))
    write_csv(rows, paths["csv"])
    plot(rows, paths["png"])
    return paths


def compare(folders: list[str], project: str | None = None, group: str | None = None, tags: list[str] | None = None,
            out: str | Path | None = None, api=None) -> dict:
    """The report of the runs below `folders` (or of the wandb project `project`), filtered by `group` and `tags`,
    into `out` (default: the first folder; ./report-ENTITY-PROJECT for wandb); returns {name: path}. A folder that
    does not exist, or no finished run, is a ConfigError."""
    if bool(folders) == bool(project):
        raise ValueError("give run folders or a wandb project (one of the two)")
    for folder in folders:
        if not Path(folder).is_dir():
            raise ConfigError(f"folder {folder} does not exist or is not a folder; allowed: run folders or sweep "
                              f"folders with results.json files below them")
    if project:
        records, sources = wandb_records(project, api=api, group=group), f"wandb project {project}"
        out = Path(out or f"report-{project.replace('/', '-')}")
    else:
        records, sources = local_records(folders), ", ".join(map(str, folders))
        out = Path(out or folders[0])
    records = select(records, group, tags)
    if not records:
        raise ConfigError(f"no finished runs (results with probe_top1) in {sources}"
                          + (f" with group={group}" if group else "") + (f" tags={tags}" if tags else ""))
    paths = write_report(records, out, sources)
    print(f"[report] {len(records)} runs -> {paths['md']}, {paths['csv'].name}, {paths['png'].name}")
    return paths
