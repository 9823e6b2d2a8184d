"""ldae as a normal package: the wheel carries `conf/`, the apps find it from any folder, users add their own."""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from helpers import ROOT as REPO
from helpers import assert_top1_of

# What a build reads: the rest of the checkout (outputs, caches, the venv) stays out of the copy.
BUILD_INPUTS = ("ldae", "conf", "pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE", "CITATION.cff")


def _user_conf(tmp_path: Path) -> Path:
    """A user's own config folder with one extra option in an existing group."""
    conf = tmp_path / "my_conf"
    (conf / "schedule").mkdir(parents=True)
    (conf / "schedule" / "my_cosine.yaml").write_text((REPO / "conf" / "schedule" / "cosine.yaml").read_text())
    return conf


def test_searchpath_adds_a_users_config_folder(tmp_path):
    from ldae.cli import check_group_overrides, compose_config
    from ldae.errors import ConfigError

    sp = f"hydra.searchpath=[file://{_user_conf(tmp_path)}]"
    check_group_overrides([sp, "schedule=my_cosine"])
    assert compose_config([sp, "schedule=my_cosine", "scale=smoke"]).schedule.name == "cosine"
    with pytest.raises(ConfigError, match="unknown schedule 'my_cosine'; allowed: cosine, ddpm_linear"):
        check_group_overrides(["schedule=my_cosine"])
    # Named by the search path, the user's option is among the allowed ones of a typo's message.
    with pytest.raises(ConfigError, match="my_cosine"):
        check_group_overrides([sp, "schedule=my_cosin"])


def test_precheck_keeps_the_searchpath(tmp_path, capsys):
    """The CLI's precheck composes with the user's folder (it used to drop every hydra.* override)."""
    from ldae.cli import precheck_cli

    sp = f"hydra.searchpath=[file://{_user_conf(tmp_path)}]"
    precheck_cli("ldae-train", [sp, "schedule=my_cosine", "scale=smoke"])  # returns: no exit
    with pytest.raises(SystemExit) as e:
        precheck_cli("ldae-train", ["schedule=my_cosine", "scale=smoke"])
    assert e.value.code == 2 and "unknown schedule 'my_cosine'" in capsys.readouterr().err


def _venv_with_shared_deps(root: Path) -> Path:
    """A fresh venv that sees this interpreter's installed dependencies through a plain path entry (.pth
    files there, such as an editable ldae's finder, are not executed, so ldae itself is not seen)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    py = root / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(purelib, "_ldae_test_deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    return py


@pytest.mark.slow
def test_wheel_installs_and_runs_from_any_folder(tmp_path):
    src = tmp_path / "src"
    for name in BUILD_INPUTS:
        p = REPO / name
        if p.is_dir():
            shutil.copytree(p, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif p.exists():
            shutil.copy2(p, src / name)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist")], check=True, env=env)
    (wheel,) = (tmp_path / "dist").glob("ldae-*.whl")
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert "ldae/conf/train.yaml" in names and any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert len([n for n in names if n.startswith("ldae/conf/")]) == len(list((REPO / "conf").rglob("*.yaml")))

    venv = tmp_path / "venv"
    py = _venv_with_shared_deps(venv)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-compile", "-q",
                    str(wheel)], check=True, env=env)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([str(py), "-c", "import json, ldae, ldae.cli as c; "
                            "print(json.dumps([ldae.__file__, str(c.CONF_DIR / 'train.yaml')]))"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True)
    init, train_yaml = map(Path, json.loads(where.stdout))
    assert init.is_relative_to(venv) and Path(train_yaml).is_file() and train_yaml.is_relative_to(venv)
    assert train_yaml.read_text() == (REPO / "conf" / "train.yaml").read_text()

    r = subprocess.run([str(venv / "bin" / "ldae-train"), "experiment=ldae", "scale=smoke", "baselines=false"],
                       cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    (res,) = (elsewhere / "outputs" / "ldae" / "smoke").glob("*/results.json")
    assert json.loads(res.read_text())["experiment"] == "ldae"

    ckpt = res.parent / "checkpoints" / "last.ckpt"
    r = subprocess.run([str(venv / "bin" / "ldae-probe"), f"ckpt_path={ckpt}", "hydra.run.dir=probe_out"],
                       cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert_top1_of(json.loads((elsewhere / "probe_out" / "results.json").read_text())["probe_top1"], 128)


def test_license_and_citation():
    import tomllib

    import yaml

    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert meta["license"] == "Apache-2.0" and "Apache License" in (REPO / "LICENSE").read_text()[:200]
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == meta["license"] and cff["version"] == meta["version"]
    paper = cff["preferred-citation"]
    assert [a["family-names"] for a in paper["authors"]] == ["Chen", "Liu", "Xie", "He"] and paper["year"] == 2024
    assert any("2401.14404" in str(i["value"]) for i in paper["identifiers"])
