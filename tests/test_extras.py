"""Dependencies as a library declares them: ranges in pyproject, exact builds in constraints.txt, optional
features behind extras that name themselves when missing."""

import re
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _missing(monkeypatch, module: str) -> None:
    """Simulate an extra that is not installed: a None entry in sys.modules fails both import and find_spec."""
    monkeypatch.setitem(sys.modules, module, None)


@pytest.mark.parametrize("argv, module, extra", [
    (["-m", "sweep=optuna_lr", "scale=smoke"], "hydra_plugins.hydra_optuna_sweeper", "optuna"),
    (["-m", "hydra/sweeper=optuna", "scale=smoke"], "hydra_plugins.hydra_optuna_sweeper", "optuna"),
    (["-m", "hydra/launcher=slurm", "scale=smoke"], "hydra_plugins.hydra_submitit_launcher", "slurm"),
    (["-m", "hydra/launcher=submitit_local", "seed=0,1"], "hydra_plugins.hydra_submitit_launcher", "slurm"),
])
def test_a_missing_extra_is_one_line_naming_it(monkeypatch, capsys, argv, module, extra):
    from ldae.cli import precheck_cli

    _missing(monkeypatch, module)
    with pytest.raises(SystemExit) as e:
        precheck_cli("ldae-train", argv)
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err.count("\n") == 1 and err.startswith("ldae-train: error: ") and f"pip install ldae[{extra}]" in err
    assert "Traceback" not in err


def test_installed_extras_pass_the_check(capsys):
    """The same command lines go through when the plugins are there (the shared dev install has them)."""
    from ldae.cli import precheck_cli
    from ldae.extras import has_extra

    if not (has_extra("optuna") and has_extra("slurm")):
        pytest.skip("the optuna and slurm extras are not installed")
    precheck_cli("ldae-train", ["-m", "sweep=optuna_lr", "scale=smoke"])
    precheck_cli("ldae-train", ["-m", "hydra/launcher=submitit_local", "scale=smoke"])
    assert capsys.readouterr().err == ""


def test_fid_without_torch_fidelity_names_the_fidelity_extra(monkeypatch, compose):
    from ldae.config import ConfigError, validate

    cfg = compose("experiment=trajectory/00_dit_baseline", "gen.enabled=true", "gen.fid.inception_path=/x.pth")
    validate(cfg)  # installed: no complaint
    _missing(monkeypatch, "torch_fidelity")
    with pytest.raises(ConfigError, match=re.escape("pip install ldae[fidelity]")):
        validate(cfg)
    validate(compose("experiment=trajectory/00_dit_baseline", "gen.enabled=true"))  # no FID asked: fine


def test_pins_live_in_the_constraints_file_not_in_the_package():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = {re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0]: d for d in meta["dependencies"]}
    for pkg in ("torch", "torchvision"):
        assert "==" not in deps[pkg], deps[pkg]
        assert re.search(rf"^{pkg}==\d", (REPO / "constraints.txt").read_text(), re.M)
    assert "diffusers" in deps and "torchmetrics" in deps
    for optional in ("hydra-optuna-sweeper", "hydra-submitit-launcher", "torch-fidelity"):
        assert optional not in deps
    extras = meta["optional-dependencies"]
    assert {"optuna", "slurm", "fidelity", "dev", "all"} <= set(extras)
    # dev installs everything the tests use, the other extras included.
    assert any(d.startswith("ldae[") and all(x in d for x in ("optuna", "slurm", "fidelity")) for d in extras["dev"])
    for cmd_file in ("README.md", ".ci/run"):
        installs = [ln for ln in (REPO / cmd_file).read_text().splitlines() if re.search(r"pip install .*-e [\"'.]", ln)]
        assert installs and all("-c constraints.txt" in ln for ln in installs), cmd_file


@pytest.mark.slow
def test_a_real_venv_without_the_optuna_extra_refuses_the_sweep_in_one_line(tmp_path):
    """Not simulated: a fresh venv that sees every installed dependency but optuna and its Hydra sweeper
    (a folder of links to the shared site-packages, those left out), with ldae from this checkout."""
    import os
    import subprocess
    import sysconfig

    site = Path(sysconfig.get_paths()["purelib"])
    deps = tmp_path / "deps"
    (deps / "hydra_plugins").mkdir(parents=True)
    for p in site.iterdir():
        low = p.name.lower()
        if low.startswith(("optuna", "hydra_optuna_sweeper", "__editable__", "_ldae", "ldae")) or p.suffix == ".pth":
            continue
        if p.name == "hydra_plugins":
            for q in p.iterdir():
                if q.name != "hydra_optuna_sweeper":
                    (deps / "hydra_plugins" / q.name).symlink_to(q)
            continue
        (deps / p.name).symlink_to(p)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "venv")], check=True)
    py = tmp_path / "venv" / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "_deps.pth").write_text(f"{deps}\n{REPO}\n")
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONPATH": ""}
    probe = subprocess.run([str(py), "-c", "import importlib.util as u, ldae; "
                            "print(u.find_spec('optuna') is None, u.find_spec('hydra') is not None, ldae.__file__)"],
                           env=env, capture_output=True, text=True, check=True).stdout.split()
    assert probe[:2] == ["True", "True"] and Path(probe[2]).is_relative_to(REPO)
    r = subprocess.run([str(py), "-m", "ldae.train", "-m", "sweep=optuna_lr", "scale=smoke"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ldae-train: error: ") and "pip install ldae[optuna]" in lines[0]
    assert "Traceback" not in r.stderr and not (tmp_path / "multirun").exists()
    # With the extra (this interpreter's install, by the constraints file) the same sweep runs: one trial here.
    r = subprocess.run([sys.executable, "-m", "ldae.train", "-m", "sweep=optuna_lr", "scale=smoke", "baselines=false",
                        "hydra.sweeper.n_trials=1", f"hydra.sweep.dir={tmp_path / 'ms'}"], cwd=tmp_path,
                       env={**os.environ, "HYDRA_FULL_ERROR": "0", "LDAE_CACHE": str(tmp_path / "cache")},
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(list((tmp_path / "ms").rglob("results.json"))) == 1
