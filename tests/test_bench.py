"""experiments/bench.py: the step table (CLI, as users run it) and the data-path table (in-process)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


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


def test_bench_loader_times_synthetic_jpegs(compose, tmp_path):
    from ldae.bench import bench_loader, loader_table

    cfg = compose("scale=smoke", "bench.loader=true", "bench.loader_images=64", "bench.loader_workers=[0,1]", "data.batch_size=16",
                  config_name="bench")
    rows, facts = bench_loader(cfg)
    assert [r["workers"] for r in rows] == [0, 1] and all(r["images"] == 48 for r in rows)
    assert "synthetic JPEGs 20x20" in loader_table(rows, facts)


def test_unknown_bench_variant_is_a_config_error(compose):
    from ldae.bench import variant_config
    from ldae.config import ConfigError

    with pytest.raises(ConfigError, match="unknown bench variant 'turbo'"):
        variant_config(compose("scale=smoke", config_name="bench"), "turbo")
