"""Throughput and MFU of the pretraining step, or of the data path alone (ldae/bench.py does the timing).

    python experiments/bench.py scale=smoke
    python experiments/bench.py scale=paper data=shapes model.name=DiT-L bench.batch_size=64 \
        'bench.variants=[base,bf16,bf16_compile]'
    python experiments/bench.py scale=smoke bench.loader=true 'bench.loader_workers=[0,1,2]'

Prints a markdown table and writes bench.md / bench.json to the run folder (outputs/bench/...).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from ldae.cli import CONF_DIR, fail, precheck_cli
from ldae.errors import ConfigError


def run(cfg: DictConfig, out: Path) -> str:
    from ldae.bench import bench_loader, bench_step, check_config, loader_table, step_table

    check_config(cfg)
    if cfg.bench.loader:
        rows, facts = bench_loader(cfg)
        table = loader_table(rows, facts)
    else:
        rows, facts = bench_step(cfg)
        table = step_table(rows, facts)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.md").write_text(table)
    (out / "bench.json").write_text(json.dumps({"rows": rows, "facts": facts,
                                                "config": OmegaConf.to_container(cfg, resolve=True)}, indent=1))
    print(table)
    return table


@hydra.main(config_path=str(CONF_DIR), config_name="bench", version_base=None)
def main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    try:
        run(cfg, Path(HydraConfig.get().runtime.output_dir))
    except ConfigError as e:
        fail("bench", str(e))


if __name__ == "__main__":
    precheck_cli("bench", sys.argv[1:], config_name="bench")
    main()
