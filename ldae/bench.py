"""Throughput of the pretraining step and of the data path (experiments/bench.py is the Hydra app).

The step is the real PretrainModule path (tokenizer encode, keyed corruption, backbone, objective,
backward, AdamW, EMA) on synthetic in-memory images, so the data path costs nothing here; the data path
is timed alone (`bench.loader=true`). FLOPs are counted with torch.utils.flop_counter (matmuls,
convolutions, attention) on one forward+backward of the base variant: model FLOPs, so activation
checkpointing's recompute does not count as useful work. MFU is against a square matmul timed in the same
process (bf16 on GPU, fp32 on CPU), not a datasheet number. `bench_pca` times the patch PCA fit against one
float32 covariance product (experiments/bench_pca.py is its CLI).
"""

from __future__ import annotations

import contextlib
import copy
import os
import platform
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from ldae.plan import device_of, split_batch
from ldae.speed import adamw_kwargs


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, n: int | None = None, iters: int = 10) -> dict:
    """Achieved TFLOP/s of an n x n matmul: bf16 on GPU (the MFU reference), fp32 on CPU."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    n = n or (8192 if device.type == "cuda" else 1024)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(iters):
        a @ b
    _sync(device)
    dt = (time.perf_counter() - t0) / iters
    return {"tflops": 2 * n**3 / dt / 1e12, "n": n, "dtype": str(dtype).replace("torch.", "")}


def check_config(cfg: DictConfig) -> None:
    """Before any timing: the bench block's keys, every variant's name and config, and the run config itself
    (each a ConfigError line)."""
    from ldae import keys
    from ldae.config import validate

    keys.check(cfg, keys.BENCH)
    for name in cfg.bench.variants:
        vcfg = variant_config(cfg, name)
        validate(vcfg)
        if not cfg.bench.loader:
            autocast_for(vcfg, torch.device("cpu"))  # the precisions the step timer knows


def variant_config(cfg: DictConfig, name: str) -> DictConfig:
    """The run config with variant `name`'s overrides (bench.switches) applied."""
    if name not in cfg.bench.switches:
        from ldae.config import ConfigError

        raise ConfigError(f"unknown bench variant '{name}'; allowed: {', '.join(cfg.bench.switches)}")
    out = copy.deepcopy(cfg)
    OmegaConf.set_struct(out, False)
    for key, value in cfg.bench.switches[name].items():
        OmegaConf.update(out, key, value, merge=False)
    return out


def fitted_tokenizer(cfg: DictConfig, images: torch.Tensor):
    """The configured tokenizer, ready to encode: PCA fitted on the synthetic images; gradient-trained ones
    keep their initial weights (their encode costs the same) and measure their latent scale."""
    from ldae.tokenizers import TrainableTokenizer, build_tokenizer

    tok = build_tokenizer(cfg.tokenizer)
    if isinstance(tok, TrainableTokenizer):
        tok.measure_norm([images])
        tok.fitted.fill_(True)
    else:
        tok.fit([images])
    return tok


def synthetic_batch(n: int, size: int, num_classes: int, device: torch.device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g).mul(2).sub(1)  # (B, 3, H, W) in [-1, 1]
    y = torch.randint(0, num_classes, (n,), generator=g)
    return x.to(device), y.to(device), torch.arange(n, device=device)


def autocast_for(cfg: DictConfig, device: torch.device):
    prec = str(cfg.trainer.precision)
    if prec in ("32", "32-true"):
        return contextlib.nullcontext()
    if prec.startswith("bf16"):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    from ldae.config import ConfigError

    raise ConfigError(f"bench times trainer.precision 32-true or bf16-mixed, got '{prec}'")


