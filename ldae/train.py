"""`ldae-train`: every stage of one experiment (fit the tokenizer, pretrain, linear probe) into one run folder.

    ldae-train experiment=ldae scale=cpu
    ldae-train -m experiment=ldae tokenizer.latent_dim=8,16,32
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from ldae import signals
from ldae.cli import CONF_DIR, fail, precheck_cli
from ldae.config import ConfigError, validate
from ldae.distributed import end_job, is_rank_zero, job_run_dir
from ldae.plan import chance_top1, probe_data, resolve
from ldae.resume import (Heartbeat, checkpoint_problem, claim, find_unfinished, fingerprint, latest_checkpoint,
                         live_owner, register, registry_entry)
from ldae.run_identity import identity
from ldae.utils.io import atomic_write_json, atomic_write_text, check_writable

log = logging.getLogger("ldae")


def run(cfg: DictConfig, output_dir: str | Path) -> dict:
    """Run all stages of `cfg` into `output_dir`; returns (and writes) results.json."""
    import pytorch_lightning as pl

    from ldae.evaluation import probe_all  # (these two load torch: the CLI's precheck runs without it)
    from ldae.stages import pretrain

    t0 = time.time()
    validate(cfg)
    if cfg.probe.name != "linear":
        raise ConfigError(f"ldae-train runs the linear probe (probe=linear, got probe={cfg.probe.name}); evaluate "
                          f"its checkpoint with `ldae-probe ckpt_path=RUN/checkpoints/last.ckpt probe={cfg.probe.name}`")
    check_writable(cfg.paths.cache_dir, "paths.cache_dir")  # before the resume registry in it is read
    out, ckpt_path, owned = resume_point(cfg, Path(output_dir))
    check_room(cfg, out)
    out.mkdir(parents=True, exist_ok=True)
    run_id = fingerprint(cfg)
    if is_rank_zero():  # file writes on rank 0 only (DDP ranks > 0 run the same job into the same folder)
        OmegaConf.save(cfg, out / "config.yaml", resolve=True)
    beat = Heartbeat(cfg) if owned else None  # the registry entry says this run is alive
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    signals.install()
    try:
        module, dm, info = pretrain(cfg, out, ckpt_path)
        probe = probe_all(cfg, module, dm, out, baselines=bool(cfg.baselines))
    except (signals.Interrupted, SystemExit) as e:  # SystemExit: Lightning's SIGTERMException
        if signals.received() is None:
            raise
        raise RunInterrupted(signals.received(), out) from e
    finally:
        signals.uninstall()
        if beat is not None:
            beat.stop()
    tok = module.tokenizer
    plan = resolve(cfg, tokenizer=tok)
    results = {
        "experiment": cfg.name,
        **identity(cfg),  # family, group, point, swept, tags: how experiments/report.py compares runs
        "scale": cfg.scale_name,
        "seed": int(cfg.seed),
        "config_fingerprint": run_id,
        "resumed_from": ckpt_path,
        "data": cfg.data.name,
        "tokenizer_name": cfg.tokenizer.name,
        "latent_dim_paper": plan.latent.d_paper,
        "latent_dim": plan.latent.d,
        "patch_dim": plan.latent.patch_dim,
        # Eq. 4's per-component weights need an orthonormal basis (PCA, pixels); without one the loss is
        # unweighted pixel MSE.
        "loss_weighting": ("per_component" if tok.basis() is not None else "unweighted_pixel_mse")
        if module.objective.spec.per_component else "none",
        **info,
        **probe,
        "wall_s": time.time() - t0,
        "plan": plan.record(),  # everything derived from the config (ldae/plan.py)
    }
    notes = tokenizer_notes(tok)
    if notes:
        results["notes"] = notes
        results.update(tok.describe())
    if not is_rank_zero():
        return results
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "results.md", results_table(results, cfg))
    if cfg.logger.wandb:  # the last stage's wandb run ends with its run, not with the next job of a multirun
        from ldae.wandb_logger import finish

        finish()
    loss = results["pretrain_loss"]
    log.info("results: probe_top1=%.2f pixels=%s random=%s loss=%s wall=%.0fs -> %s",
             results["probe_top1"], results.get("baseline_pixels_top1"), results.get("baseline_random_top1"),
             "none" if loss is None else f"{loss:.4f}", results["wall_s"], out / "results.json")
    return results


def results_table(results: dict, cfg: DictConfig) -> str:
    """The run's probe beside its two baselines and chance: what a reader checks first (did pretraining learn
    anything the probe cannot get from pixels or from a random network of the same shape?)."""
    pdata, chance = probe_data(cfg), chance_top1(cfg)
    rows = [(f"{cfg.name} (pretrained encoder)", results["probe_top1"]),
            ("raw pixels (baseline)", results.get("baseline_pixels_top1")),
            ("random encoder, same architecture (baseline)", results.get("baseline_random_top1")),
            (f"chance (100 / {int(pdata.num_classes)} classes)", chance)]
    lines = [f"# {cfg.name} at scale={cfg.scale_name}, data={cfg.data.name}, seed={int(cfg.seed)}", "",
             f"Linear-probe top-1 (%) on {pdata.name}, the same probe code for every row; "
             f"{results['wall_s']:.0f} s in all.", "", "| encoder | probe top-1 | − chance |", "|---|---|---|"]
    for name, top1 in rows:
        if top1 is not None:  # baselines=false leaves them out
            lines.append(f"| {name} | {top1:.2f} | {top1 - chance:+.2f} |")
    return "\n".join(lines) + "\n"


class RunInterrupted(Exception):
    """SIGTERM or SIGINT stopped the run; the message says where its checkpoint is and how to resume."""

    def __init__(self, signum: int, run_dir: Path):
        import signal

        self.exit_code = 128 + int(signum)  # the shell's convention: 143 for SIGTERM, 130 for SIGINT
        name = signal.Signals(signum).name
        ckpt = latest_checkpoint(run_dir) if is_rank_zero() else None
        if ckpt is None:
            msg = (f"stopped by {name} before the first checkpoint of {run_dir}; nothing to resume: the same "
                   f"command starts afresh")
        else:
            import torch

            step = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True).get("global_step")
            msg = (f"stopped by {name}; checkpoint {ckpt} (step {step}) is saved: run the same command again to "
                   f"resume (resume=auto), or pass ckpt_path={ckpt}")
        super().__init__(msg)


def resume_point(cfg: DictConfig, out: Path) -> tuple[Path, str | None, bool]:
    """(run folder, checkpoint to resume from, whether this process owns the resume entry): `ckpt_path=` if
    given; with resume=auto, the unfinished run of the same config unless its owner is alive (its folder is
    reused, this one keeps a pointer); else a fresh start. Rank zero decides; the ranks it starts follow."""
    rank0 = is_rank_zero()
    if cfg.ckpt_path:
        path = Path(str(cfg.ckpt_path))
        why = "no such file" if not path.is_file() else checkpoint_problem(path)
        if why is not None:
            raise ConfigError(f"ckpt_path={cfg.ckpt_path} is not a checkpoint to resume from ({why}); allowed: "
                              f"an ldae checkpoint such as RUN/checkpoints/last.ckpt, or ckpt_path=null")
        if rank0:
            register(cfg, out)
        return out, str(path), rank0
    if cfg.resume != "auto":
        if rank0:
            register(cfg, out)
        return out, None, rank0
    if job_run_dir():  # a rank started by rank 0, into the folder rank 0 chose: its newest checkpoint
        ckpt = latest_checkpoint(out)
        return out, (str(ckpt) if ckpt else None), False
    if rank0:
        prev, ckpt, owned = claim(cfg, out)
    else:  # torchrun's other ranks read what rank 0 reads (a live owner of another job: their own folder)
        entry = registry_entry(cfg)
        prev = None if entry and live_owner(entry) else find_unfinished(cfg)
        ckpt, owned = (latest_checkpoint(prev) if prev is not None else None), False
    if ckpt is None:
        return out, None, owned
    if prev.resolve() != out.resolve():
        out.mkdir(parents=True, exist_ok=True)
        (out / "RESUMED_IN.txt").write_text(f"{prev}\n")
    log.info("resuming the unfinished run of this config in %s from %s (resume=never starts afresh)", prev, ckpt.name)
    return prev, str(ckpt), owned


def check_room(cfg: DictConfig, out: Path) -> None:
    """Before any work: the run folder can be written and holds one checkpoint."""
    from ldae.models.registry import checkpoint_bytes, lookup

    m = cfg.model
    need = checkpoint_bytes(lookup(m.name), m.mlp_ratio, m.cond_ratio, m.hidden_size, m.depth)
    check_writable(out, "output_dir", need, f"one checkpoint of model.name={m.name} (weights, EMA, AdamW)")


def tokenizer_notes(tok) -> list[str]:
    """Marks every table that shows this row must carry (e.g. a perceptual loss on a random VGG)."""
    from ldae.tokenizers.losses import RANDOM_BACKBONE_NOTE

    return [RANDOM_BACKBONE_NOTE] if tok.describe().get("perceptual_random_backbone") else []


def one_line_errors() -> tuple[type[BaseException], ...]:
    """What ends a run with one line and exit 2 instead of a traceback: bad values, bad data, a diverged loss,
    a full disk (the previous checkpoint intact)."""
    from ldae.data.datasets import DataError
    from ldae.lit.pretrain import NonFiniteLossError
    from ldae.utils.io import DiskFullError, FolderError

    return ConfigError, DataError, NonFiniteLossError, DiskFullError, FolderError


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base=None)
def _hydra_main(cfg: DictConfig) -> float:
    from hydra.core.hydra_config import HydraConfig

    # DDP ranks > 0 get rank 0's folder (ldae/distributed.py): one run folder per job.
    out = job_run_dir() or cfg.output_dir or HydraConfig.get().runtime.output_dir
    ok = False
    try:
        top1 = run(cfg, out)["probe_top1"]
        ok = True
        return top1
    except one_line_errors() as e:
        fail("ldae-train", str(e))
    except RunInterrupted as e:
        print(f"ldae-train: {e}", file=sys.stderr, flush=True)
        sys.exit(e.exit_code)
    finally:
        end_job(ok)  # retire this job's DDP ranks, so the next job of a sweep starts its own


def cli() -> None:
    precheck_cli("ldae-train", sys.argv[1:])
    _hydra_main()


if __name__ == "__main__":
    cli()
