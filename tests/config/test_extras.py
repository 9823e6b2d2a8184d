"""Dependencies as a library declares them: ranges in pyproject, exact builds in constraints.txt, optional
features behind extras that name themselves when missing."""

import re
import sys
import tomllib

import pytest
from helpers import ROOT as REPO


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
