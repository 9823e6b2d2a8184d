"""experiments/bench.py's step table, as users run it (a subprocess)."""

import json
import os
import subprocess
import sys

import pytest
from helpers import ROOT


def test_bench_cli_prints_and_writes_the_step_table(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(ROOT / "experiments" / "bench.py"), "scale=smoke", "bench.steps=2",
                        "bench.warmup=1", "bench.repeats=2", "bench.variants=[base,checkpointing]", f"hydra.run.dir={tmp_path}"],
                       capture_output=True, text=True, timeout=180, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| variant | overrides | batch | img/s |" in r.stdout
    assert "| checkpointing | speed.activation_checkpointing=true | 64 |" in r.stdout
    assert (tmp_path / "bench.md").read_text() in r.stdout
    rows = json.loads((tmp_path / "bench.json").read_text())["rows"]
    assert [row["variant"] for row in rows] == ["base", "checkpointing"]
    for row in rows:
        assert row["images_per_s"] > 0 and 0 < row["mfu"] < 1 and row["tflops"] > 0 and row["peak_mem_mib"] > 0
    # Activation checkpointing recomputes, it does not change the loss on the same batch and weights.
    assert rows[1]["loss"] == pytest.approx(rows[0]["loss"], rel=1e-4)
