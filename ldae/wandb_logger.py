"""wandb beside the CSV logger: files inside the run folder, offline without credentials, never a prompt,
and a wandb failure never stops training (the run goes on with CSV only)."""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

log = logging.getLogger("ldae")


def has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def resolve_mode(mode: str) -> str:
    if mode == "auto":
        return "online" if has_credentials() else "offline"
    return mode


def make_wandb_logger(cfg, out: Path, stage: str):
    """A Lightning WandbLogger for one stage of a run (job_type = the stage), or None if wandb fails."""
    w = cfg.logger
    try:
        from omegaconf import OmegaConf
        from pytorch_lightning.loggers import WandbLogger

        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        if wandb.run is not None:  # one wandb run per stage: close the previous stage's
            wandb.finish()
        mode = resolve_mode(w.mode)
        # The run id lives in the run folder: a resumed run continues the same wandb run.
        id_file = out / "wandb" / f"{stage}.id"
        if id_file.exists():
            run_id = id_file.read_text().strip()
        else:
            run_id = uuid.uuid4().hex[:12]  # wandb ids: lower-case letters and digits
            id_file.parent.mkdir(parents=True, exist_ok=True)
            id_file.write_text(run_id + "\n")
        logger = WandbLogger(project=w.project, entity=w.entity, group=w.group or cfg.name, name=f"{cfg.name}-{stage}",
                             job_type=stage, tags=list(w.tags), save_dir=str(out), mode=mode, id=run_id,
                             resume="allow",
                             config=OmegaConf.to_container(cfg, resolve=True), settings=wandb.Settings(silent=True))
        _ = logger.experiment  # start now, so a failure is caught here and not mid-training
        return logger
    except Exception as e:  # noqa: BLE001 - wandb must never stop a run
        log.warning("wandb disabled for this run (%s: %s); CSV logs continue", type(e).__name__, e)
        return None
