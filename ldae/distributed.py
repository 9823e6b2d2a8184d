"""Many processes, one job: one Hydra run folder per job (never one per rank), rank-zero side effects.

Three ways processes come to exist, and how each one finds the job's folder:
- Lightning's DDP launcher (`trainer=ddp` on one node): rank 0 is the Hydra job; Lightning would start the
  other ranks by re-running the *command line* (with `-m`, every rank would launch the whole sweep, and
  `${now:...}` would differ). `JobDDPStrategy` starts them instead with *this job's* overrides, no `-m`,
  and the job's folder in `LDAE_RUN_DIR`; `end_job()` retires them so the next job of a sweep starts afresh.
- torchrun: every rank runs Hydra with the same command line; `${run_stamp:...}` in the run/sweep dir is
  torchrun's run id (the same on every rank and node) instead of the clock, so the folders agree.
- SLURM through hydra-submitit-launcher: every task runs the same pickled job (same sweep subdir); Lightning
  reads the SLURM environment.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys

from omegaconf import OmegaConf

RUN_DIR_ENV = "LDAE_RUN_DIR"      # the job's run folder, handed to ranks > 0
RUN_STAMP_ENV = "LDAE_RUN_STAMP"  # a fixed stamp for the run/sweep dir (any launcher that starts all ranks)
# Variables Lightning's launcher leaves in rank 0's environment; while they stand, a later Trainer in the
# same process believes its ranks already exist.
_LAUNCH_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")

_children: list[subprocess.Popen] = []
_saved_env: dict[str, str | None] | None = None


def run_stamp(pattern: str) -> str:
    """The time stamp of run/sweep folders: $LDAE_RUN_STAMP, else torchrun's run id (shared by all ranks),
    else the clock (cached by OmegaConf per process, like Hydra's `now`)."""
    if os.environ.get(RUN_STAMP_ENV):
        return os.environ[RUN_STAMP_ENV]
    if os.environ.get("TORCHELASTIC_RUN_ID") and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return "torchrun-" + os.environ["TORCHELASTIC_RUN_ID"]
    return datetime.datetime.now().strftime(pattern)


OmegaConf.register_new_resolver("run_stamp", run_stamp, use_cache=True, replace=True)


def global_rank() -> int:
    """This process's rank: the process group's when one exists, else the launcher's environment."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return env_rank()


def env_rank() -> int:
    """This process's rank before any process group exists (torchrun / Lightning set RANK, SLURM SLURM_PROCID)."""
    if "RANK" in os.environ:
        return int(os.environ["RANK"])
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ:
        return int(os.environ["SLURM_PROCID"])
    return 0


def is_rank_zero() -> bool:
    return global_rank() == 0


def launched_world_size() -> int:
    """Processes that exist right now (torchrun / SLURM / our DDP children): before Lightning's launcher
    starts the other ranks, rank 0 is alone, so work sharded before `fit` (the latent cache) is its own."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    if "WORLD_SIZE" in os.environ and ("RANK" in os.environ or "LOCAL_RANK" in os.environ):
        return int(os.environ["WORLD_SIZE"])
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ:
        return int(os.environ["SLURM_NTASKS"])
    return 1


def job_run_dir() -> str | None:
    """The run folder rank 0 chose for this job, when this process is one of its extra ranks."""
    return os.environ.get(RUN_DIR_ENV) or None


def _child_command(local_rank: int, run_dir: str) -> list[str]:
    """This Hydra job (its own overrides, no `-m`) into `run_dir`, as the entry point that runs now."""
    from hydra.core.hydra_config import HydraConfig

    import __main__

    hc = HydraConfig.get()
    spec = getattr(__main__, "__spec__", None)
    entry = ["-m", spec.name] if spec is not None else [os.path.abspath(sys.argv[0])]
    return [sys.executable, *entry, *hc.overrides.task, f"hydra.run.dir={run_dir}",
            "hydra.output_subdir=null", f"hydra.job.name=rank{local_rank}"]


def _make_strategy_classes():
    from pytorch_lightning.strategies.launchers.subprocess_script import _SubprocessScriptLauncher
    from pytorch_lightning.strategies import DDPStrategy

    class HydraJobLauncher(_SubprocessScriptLauncher):
        """Starts ranks 1..N-1 of this node as `_child_command` (the job, not the command line)."""

        def __init__(self, *args, run_dir: str, **kwargs):
            super().__init__(*args, **kwargs)
            self.run_dir = run_dir

        def _call_children_scripts(self) -> None:
            global _saved_env
            from hydra.utils import get_original_cwd

            self._check_can_spawn_children()
            self.procs = []
            env = self.cluster_environment
            _saved_env = {k: os.environ.get(k) for k in _LAUNCH_ENV}
            os.environ.update(MASTER_ADDR=env.main_address, MASTER_PORT=str(env.main_port),
                              NODE_RANK=str(env.node_rank()), LOCAL_RANK=str(env.local_rank()),
                              WORLD_SIZE=str(self.num_processes * self.num_nodes))
            for local_rank in range(1, self.num_processes):
                child_env = {**os.environ, "LOCAL_RANK": str(local_rank), RUN_DIR_ENV: self.run_dir,
                             "RANK": str(env.node_rank() * self.num_processes + local_rank)}
                if os.environ.get("PL_GLOBAL_SEED") is None:
                    child_env.pop("PL_GLOBAL_SEED", None)
                proc = subprocess.Popen(_child_command(local_rank, self.run_dir), env=child_env,
                                        cwd=get_original_cwd())
                self.procs.append(proc)
                _children.append(proc)

    class JobDDPStrategy(DDPStrategy):
        """Lightning's DDP whose extra ranks re-run this Hydra job into its run folder."""

        def __init__(self, *args, run_dir: str | None = None, **kwargs):
            super().__init__(*args, **kwargs)
            self.run_dir = run_dir

        def _configure_launcher(self) -> None:
            from hydra.core.hydra_config import HydraConfig

            super()._configure_launcher()
            if self._start_method == "popen" and self.run_dir is not None and HydraConfig.initialized():
                self._launcher = HydraJobLauncher(self.cluster_environment, self.num_processes, self.num_nodes,
                                                  run_dir=self.run_dir)

    return JobDDPStrategy


def trainer_kwargs(tcfg, run_dir: str | None, **extra) -> dict:
    """`cfg.trainer` as Trainer arguments; `strategy: ddp` becomes `JobDDPStrategy` (see the module doc)."""
    kw = OmegaConf.to_container(tcfg, resolve=True) if OmegaConf.is_config(tcfg) else dict(tcfg)
    kw.update(extra)
    if kw.get("strategy") == "ddp":
        kw["strategy"] = _make_strategy_classes()(run_dir=run_dir)
    return kw


def end_job(ok: bool = True) -> None:
    """After a job: wait for the ranks it started (kill them if the job failed: they would wait in a
    collective until its timeout), close its process group, and restore rank 0's environment, so the next
    job of a sweep launches its own ranks."""
    global _saved_env
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    while _children:
        proc = _children.pop()
        if not ok:
            proc.kill()
            proc.wait()
        elif proc.wait() != 0:
            raise RuntimeError(f"DDP rank process {proc.args} exited with code {proc.returncode}")
    if _saved_env is not None:
        for k, v in _saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _saved_env = None
