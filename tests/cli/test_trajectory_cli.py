"""experiments/trajectory.py as users run it: one row into its files, a bad scale in one line."""

import json

import pytest
from helpers import ROOT


@pytest.mark.slow  # a training subprocess
def test_trajectory_cli_writes_its_files(tmp_path):
    """The Hydra app end to end (one subprocess: rows are composed inside the running app)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, str(ROOT / "experiments" / "trajectory.py"), "scale=smoke", "steps=[12]",
                        f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert "[trajectory 1/1] 12_predict_image seed 0: top-1" in p.stdout
    assert json.loads((tmp_path / "12_predict_image" / "seed0" / "results.json").read_text())["experiment"] == \
        "12_predict_image"
    assert {"trajectory.md", "trajectory.json", "trajectory.png"} <= {f.name for f in tmp_path.iterdir()}
    bad = subprocess.run([sys.executable, str(ROOT / "experiments" / "trajectory.py"), "scale=smok"],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "unknown scale 'smok'" in bad.stderr
