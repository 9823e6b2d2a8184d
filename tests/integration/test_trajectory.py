"""The trajectory of PAPER.md Fig. 6: 13 configs, each its predecessor plus one change; row 12 = experiment=ldae;
the sweep preset launches 13 jobs; every row trains at scale=smoke (one process); the table's sign logic."""

import json
import re

import pytest
import yaml
from helpers import ROOT, assert_top1_of, png_pixels

from ldae.paper import STEPS
from ldae.report import trajectory as traj
from ldae.report.compose import budget_overrides, flatten

TRAJ_DIR = ROOT / "conf" / "experiment" / "trajectory"
NAMES = ["00_dit_baseline", "01_no_class_cond", "02_no_perceptual", "03_no_adversarial", "04_noise_schedule",
         "05_patch_vae", "06_patch_ae", "07_patch_pca", "08_predict_x0", "09_no_input_scaling", "10_image_input",
         "11_image_output", "12_predict_image"]
# The groups that make the method (and its sizes at a scale); `name` and the gen grid are bookkeeping.
METHOD_KEYS = ("tokenizer", "schedule", "target", "model", "optim", "data", "probe", "trainer", "tokenizer_scale")


def test_trajectory_files_chain_their_predecessor():
    assert sorted(p.stem for p in TRAJ_DIR.glob("*.yaml")) == NAMES
    assert [s[0] for s in STEPS] == NAMES
    for i, name in enumerate(NAMES):
        text = (TRAJ_DIR / f"{name}.yaml").read_text()
        assert text.startswith("# @package _global_"), name
        doc = yaml.safe_load(text)
        assert doc["name"] == name
        parents = [d for d in doc["defaults"] if isinstance(d, str) and d.startswith("/experiment/")]
        assert parents == ([] if i == 0 else [f"/experiment/trajectory/{NAMES[i - 1]}"]), name
        assert len(text.splitlines()) <= 25, f"{name}: a row states only its change"


@pytest.mark.parametrize("scale", ["smoke", "cpu", "paper"])
def test_row_12_is_experiment_ldae(compose, scale):
    from omegaconf import OmegaConf

    a = compose("experiment=trajectory/12_predict_image", f"scale={scale}")
    b = compose("experiment=ldae", f"scale={scale}")
    for key in METHOD_KEYS:
        assert OmegaConf.to_container(a[key], resolve=True) == OmegaConf.to_container(b[key], resolve=True), key
    assert a.gen.enabled == b.gen.enabled is False


def test_rows_make_the_papers_changes(compose):
    c = {n: compose(f"experiment=trajectory/{n}") for n in NAMES}
    base = c["00_dit_baseline"]
    assert (base.tokenizer.name, base.tokenizer.latent_dim, base.schedule.name, base.target.predict) == \
        ("vqgan", 16, "ddpm_linear", "eps")
    assert base.model.class_cond and base.model.learn_sigma and base.model.cond_ratio == 1.0 and base.gen.enabled
    assert base.tokenizer.perceptual.weight > 0 and base.tokenizer.adversarial.weight > 0
    assert not c["01_no_class_cond"].model.class_cond and c["01_no_class_cond"].model.cond_ratio == 0.25
    assert c["02_no_perceptual"].tokenizer.perceptual.weight == 0 and c["02_no_perceptual"].tokenizer.adversarial.weight > 0
    assert c["03_no_adversarial"].tokenizer.adversarial.weight == 0
    assert c["04_noise_schedule"].schedule.name == "linear_gamma2"
    assert [c[n].tokenizer.name for n in NAMES[5:8]] == ["patch_vae", "patch_ae", "patch_pca"]
    assert [c[n].tokenizer.latent_dim for n in NAMES[5:8]] == [16, 16, 32]
    # no vqgan keys leak into later tokenizers: their nodes state the two terms off, with nothing of vqgan's
    for n in NAMES[5:7]:
        assert (dict(c[n].tokenizer.perceptual), dict(c[n].tokenizer.adversarial)) == ({"weight": 0.0}, {"weight": 0.0})
    assert (c["08_predict_x0"].target.predict, c["08_predict_x0"].target.lambda_t) == ("x0", "gamma2")
    assert c["09_no_input_scaling"].schedule.name == "sigma_linear"
    assert c["09_no_input_scaling"].target.lambda_t == "inv_one_plus_sigma2"
    assert c["10_image_input"].target.input == "image" and c["11_image_output"].target.predict == "image_pca"