def _rss_mib() -> float:
    """Peak resident memory of this process (MiB); on CPU it only grows across variants."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class StepRunner:
    """One variant's PretrainModule and AdamW, kept alive so that variants can be timed in turns."""

    def __init__(self, cfg: DictConfig, tokenizer, batch, device: torch.device):
        from ldae.lit.pretrain import PretrainModule
        from ldae.speed import set_tf32

        self.cfg, self.batch, self.device = cfg, batch, device
        torch.manual_seed(int(cfg.seed))  # the same initial weights in every variant: comparable losses
        module = PretrainModule.from_config(cfg, copy.deepcopy(tokenizer)).to(device)
        module.train()
        module.tokenizer.eval()
        self.module = module
        self.tf32 = module.speed["tf32"]
        set_tf32(self.tf32)
        self.opt = torch.optim.AdamW(module.backbone.parameters(), lr=1e-4,
                                     **adamw_kwargs(module.speed, device.type == "cuda"))
        self.loss = float("nan")

    def step(self) -> torch.Tensor:
        """forward (encode, corrupt, backbone, objective), backward, AdamW, EMA."""
        m = self.module
        with autocast_for(self.cfg, self.device):
            loss, _ = m.step_loss(self.batch, epoch=0)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if m.ema is not None:
            m.ema.update(m.backbone)
        return loss

    def persistent_mib(self) -> float:
        """Weights, buffers (EMA, tokenizer) and optimiser state this variant keeps between steps."""
        tensors = [*self.module.parameters(), *self.module.buffers()]
        tensors += [v for st in self.opt.state.values() for v in st.values() if torch.is_tensor(v)]
        return sum(t.numel() * t.element_size() for t in tensors) / 2**20

    def time(self, steps: int) -> tuple[float, float]:
        """(seconds per step, peak MiB): CUDA: persistent state + the largest transient allocation of these
        steps (other variants' resident modules excluded); CPU: the process's peak RSS."""
        from ldae.speed import set_tf32

        set_tf32(self.tf32)
        cuda = self.device.type == "cuda"
        if cuda:
            _sync(self.device)
            before = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        t0 = time.perf_counter()
        for _ in range(steps):
            loss = self.step()
        _sync(self.device)
        dt = (time.perf_counter() - t0) / steps
        self.loss = float(loss.detach())
        if cuda:
            mem = self.persistent_mib() + (torch.cuda.max_memory_allocated(self.device) - before) / 2**20
        else:
            mem = _rss_mib()
        return dt, mem


def step_flops(cfg: DictConfig, tokenizer, batch, device: torch.device) -> int:
    """FLOPs of one forward+backward of the pretraining step (FlopCounterMode; no compile, no recompute)."""
    from torch.utils.flop_counter import FlopCounterMode

    from ldae.lit.pretrain import PretrainModule

    plain = variant_config(cfg, "base") if "base" in cfg.bench.switches else cfg
    module = PretrainModule.from_config(plain, copy.deepcopy(tokenizer)).to(device)
    module.train()
    counter = FlopCounterMode(display=False)
    with counter:
        loss, _ = module.step_loss(batch, epoch=0)
        loss.backward()
    return int(counter.get_total_flops())


