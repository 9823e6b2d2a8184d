"""The whole path of PAPER.md Fig. 6 in one process: every trajectory row (or some), one or more seeds, then a
table (trajectory.md), the numbers (trajectory.json) and a plot in the manner of Fig. 6 (trajectory.png).

    python experiments/trajectory.py scale=cpu                           # 13 rows, 1 seed (~25 min, 2 cores)
    python experiments/trajectory.py scale=smoke 'steps=[11,12]' seeds=2
    python experiments/trajectory.py scale=cpu data=fashion_mnist 'steps=[0,5,12]'

Root config: conf/trajectory.yaml (train.yaml's groups plus `steps`, `seeds` and the per-row `budget`).
Each run is a subfolder `NN_name/seedS/` of the Hydra run folder with its own results.json;
trajectory.json is rewritten atomically after every run, so a crash loses nothing that finished. Fitted
tokenizers are artifacts under paths.cache_dir, so rows (and seeds) that share a tokenizer train it once.
The logic is ldae/report/trajectory.py.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from ldae.cli import CONF_DIR, fail, precheck_cli
from ldae.errors import ConfigError
from ldae.report.trajectory import check_own_keys, run_trajectory
from ldae.utils.io import DiskFullError


@hydra.main(config_path=str(CONF_DIR), config_name="trajectory", version_base=None)
def _hydra_main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    out = cfg.output_dir or hc.runtime.output_dir
    from ldae.train import RunInterrupted

    try:
        doc = run_trajectory(cfg, out, list(hc.overrides.task))
    except ConfigError as e:
        fail("trajectory", str(e))
    except DiskFullError as e:  # one line; the finished rows and the running row's last checkpoint are kept
        fail("trajectory", str(e))
    except RunInterrupted as e:
        print(f"trajectory: {e}; the same command with hydra.run.dir={out} reuses the finished rows",
              file=sys.stderr, flush=True)
        sys.exit(e.exit_code)
    if any("error" in r for rs in doc["runs"].values() for r in rs):
        sys.exit(1)


def cli() -> None:
    precheck_cli("trajectory", sys.argv[1:], config_name="trajectory", check=check_own_keys)
    _hydra_main()


if __name__ == "__main__":
    cli()