def test_sweep_trajectory_launches_13_jobs():
    """What `ldae-train -m sweep=trajectory scale=smoke` hands Hydra's basic sweeper, split as it splits it."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from ldae.cli import check_group_overrides, compose_config

    check_group_overrides(["sweep=trajectory", "scale=smoke"])  # the CLI's precheck accepts the preset
    cfg = compose_config(["sweep=trajectory", "scale=smoke"], "train")
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        hcfg = compose("train", overrides=["sweep=trajectory", "scale=smoke"], return_hydra_config=True)
    params = hcfg.hydra.sweeper.params
    assert cfg.name == "ldae" and list(params) == ["experiment"]
    parsed = OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()] + ["scale=smoke"])
    jobs = [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    assert len(jobs) == 13
    assert [j[0] for j in jobs] == [f"experiment=trajectory/{n}" for n in NAMES]
    for job in jobs:
        compose_config(["sweep=trajectory", *job])  # each job composes


def _res(name, *top1, **kw):
    return [{"probe_top1": t, "wall_s": 10.0, **kw} for t in top1]


def test_table_signs_on_synthetic_results():
    runs = {
        "07_patch_pca": _res("07", 50.0, 51.0, 52.0),           # 51 ± 1
        "08_predict_x0": _res("08", 45.0, 46.0, 47.0),          # −5: significant, the paper's −2.7 too
        "09_no_input_scaling": _res("09", 45.5, 46.5, 46.0),    # +0.0: ≈
        "10_image_input": _res("10", 52.0, 53.0, 54.0),         # +7: significant; the paper's +0.0 -> "no"
        "11_image_output": _res("11", 40.0, 41.0, 42.0),        # −12 against the paper's +0.3 -> "no"
        "12_predict_image": [{"error": "RuntimeError: boom"}],
    }
    rows = traj.summarize(runs, [7, 8, 9, 10, 11, 12])
    by = {r["step"]: r for r in rows}
    assert by[7]["mean"] == pytest.approx(51.0) and by[7]["std"] == pytest.approx(1.0) and "delta" not in by[7]
    assert (by[8]["sign"], by[8]["paper_sign"], by[8]["agrees"]) == ("−", "−", "yes")
    assert by[8]["se"] == pytest.approx((1 / 3 + 1 / 3) ** 0.5)
    assert (by[9]["sign"], by[9]["agrees"]) == ("≈", "≈")
    assert (by[10]["sign"], by[10]["paper_sign"], by[10]["agrees"]) == ("+", "=", "no")
    assert (by[11]["sign"], by[11]["agrees"]) == ("−", "no")
    assert "mean" not in by[12] and by[12]["errors"] == ["RuntimeError: boom"]
    # One seed: no standard error, so no sign is claimed.
    one = traj.summarize({"00_dit_baseline": _res("0", 10.0, gen_fid="no FID weights", class_cond=True,
                                                  notes=["perceptual loss with random backbone (not the paper's)"]),
                          "01_no_class_cond": _res("1", 20.0, gen_fid=31.5)}, [0, 1])
    assert one[1]["sign"] == "?" and one[1]["agrees"] == "n/a (1 seed)"
    assert one[0]["fid"] == "no FID weights" and one[1]["fid"] == "31.5"
    assert one[0]["flags"][0].startswith("uses class labels") and "random backbone" in one[0]["flags"][1]
    md = traj.render_markdown(rows + one, {"scale": "smoke", "data": "shapes", "seeds": [0, 1, 2]})
    assert len(re.findall(r"^\| \d\d \|", md, re.M)) == 8 and "error: RuntimeError: boom" in md
    assert traj.step_sign(0.5, 0.2) == "+" and traj.step_sign(-0.5, 0.2) == "−" and traj.step_sign(0.3, 0.2) == "≈"
    assert flatten({"trainer": {"max_epochs": 1}, "baselines": False, "x": None}) == \
        ["trainer.max_epochs=1", "baselines=false", "x=null"]


@pytest.mark.slow  # 13 rows trained
def test_every_row_trains_at_smoke_in_one_process(tmp_path):
    """All 13 rows through the trajectory runner (in-process, 1 epoch, 1 probe epoch):
    each leaves results.json; the runner writes trajectory.md/.json/.png."""
    from ldae.cli import compose_config

    cfg = compose_config(["scale=smoke"], "trajectory")
    assert budget_overrides(cfg) == ["trainer.max_epochs=1", "probe.epochs=1", "baselines=false"]
    doc = traj.run_trajectory(cfg, tmp_path, ["scale=smoke", "steps=null"])
    for name in NAMES:
        res = json.loads((tmp_path / name / "seed0" / "results.json").read_text())
        assert res["experiment"] == name and res["scale"] == "smoke" and res["epochs"] == 1
        assert_top1_of(res["probe_top1"], 128)  # of data.num_val=128 shapes
        assert res["pretrain_loss"] > 0
    assert [r["n"] for r in doc["rows"]] == [1] * 13
    r0 = json.loads((tmp_path / NAMES[0] / "seed0" / "results.json").read_text())
    assert r0["gen_fid"] == "no FID weights" and r0["tokenizer_name"] == "vqgan" and r0["notes"]
    assert "notes" not in json.loads((tmp_path / NAMES[2] / "seed0" / "results.json").read_text())
    # Tokenizer artifacts: rows 00/01 share one "VQGAN" (trained once), 02 and 03 each train their own.
    tok = [json.loads((tmp_path / n / "seed0" / "results.json").read_text())["tokenizer"] for n in NAMES[:4]]
    assert tok[1]["cached"] and tok[1]["key"] == tok[0]["key"]
    assert len({t["key"] for t in tok}) == 3
    saved = json.loads((tmp_path / "trajectory.json").read_text())
    assert saved["meta"]["finished"] and len(saved["rows"]) == 13
    md = (tmp_path / "trajectory.md").read_text()
    assert len(re.findall(r"^\| \d\d \|", md, re.M)) == 13 and "no FID weights / 11.6" in md
    assert (tmp_path / "trajectory.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow  # 4 rows and 2 baselines trained
def test_two_rows_two_seeds(tmp_path, monkeypatch):
    """`steps=[11,12] seeds=2 scale=smoke`: the three files, mean ± std over seeds, a command-line key beats
    the budget; the same command again into the same folder recomputes nothing (the real results.json's
    fingerprint matches the rerun's composed row)."""
    from ldae.cli import compose_config

    ov = ["scale=smoke", "steps=[11,12]", "seeds=2", "probe.epochs=2"]
    cfg = compose_config(ov, "trajectory")
    doc = traj.run_trajectory(cfg, tmp_path, ov)
    assert [r["step"] for r in doc["rows"]] == [11, 12] and [r["n"] for r in doc["rows"]] == [2, 2]
    assert doc["rows"][1]["std"] is not None and doc["rows"][1]["sign"] in "+−≈"
    for f in ("trajectory.md", "trajectory.json"):
        assert (tmp_path / f).read_text().strip()
    size, px = png_pixels(tmp_path / "trajectory.png")
    assert size == (720, 504) and px.std() > 0  # 2 rows: plot's minimum figsize (6, 4.2) at 120 dpi
    res = json.loads((tmp_path / "12_predict_image" / "seed1" / "results.json").read_text())
    assert res["seed"] == 1 and len(res["probe_curve"]) >= 1
    # The baselines, once per seed beside the rows (the last row's architecture), in the json and the table.
    base = doc["meta"]["baselines"]
    assert base["row"] == "12_predict_image" and len(base["pixels"]) == len(base["random"]) == 2
    for seed in (0, 1):
        b = json.loads((tmp_path / "baselines" / f"seed{seed}" / "baselines.json").read_text())
        assert [b["baseline_pixels_top1"], b["baseline_random_top1"]] == [base["pixels"][seed], base["random"][seed]]
    md = (tmp_path / "trajectory.md").read_text()
    assert "| — | baseline: raw pixels" in md and "| — | chance (100 / classes) | 10.00 |" in md
    assert (tmp_path / "12_predict_image" / "seed1" / "config.yaml").read_text().count("epochs: 2") >= 1
    import ldae.train

    monkeypatch.setattr(ldae.train, "run", lambda *a: pytest.fail("a finished row was recomputed"))
    again = traj.run_trajectory(cfg, tmp_path, ov)
    assert [r["top1"] for r in again["rows"]] == [r["top1"] for r in doc["rows"]]
    with pytest.raises(Exception, match="unknown rows"):
        traj.run_trajectory(compose_config(["scale=smoke", "steps=[13]"], "trajectory"), tmp_path, [])


class _Killed(BaseException):
    """What a SIGKILL amounts to for the runner: nothing after it runs (no except Exception catches it)."""


@pytest.mark.slow  # 6 rows trained
def test_a_killed_trajectory_resumes_at_its_first_unfinished_row(tmp_path, monkeypatch):
    """Rows 10, 11, 12 x 2 seeds; the run dies in row 11 seed 1. The same command into the same folder reuses the
    three finished runs' results.json and runs the other three; a changed budget recomputes (its fingerprint
    differs); a corrupt or unfinished results.json is recomputed."""
    import ldae.train
    from ldae.cli import compose_config
    from ldae.resume import fingerprint

    calls = []

    def fake_run(cfg, out, kill_at=None):
        calls.append((cfg.name, int(cfg.seed)))
        if (cfg.name, int(cfg.seed)) == kill_at:
            raise _Killed()
        res = {"experiment": cfg.name, "seed": int(cfg.seed), "probe_top1": 10.0 * len(calls), "wall_s": 1.0,
               "pretrain_loss": 0.5, "config_fingerprint": fingerprint(cfg), "epochs": int(cfg.trainer.max_epochs)}
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(res))
        return res

    ov = ["scale=smoke", "steps=[10,11,12]", "seeds=2", "baselines_once=false"]
    cfg = compose_config(ov, "trajectory")
    monkeypatch.setattr(ldae.train, "run", lambda c, o: fake_run(c, o, kill_at=("11_image_output", 1)))
    with pytest.raises(_Killed):
        traj.run_trajectory(cfg, tmp_path, ov)
    first = list(calls)
    assert first == [("10_image_input", 0), ("10_image_input", 1), ("11_image_output", 0), ("11_image_output", 1)]
    before = {p: p.read_text() for p in tmp_path.rglob("results.json")}
    assert len(before) == 3

    calls.clear()
    monkeypatch.setattr(ldae.train, "run", fake_run)
    doc = traj.run_trajectory(cfg, tmp_path, ov)
    assert calls == [("11_image_output", 1), ("12_predict_image", 0), ("12_predict_image", 1)]
    assert {p: p.read_text() for p in before} == before  # the finished rows' files untouched
    assert [r["n"] for r in doc["rows"]] == [2, 2, 2] and doc["meta"]["finished"]
    assert doc["runs"]["10_image_input"][0]["probe_top1"] == 10.0  # the first attempt's numbers, reused

    # A finished row whose results.json is corrupt, or without a probe result, is run again.
    (tmp_path / "10_image_input" / "seed0" / "results.json").write_text("{trunc")
    (tmp_path / "10_image_input" / "seed1" / "results.json").write_text(json.dumps({"probe_top1": None}))
    calls.clear()
    traj.run_trajectory(cfg, tmp_path, ov)
    assert calls == [("10_image_input", 0), ("10_image_input", 1)]

    # Another budget is another run: nothing is reused.
    calls.clear()
    ov2 = [*ov, "trainer.max_epochs=2"]
    traj.run_trajectory(compose_config(ov2, "trajectory"), tmp_path, ov2)
    assert len(calls) == 6