def bench_step(cfg: DictConfig) -> tuple[list[dict], dict]:
    """Time every variant of cfg.bench.variants; rows for the table and facts about the run."""
    b = cfg.bench
    device = torch.device(device_of(cfg.trainer.get("accelerator", "auto")))
    per_device, _ = split_batch(int(cfg.data.batch_size), 1, cfg.data.get("device_batch_size"))
    n = int(b.batch_size or per_device)
    batch = synthetic_batch(n, int(cfg.data.image_size), int(cfg.data.num_classes), device, int(cfg.seed))
    tokenizer = fitted_tokenizer(cfg, batch[0].cpu()).to(device)
    peak = matmul_peak(device, b.matmul_size)
    flops = step_flops(cfg, tokenizer, batch, device)
    runners = {}
    for name in b.variants:  # build and warm every variant first (compile happens here)
        runners[name] = StepRunner(variant_config(cfg, name), tokenizer, batch, device)
        for _ in range(int(b.warmup)):
            runners[name].step()
    times = {name: [] for name in runners}
    mems = {name: 0.0 for name in runners}
    for _ in range(int(b.repeats)):  # variants in turns: a busy machine slows all of them alike
        for name, runner in runners.items():
            dt, mem = runner.time(int(b.steps))
            times[name].append(dt)
            mems[name] = max(mems[name], mem)
    rows = []
    for name, runner in runners.items():
        dt = statistics.median(times[name])
        tflops = flops / dt / 1e12
        rows.append({"variant": name, "overrides": dict(cfg.bench.switches[name]), "batch": n,
                     "images_per_s": n / dt, "images_per_s_min": n / max(times[name]),
                     "images_per_s_max": n / min(times[name]), "step_ms": 1e3 * dt, "tflops": tflops,
                     "mfu": tflops / peak["tflops"], "peak_mem_mib": mems[name], "loss": runner.loss})
    base = rows[0]["images_per_s"]
    for r in rows:
        r["ratio"] = r["images_per_s"] / base
    facts = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
             "threads": torch.get_num_threads(), "model": cfg.model.name, "image_size": int(cfg.data.image_size),
             "tokenizer": cfg.tokenizer.name, "gflops_per_image": flops / n / 1e9, "matmul_peak": peak,
             "steps": int(b.steps), "warmup": int(b.warmup), "repeats": int(b.repeats)}
    return rows, facts


