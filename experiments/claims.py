"""The claims suite: PAPER.md section 3's qualitative claims tested with seeds and standard errors.

    python experiments/claims.py scale=cpu data=fashion_mnist               # all claims (conf/claims.yaml)
    python experiments/claims.py scale=smoke 'claims=[9c,13b]' seeds=2

Writes claims.md, claims.json and claims.png into its run folder; the logic is ldae/report/claims.py.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from ldae.cli import CONF_DIR, fail, precheck_cli
from ldae.errors import ConfigError
from ldae.report.claims import run_claims
from ldae.report.compose import budget_overrides, user_overrides

OWN_KEYS = ("claims", "seeds", "tol", "budget", "budget_name")


@hydra.main(config_path=str(CONF_DIR), config_name="claims", version_base=None)
def _hydra_main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    task = list(hc.overrides.task)
    try:
        doc = run_claims(cfg, cfg.output_dir or hc.runtime.output_dir, user_overrides(task, OWN_KEYS, "claims"),
                         budget_overrides(cfg), "python experiments/claims.py " + " ".join(task))
    except ConfigError as e:
        fail("claims", str(e))
    if any("error" in rec for by_seed in doc["runs"].values() for rec in by_seed.values()):
        sys.exit(1)


if __name__ == "__main__":
    precheck_cli("claims", sys.argv[1:], config_name="claims")
    _hydra_main()
