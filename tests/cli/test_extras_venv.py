"""A missing extra for real: a venv without optuna refuses its sweep in one line; with the extra it runs."""

import sys
from pathlib import Path

import pytest
from helpers import ROOT as REPO


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
