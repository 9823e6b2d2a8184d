"""The report of finished runs (ldae/report/runs.py): seeds aggregated as mean ± std, trajectory rows in the paper's order, the paper's
numbers beside ours, filters, and the wandb path (a fake public API) sharing the table with the local one."""

import json
import statistics

import pytest

from ldae.config import ConfigError
from ldae.report import runs as report


def results(name, seed, top1, family="trajectory", **extra):
    return {"experiment": name, "family": family, "group": family, "point": name, "seed": seed,
            "swept": {"experiment": f"trajectory/{name}", "seed": str(seed)}, "tags": [f"experiment={name}", "scale=cpu"],
            "probe_top1": top1, "pretrain_loss": 0.1 * (seed + 1), "tokenizer_psnr": 20.0, "wall_s": 10.0 + seed,
            "tokenizer_name": "patch_pca", "latent_dim_paper": 32, **extra}


RUNS = [results("12_predict_image", 0, 30.0), results("00_dit_baseline", 0, 10.0, gen_fid="no FID weights"),
        results("12_predict_image", 1, 34.0), results("07_patch_pca", 0, 20.0, gen_fid=50.0),
        results("07_patch_pca", 1, 22.0, gen_fid=70.0)]


def write_runs(root, runs):
    for i, r in enumerate(runs):
        d = root / f"{i}_{r['experiment']}"
        (d / "csv" / "pretrain").mkdir(parents=True)
        (d / "results.json").write_text(json.dumps(r))
        (d / "csv" / "pretrain" / "metrics.csv").write_text("epoch,pretrain/loss,step\n0,1.0,0\n0,0.5,1\n0,,1\n")


def test_local_folders_give_one_row_per_point_in_the_papers_order(tmp_path):
    write_runs(tmp_path, RUNS)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "results.json").write_text("{")  # a run being written: skipped, not fatal
    rows = report.aggregate(report.local_records([tmp_path]))
    assert [r["point"] for r in rows] == ["00_dit_baseline", "07_patch_pca", "12_predict_image"]
    r12 = rows[2]
    assert r12["n"] == 2 and r12["probe_top1"] == 32.0 and r12["probe_top1_std"] == pytest.approx(statistics.stdev([30, 34]))
    assert rows[0]["probe_top1_std"] is None and rows[0]["gen_fid_text"] == "no FID weights"
    assert rows[1]["gen_fid"] == 60.0 and [r["paper_top1"] for r in rows] == [57.5, 65.1, 64.5]
    assert rows[1]["curves"] == [[(0, 1.0), (1, 0.5)]] * 2
    md = report.render_markdown(rows, "here")
    assert "| trajectory | 12_predict_image | 2 | 32.00 ± 2.83 | 64.5 |" in md
    assert "| trajectory | 00_dit_baseline | 1 | 10.00 | 57.5 |" in md and "no FID weights" in md


def test_filters_and_outputs(tmp_path):
    write_runs(tmp_path / "runs", RUNS + [results("ldae", 0, 5.0, family="ldae")])
    paths = report.compare([str(tmp_path / "runs")], group="trajectory", tags=["experiment=07_patch_pca"],
                           out=tmp_path / "out")
    lines = paths["csv"].read_text().splitlines()
    assert len(lines) == 2 and lines[1].startswith("trajectory,07_patch_pca,07_patch_pca,2,0 1,21.0,")
    assert paths["png"].stat().st_size > 10_000
    with pytest.raises(ConfigError, match="no finished runs"):  # nothing matches: a clear error, not an empty table
        report.compare([str(tmp_path / "runs")], group="nope")


class FakeRun:
    def __init__(self, rid, group, name, job_type, config, summary, tags):
        self.id, self.group, self.name, self.job_type = rid, group, name, job_type
        self.config, self.summary, self.tags = config, summary, tags

    def history(self, keys=None, pandas=True):
        assert not pandas and "pretrain/loss" in keys
        return [{"_step": 0, "trainer/global_step": 0, "pretrain/loss": 1.0},
                {"_step": 1, "trainer/global_step": 1, "pretrain/loss": 0.5}, {"_step": 2, "lr-AdamW": 0.1}]


class FakeApi:
    """wandb.Api's surface that the report uses: runs(path) -> runs with config/summary/group/name/job_type."""

    def __init__(self, runs):
        self._runs, self.asked = runs, []

    def runs(self, path, filters=None):
        self.asked.append((path, filters))
        return [r for r in self._runs if not filters or all(getattr(r, k) == v for k, v in filters.items())]


def fake_runs(res: dict, i: int) -> list[FakeRun]:
    """The stage runs ldae writes for one results.json (flat config, run.* keys, fixed summary names)."""
    cfg = {"name": res["experiment"], "seed": res["seed"], "tokenizer.name": res["tokenizer_name"],
           "tokenizer.latent_dim": res["latent_dim_paper"], "tokenizer.latent_units": "paper",
           "run.dir": f"/runs/{i}", "run.family": res["family"], "run.point": res["point"],
           **{f"run.swept.{k}": v for k, v in res["swept"].items()}}
    pre = {"pretrain/loss": res["pretrain_loss"], "tokenizer/psnr": res["tokenizer_psnr"], "_runtime": res["wall_s"] - 2}
    if isinstance(res.get("gen_fid"), float):
        pre["gen/fid"] = res["gen_fid"]
    stages = [("tokenizer", {"tokenizer/psnr": res["tokenizer_psnr"], "_runtime": 1.0}), ("pretrain", pre),
              ("probe_encoder", {"probe/top1": res["probe_top1"], "_runtime": 1.0})]
    return [FakeRun(f"{i}{s}", res["group"], res["point"], s, {**cfg, "run.stage": s}, summ, res["tags"])
            for s, summ in stages]


def test_the_wandb_path_gives_the_local_table(tmp_path):
    runs = [r for i, res in enumerate(RUNS) for r in fake_runs(res, i)]
    runs.append(FakeRun("x", "trajectory", "crashed", "pretrain", {"run.dir": "/runs/x"}, {"pretrain/loss": 1.0}, []))
    api = FakeApi(runs)
    wrows = report.aggregate(report.wandb_records("me/ldae", api=api))
    assert api.asked == [("me/ldae", None)]
    write_runs(tmp_path / "local", RUNS)
    lrows = report.aggregate(report.local_records([tmp_path / "local"]))
    keys = ("group", "point", "n", "seeds", "probe_top1", "probe_top1_std", "pretrain_loss", "tokenizer_psnr",
            "wall_s", "paper_top1", "swept", "curves")
    assert [{k: r[k] for k in keys} for r in wrows] == [{k: r[k] for k in keys} for r in lrows]  # the crashed run is left out
    paths = report.compare([], "me/ldae", group="trajectory", tags=["scale=cpu"], out=tmp_path / "w", api=api)
    assert api.asked[-1] == ("me/ldae", {"group": "trajectory"})  # filtered on the server
    assert "| trajectory | 07_patch_pca | 2 | 21.00 ± 1.41 | 65.1 |" in paths["md"].read_text()
