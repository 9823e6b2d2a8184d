"""experiments/bench.py's data-path table and its variants (in-process; the step table through the CLI is
tests/cli/test_bench_cli.py)."""

import pytest


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