def step_table(rows: list[dict], facts: dict) -> str:
    mem = "peak mem MiB" + (" (CUDA allocated)" if facts["device"] != "cpu" else " (process RSS)")
    p = facts["matmul_peak"]
    head = (f"Pretraining step on {facts['device']} ({facts['threads']} threads): model {facts['model']}, "
            f"{facts['image_size']} px, tokenizer {facts['tokenizer']}, {facts['gflops_per_image']:.3f} GFLOP/image "
            f"(forward+backward), matmul peak {p['tflops']:.3f} TFLOP/s ({p['dtype']}, n={p['n']}), "
            f"{facts['warmup']} warm-up steps, then {facts['repeats']} turns of {facts['steps']} timed steps per "
            f"variant, variants in rotation; img/s is the median turn (range: slowest-fastest turn).\n\n")
    lines = [f"| variant | overrides | batch | img/s | img/s range | step ms | TFLOP/s | MFU | {mem} | ratio |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ov = ", ".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in r["overrides"].items()) or "-"
        lines.append(f"| {r['variant']} | {ov} | {r['batch']} | {r['images_per_s']:.1f} | "
                     f"{r['images_per_s_min']:.1f}-{r['images_per_s_max']:.1f} | {r['step_ms']:.1f} | "
                     f"{r['tflops']:.4f} | {100 * r['mfu']:.1f}% | {r['peak_mem_mib']:.0f} | {r['ratio']:.2f} |")
    return head + "\n".join(lines) + "\n"


def write_jpegs(root: Path, n: int, side: int, classes: int = 4, seed: int = 0) -> Path:
    """A synthetic imagefolder root/{train,val}/cCLASS/*.jpg of noise-and-gradient JPEGs (quality 90)."""
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    for split, count in (("train", n), ("val", classes)):
        for i in range(count):
            folder = root / split / f"c{i % classes}"
            folder.mkdir(parents=True, exist_ok=True)
            ramp = torch.linspace(0, 255, side).view(1, side, 1).expand(3, side, side)
            img = (0.5 * ramp + 0.5 * torch.randint(0, 256, (3, side, side), generator=g)).byte()
            Image.fromarray(img.permute(1, 2, 0).numpy()).save(folder / f"{i:06d}.jpg", quality=90)
    return root


def bench_loader(cfg: DictConfig) -> tuple[list[dict], dict]:
    """Images/s of the data path alone: decode + resize/crop (+ flip) + to [-1, 1] in N loader workers."""
    from torch.utils.data import DataLoader

    from ldae.data import build_dataset

    b = cfg.bench
    per_device, _ = split_batch(int(cfg.data.batch_size), 1, cfg.data.get("device_batch_size"))
    batch = int(b.batch_size or per_device)
    with tempfile.TemporaryDirectory(prefix="ldae-bench-jpegs-") as tmp:
        dcfg = copy.deepcopy(cfg.data)
        OmegaConf.set_struct(dcfg, False)
        if cfg.data.name != "imagefolder":  # synthetic JPEGs, so decoding is part of what is timed
            side = int(b.loader_source_size or round(1.25 * cfg.data.image_size))
            write_jpegs(Path(tmp), int(b.loader_images), side)
            dcfg.update(name="imagefolder", root=tmp, num_train=None, num_val=None, labels=True)
            source = f"synthetic JPEGs {side}x{side}"
        else:
            source = f"imagefolder {cfg.data.root}"
        ds = build_dataset(dcfg, "train")
        batch = min(batch, max(1, len(ds) // 4))  # at least 3 timed batches after the untimed first one
        rows = []
        for w in b.loader_workers:
            loader = DataLoader(ds, batch_size=batch, shuffle=True, num_workers=int(w),
                                drop_last=True, persistent_workers=False)
            it = iter(loader)
            next(it)  # workers started and warm
            t0, seen = time.perf_counter(), 0
            for x, _, _ in it:
                seen += x.shape[0]
            dt = time.perf_counter() - t0
            rows.append({"workers": int(w), "images": seen, "images_per_s": seen / dt if dt > 0 else float("nan")})
    base = rows[0]["images_per_s"]
    for r in rows:
        r["ratio"] = r["images_per_s"] / base
    facts = {"source": source, "image_size": int(cfg.data.image_size), "crop": cfg.data.crop,
             "hflip": bool(cfg.data.hflip), "batch": batch, "images": len(ds)}
    return rows, facts


def loader_table(rows: list[dict], facts: dict) -> str:
    head = (f"Data path alone: {facts['source']} -> {facts['image_size']} px ({facts['crop']} crop, "
            f"hflip={facts['hflip']}), batch {facts['batch']}, {facts['images']} images, first batch untimed.\n\n")
    lines = ["| workers | images timed | img/s | ratio |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['workers']} | {r['images']} | {r['images_per_s']:.1f} | {r['ratio']:.2f} |")
    return head + "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ patch PCA fit

def bench_pca(patches: int = 1_000_000, image_size: int = 256, patch: int = 16, batch_images: int = 64,
              threads: int = 1, repeats: int = 2) -> dict:
    from ldae.tokenizers import PatchPCA
    from ldae.ops.patch import patchify

    torch.set_num_threads(threads)
    per_image = (image_size // patch) ** 2
    per_batch = per_image * batch_images
    n_batches = -(-patches // per_batch)
    g = torch.Generator().manual_seed(0)
    pool = [torch.rand(batch_images, 3, image_size, image_size, generator=g) * 2 - 1 for _ in range(4)]
    mats = [patchify(x, patch).reshape(-1, 3 * patch * patch) for x in pool]  # (per_batch, 768) each

    def batches():
        for i in range(n_batches):
            yield pool[i % len(pool)]

    def covariance_product() -> float:
        t0 = time.perf_counter()
        acc = torch.zeros(mats[0].shape[1], mats[0].shape[1])
        for i in range(n_batches):
            m = mats[i % len(mats)]
            acc += m.T @ m  # float32 (D, D)
        return time.perf_counter() - t0

    def fit() -> float:
        pca = PatchPCA(patch, 32, num_patches=n_batches * per_batch)
        t0 = time.perf_counter()
        pca.fit(batches())
        return time.perf_counter() - t0

    ref = min(covariance_product() for _ in range(repeats))
    fit_s = min(fit() for _ in range(repeats))
    return {"bench": "pca", "patches": n_batches * per_batch, "patch_dim": 3 * patch * patch,
            "fit_s": round(fit_s, 3), "cov_product_f32_s": round(ref, 3), "ratio": round(fit_s / ref, 3),
            "threads": threads, "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "torch": torch.__version__}
