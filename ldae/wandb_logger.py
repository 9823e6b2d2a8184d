"""wandb beside the CSV logger: files inside the run folder, offline without credentials, never a prompt,
and a wandb failure never stops training (the run goes on with CSV only).

One wandb run per stage of a run folder, organised for comparing ablations (ldae/run_identity.py):
project = logger.project, group = the experiment family, name = the trajectory row or sweep point,
job_type = the stage (tokenizer, pretrain, probe_encoder, ...), tags = the overrides that make this point,
config = the resolved config flat (dotted keys), summary = the fixed names of DESIGN.md section 3
(`pretrain/loss`, `tokenizer/psnr`, `gen/fid`, `probe/top1`), set explicitly at the end of each stage.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

from pytorch_lightning.loggers import WandbLogger

log = logging.getLogger("ldae")

SUMMARY_NAMES = ("probe/top1", "pretrain/loss", "tokenizer/psnr", "gen/fid")


def has_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def resolve_mode(mode: str) -> str:
    if mode == "auto":
        return "online" if has_credentials() else "offline"
    return mode


def flat_config(node, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1}: wandb's run table filters and groups by these columns."""
    out = {}
    for k, v in node.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_config(v, key + "."))
        else:
            out[key] = v
    return out


def _warn(what: str, e: Exception) -> None:
    log.warning("wandb: %s failed (%s: %s); the run goes on", what, type(e).__name__, e)


def _warns_instead(name: str):
    """WandbLogger's method `name`, with any exception turned into a warning."""
    method = getattr(WandbLogger, name)

    def call(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except Exception as e:  # noqa: BLE001 - wandb must never stop a run
            _warn(name, e)

    call.__name__ = name
    return call


class SafeWandbLogger(WandbLogger):
    """Lightning's WandbLogger whose logging calls warn instead of raising: wandb never stops training."""

    log_metrics = _warns_instead("log_metrics")
    log_image = _warns_instead("log_image")
    after_save_checkpoint = _warns_instead("after_save_checkpoint")
    finalize = _warns_instead("finalize")

    def log_hyperparams(self, *args, **kwargs):
        """Nothing: the run's config is already the resolved config, flat; Lightning's nested copy of the
        module's hparams would repeat every key under `config.` (csv/STAGE/hparams.yaml keeps it)."""


# The first failure to start wandb in this process (None: none yet). An unreachable server costs its init
# timeout (90 s) at every stage and every trajectory row; after one failure the rest of the run logs to CSV only.
_FAILED: str | None = None


def forget_wandb_failure() -> None:
    """Try wandb again at the next stage (tests; a long-lived process that knows the server is back)."""
    global _FAILED
    _FAILED = None


def make_wandb_logger(cfg, out: Path, stage: str):
    """A Lightning WandbLogger for one stage of a run (job_type = the stage), or None if wandb fails, now or
    earlier in this process."""
    global _FAILED
    w = cfg.logger
    if _FAILED is not None:
        log.warning("wandb skipped for stage %s: it failed earlier in this run (%s); CSV logs only", stage, _FAILED)
        return None
    try:
        from omegaconf import OmegaConf

        import wandb

        from ldae.run_identity import identity

        os.environ.setdefault("WANDB_SILENT", "true")
        finish()  # one wandb run per stage: close the previous stage's
        mode = resolve_mode(w.mode)
        # The run id lives in the run folder: a resumed run continues the same wandb run.
        id_file = out / "wandb" / f"{stage}.id"
        if id_file.exists():
            run_id = id_file.read_text().strip()
        else:
            run_id = uuid.uuid4().hex[:12]  # wandb ids: lower-case letters and digits
            id_file.parent.mkdir(parents=True, exist_ok=True)
            id_file.write_text(run_id + "\n")
        ident = identity(cfg)
        config = flat_config(OmegaConf.to_container(cfg, resolve=True))
        # What joins the stage runs of one run folder (experiments/report.py merges them), and where it is.
        config.update({"run.dir": str(Path(out).resolve()), "run.stage": stage, "run.family": ident["family"],
                       "run.point": ident["point"], **{f"run.swept.{k}": v for k, v in ident["swept"].items()}})
        logger = SafeWandbLogger(project=w.project, entity=w.entity, group=ident["group"], name=ident["point"],
                                 job_type=stage, tags=list(dict.fromkeys([*ident["tags"], *w.tags])),
                                 save_dir=str(out), mode=mode, id=run_id, resume="allow", config=config,
                                 settings=wandb.Settings(silent=True))
        _ = logger.experiment  # start now, so a failure is caught here and not mid-training
        return logger
    except Exception as e:  # noqa: BLE001 - wandb must never stop a run
        _FAILED = f"{type(e).__name__}: {e}".splitlines()[0]
        log.warning("wandb disabled for this run (%s); CSV logs continue, and later stages do not try again",
                    _FAILED)
        return None


def wandb_loggers(loggers) -> list:
    return [lg for lg in loggers or () if isinstance(lg, WandbLogger)]


def set_summary(loggers, metrics: dict) -> None:
    """run.summary[name] = value for the numeric entries of `metrics`, on every wandb logger in `loggers`
    (the final value of a stage, not the last logged step)."""
    values = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for lg in wandb_loggers(loggers):
        try:
            lg.experiment.summary.update(values)
        except Exception as e:  # noqa: BLE001
            _warn("summary", e)


def log_pictures(loggers, pictures: dict, step: int | None = None) -> None:
    """Log {key: PNG path} as wandb images on every wandb logger in `loggers`."""
    if not pictures:
        return
    for lg in wandb_loggers(loggers):
        for key, path in pictures.items():
            kw = {"step": step} if step is not None else {}
            lg.log_image(key=key, images=[str(path)], caption=[Path(path).name], **kw)


def finish() -> None:
    """Close the current wandb run (if any): the next stage or the next job of a multirun opens its own."""
    try:
        import wandb

        if wandb.run is not None:
            wandb.finish()
    except Exception as e:  # noqa: BLE001
        _warn("finish", e)
