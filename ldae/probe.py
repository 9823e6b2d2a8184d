"""`ldae-probe ckpt_path=CKPT [probe=linear|finetune|knn] [probe.t=20 ...]`: evaluate a pretraining checkpoint.

Rebuilds the model from the config stored in the checkpoint (plain data, loaded with weights_only=True),
evaluates it with the protocol (ldae.evaluation) and writes results.json in its own run folder: `protocol`
and its top-1 (`probe_top1` for linear, `knn_top1`, `finetune_top1`).
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from ldae.cli import CONF_DIR, fail, precheck_cli
from ldae.errors import ConfigError
from ldae.utils.io import DiskFullError, FolderError, require_checkpoint_file


def probe_keys(task: list[str]) -> list[str]:
    """The probe keys a command line sets (Hydra's task overrides), as ldae.evaluation.probe_config takes them:
    `probe` when it chose a recipe (probe=NAME), then each `probe.KEY` it set."""
    whole = ["probe"] if any(o.startswith("probe=") for o in task) else []
    return whole + [o.lstrip("+").split("=", 1)[0] for o in task if o.lstrip("+").startswith("probe.")]


@hydra.main(config_path=str(CONF_DIR), config_name="eval", version_base=None)
def _hydra_main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    try:
        require_checkpoint_file(cfg.ckpt_path, "official" if cfg.get("official") is not None else "ldae")
        from ldae.evaluation import TOP1_KEY, evaluate_checkpoint  # torch loads after the command line's precheck

        res = evaluate_checkpoint(cfg, cfg.output_dir or hc.runtime.output_dir, probe_keys(list(hc.overrides.task)))
        return res[TOP1_KEY[res["protocol"]]]
    except (ConfigError, DiskFullError, FolderError) as e:
        fail("ldae-probe", str(e))


def cli() -> None:
    precheck_cli("ldae-probe", sys.argv[1:], config_name="eval")
    _hydra_main()


if __name__ == "__main__":
    cli()
