"""The apps as users run them (console scripts, subprocesses): a smoke run under a minute, and bad input as one
line on stderr, exit 2, no traceback."""

import json
import os

import pytest
from helpers import RESULT_KEYS, ROOT, run_cli


def _cli(*args, timeout=120):
    return run_cli("ldae-train", *args, timeout=timeout)


def test_cli_smoke_run_writes_its_results_and_config(tmp_path):
    # Its own run, not tests/integration's shared one: the console script itself is what is checked. Its speed is
    # a benchmark's business (results.json's `wall_s`, or a timer over the whole command), not a test's.
    p = _cli("experiment=ldae", "scale=smoke", f"hydra.run.dir={tmp_path}")
    assert p.returncode == 0, p.stderr[-2000:]
    res = json.loads((tmp_path / "results.json").read_text())
    assert all(k in res for k in RESULT_KEYS)
    assert (tmp_path / ".hydra" / "config.yaml").exists()


@pytest.mark.parametrize("args, first_line", [
    (["experiment=nope"], "ldae-train: error: unknown experiment 'nope'; allowed: ldae"),
    (["data=nope"], "ldae-train: error: unknown data 'nope'; allowed: cifar10, fashion_mnist, imagefolder, plugin, shapes"),
    (["tokenizer=nope"], "ldae-train: error: unknown tokenizer 'nope'; allowed: conv_vae, none, patch_ae, patch_pca, patch_vae, plugin, vqgan, vqgan_no_perceptual"),
    (["schedule=no_such_schedule"], "ldae-train: error: unknown schedule 'no_such_schedule'; allowed:"),
    (["tokenizer.latent_dim=1000"], "ldae-train: error: tokenizer.latent_dim=1000 is out of range; allowed: 1..768"),
    (["data=imagefolder", "data.root=/nonexistent"], "ldae-train: error: data.root=/nonexistent has no 'train' folder"),
    (["data=fashion_mnist", "data.root=/nonexistent"], "ldae-train: error: data.root=/nonexistent holds no Fashion-MNIST"),
    (["data.batchsize=3"], "ldae-train: error: unknown config key 'data.batchsize'"),
])
def test_cli_bad_input_is_one_clear_line(args, first_line):
    p = _cli(*args, "scale=smoke", timeout=60)
    assert p.returncode == 2
    assert p.stderr.splitlines()[0].startswith(first_line), p.stderr
    assert "Traceback" not in p.stderr and "Traceback" not in p.stdout


def test_probe_cli_bad_input():
    p = run_cli("ldae-probe", timeout=60, env=dict(os.environ))
    assert p.returncode == 2 and p.stderr.startswith("ldae-probe: error: missing required value 'ckpt_path'")
    p = run_cli("ldae-probe", "ckpt_path=/nonexistent.ckpt", env=dict(os.environ))
    assert p.returncode == 2 and "ckpt_path=/nonexistent.ckpt does not exist" in p.stderr
    assert "Traceback" not in p.stderr


# A handful end to end: the console script, its exit code and stderr as a user sees them.
CLI_CASES = [
    ("ldae-train", ["experiment=ldae", "scale=smoke", "seed=abc"], "seed=abc must be an integer >= 0"),
    ("ldae-train", ["experiment=ldae", "scale=smoke", "data.hflip=maybe"], "data.hflip=maybe must be true or false"),
    ("ldae-train", ["experiment=ldae", "scale=smoke", "trainer.precision=bogus"], "unknown trainer.precision 'bogus'"),
    ("trajectory", ["scale=smoke", "seeds=abc"], "seeds=abc must be an integer >= 1"),
    ("report", ["/nonexistent/runs"], "folder /nonexistent/runs does not exist"),
]


@pytest.mark.parametrize("prog, args, message", CLI_CASES, ids=[f"{p} {' '.join(a)}" for p, a, _ in CLI_CASES])
def test_bad_input_on_the_command_line(prog, args, message):
    import os
    import subprocess
    import sys

    if prog == "ldae-train":
        p = run_cli(prog, *args, timeout=300)  # seconds of imports, minutes on a loaded 2-core machine
    else:
        script = ROOT / "experiments" / f"{prog}.py"
        p = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "HYDRA_FULL_ERROR": "0"})
    assert p.returncode == 2, p.stderr[-1500:]
    assert p.stderr.strip().splitlines() == [f"{prog}: error: " + p.stderr.split(": error: ", 1)[1].strip()]
    assert p.stderr.startswith(f"{prog}: error: {message}") and "Traceback" not in p.stderr + p.stdout, p.stderr


@pytest.mark.parametrize("module, args", [
    ("ldae.train", ["experiment=ldae", "scale=smoke", "seed=abc"]),
    ("ldae.probe", ["ckpt_path=/nonexistent.ckpt"]),
    ("ldae.export", ["ckpt_path=/nonexistent.ckpt"]),
])
def test_a_refused_command_line_never_imports_torch(module, args):
    """The commands refuse bad input before torch (and Lightning) load: a typo costs a second, not an import."""
    import subprocess
    import sys

    code = (f"import sys, importlib\nsys.argv = ['x', *{args!r}]\nm = importlib.import_module({module!r})\n"
            "try:\n    m.cli()\nexcept SystemExit as e:\n    print(e.code)\n"
            "print(sorted(k for k in ('torch', 'pytorch_lightning') if k in sys.modules))\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.stdout.splitlines()[-2:] == ["2", "[]"], (p.stdout, p.stderr[-1500:])
