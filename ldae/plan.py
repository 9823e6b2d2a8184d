"""The run plan: every quantity a run derives from its config, worked out once and torch-free.

    plan = resolve(cfg)                    # before anything is built
    plan = resolve(cfg, tokenizer=tok)     # with the built tokenizer's geometry (needed for plug-ins)

What it decides, each in one function below:
- the latent geometry (`latent_geometry`): the patch dimension D = 3 p², the per-token d as configured (the paper's
  units, per 768-dim patch) and as used, the latent map's channels C, stride s and the tokenizer's own patch on it,
  and the token grid. Patch tokenizers give (B, d, H/p, W/p) read with patch 1; the conv VAE gives (B, C, H/s, W/s)
  read with its DiT patch (s x dit_patch = p, d = C x dit_patch²), so the token grid is the same.
- the backbone's input/output geometry (`backbone_geometry`): pixels (3 channels) or the latent map (C channels),
  with the patch that gives the token grid; a DiT "/P" name or model.patch_size sets the patch on the latent map.
- the world size, per-device batch, accumulation, effective batch and lr (`lr = base_lr x effective / 256`,
  MAE's rule) of pretraining (`pretrain_batches`), the linear probe (`probe_batches`) and fine-tuning
  (`finetune_batches`);
- the device of the work outside Lightning's loops and the accelerator of the side Trainers (`device_of`,
  `accelerator_of`), asked of torch only when read (`RunPlan.device`), so that resolving stays torch-free;
- the probe's clean view and the prediction space of target.predict.

A config that cannot be realised fails here with the one-line ConfigError the config checks show (config.validate
calls these functions). Nothing here imports torch at module level: only a trainer asking for "auto" devices or
reading the device asks torch whether a GPU is there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from omegaconf import OmegaConf

from ldae import rules
from ldae.rules import require
from ldae.choices import LATENT_UNITS, check
from ldae.diffusion.predictions import PREDICTION
from ldae.errors import ConfigError
from ldae.models.registry import lookup

PAPER_PATCH_DIM = 768  # 16 x 16 x 3: the paper's per-token dimension D
GPU_ACCELERATORS = ("auto", "gpu", "cuda")


# --- the latent geometry -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Latent:
    """The tokenizer's output: a (B, channels, map_size, map_size) map, grid x grid tokens of patch_dim pixels."""

    patch_size: int      # p: pixels per token side
    patch_dim: int       # D = 3 p²
    d_paper: int | None  # tokenizer.latent_dim in the paper's units (per 768-dim patch); None in absolute units
    d: int               # the per-token d used: channels x patch²
    channels: int        # C of the latent map
    stride: int          # pixels per latent cell (p / patch)
    patch: int           # the tokenizer's patch on its map (1 for patch tokenizers; the conv VAE's dit_patch)
    map_size: int        # the latent map's side, image_size / stride
    grid: int            # tokens per side, image_size / p

    def shape(self, n: int) -> tuple[int, int, int, int]:
        """(n, C, H/s, W/s): the latent batch a sampler draws."""
        return (n, self.channels, self.map_size, self.map_size)


def effective_latent_dim(paper_d: int, patch_dim: int) -> int:
    """The paper's d (per 768-dim patch) at a scale whose patch dimension is D: round(d × D / 768), ≥ 1."""
    return max(1, round(paper_d * patch_dim / PAPER_PATCH_DIM))


def token_grid(image_size: int, patch_size) -> int:
    """Tokens per side; the patch must be a positive integer that divides the image."""
    p = patch_size
    require(isinstance(p, int) and p >= 1, f"tokenizer.patch_size={p} must be an integer >= 1")
    require(image_size % p == 0,
            f"data.image_size={image_size} is not divisible by tokenizer.patch_size={p}; allowed: multiples of {p}")
    return image_size // p


def resolve_latent_dim(tok) -> int | None:
    """The per-token d the tokenizer node asks for: `latent_dim` in the paper's units unless latent_units=absolute
    (tokenizer=none: d = D; a plug-in without latent_dim: None, its own). Checks the range."""
    p = tok.patch_size
    D = 3 * p * p
    if tok.name == "none":
        return D
    if tok.get("_target_") is not None and tok.get("latent_dim") is None:
        return None
    ld = tok.latent_dim
    check("tokenizer.latent_units", tok.latent_units, LATENT_UNITS)
    if tok.latent_units == "absolute":
        rules.check_token_dim(ld, p)
        return int(ld)
    require(isinstance(ld, int) and 1 <= ld <= PAPER_PATCH_DIM, f"tokenizer.latent_dim={ld} is out of range; "
            f"allowed: 1..{PAPER_PATCH_DIM} (the paper's units, per 768-dim patch)")
    return effective_latent_dim(int(ld), D)


def vqgan_geometry(patch_size: int, dit_patch, latent_dim: int) -> tuple[int, int]:
    """The conv VAE's (stride, channels): stride x dit_patch = patch_size with a power-of-2 stride (each level
    halves), C = round(d / dit_patch²) ≥ 1."""
    p, dp = patch_size, dit_patch
    require(isinstance(dp, int) and dp >= 1 and p % dp == 0 and ((p // dp) & (p // dp - 1)) == 0,
            f"tokenizer.dit_patch={dp} does not fit tokenizer.patch_size={p}; allowed: divisors of {p} "
            f"that leave a power-of-2 stride (stride x dit_patch = patch_size)")
    return p // dp, max(1, round(latent_dim / dp**2))


def latent_geometry(tok, image_size: int) -> Latent | None:
    """The latent geometry from the tokenizer node. None for a plug-in tokenizer (`_target_`): its geometry is
    known only once it is built (`tokenizer_geometry`)."""
    p = tok.patch_size
    grid = token_grid(image_size, p)
    d = resolve_latent_dim(tok)
    if tok.get("_target_") is not None:
        return None
    D = 3 * p * p
    d_paper = tok.latent_dim if tok.get("latent_units", "paper") == "paper" else None
    if tok.name == "vqgan":
        dp = tok.get("dit_patch", 2)
        stride, c = vqgan_geometry(p, dp, d)
        return Latent(p, D, d_paper, c * dp * dp, c, stride, dp, image_size // stride, grid)
    return Latent(p, D, d_paper, d, d, p, 1, grid, grid)  # patch tokenizers and pixels: C = d, stride p


def tokenizer_geometry(tokenizer, tok, image_size: int) -> Latent:
    """The latent geometry of a built tokenizer (its patch_size, patch_dim, latent_dim, latent_channels,
    latent_patch); `tok`: its config node, for the paper's d."""
    p, lp = tokenizer.patch_size, tokenizer.latent_patch
    stride = p // lp
    d_paper = tok.latent_dim if tok.get("latent_units", "paper") == "paper" else None
    return Latent(p, tokenizer.patch_dim, d_paper, tokenizer.latent_dim, tokenizer.latent_channels, stride, lp,
                  image_size // stride, token_grid(image_size, p))


# --- the backbone's geometry ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Backbone:
    """What the DiT reads and writes: (B, in_channels, input_size, input_size) in patches of patch_size."""

    input_size: int
    patch_size: int
    in_channels: int
    out_channels: int
    out_patch_size: int
    num_tokens: int

    def io(self) -> dict:
        """The geometry arguments of ldae.models.build_backbone."""
        return {"input_size": self.input_size, "patch_size": self.patch_size, "in_channels": self.in_channels,
                "out_channels": self.out_channels, "out_patch_size": self.out_patch_size}


@dataclass(frozen=True)
class Geometry:
    latent: Latent
    backbone: Backbone


def prediction_space(predict: str) -> str:
    """Where target.predict lives: the latent (eps, x0) or the image (image, image_pca), as its entry of the
    prediction table says (ldae/diffusion/predictions.py, torch-free)."""
    return PREDICTION[predict].space


def model_patch(model_cfg) -> int | None:
    """DiT's patch on the latent map: model.patch_size, else a "/P" model name's P, else None (the tokenizer's)."""
    p = model_cfg.get("patch_size")
    if p is not None:
        return p
    try:
        return lookup(model_cfg.name).patch_size
    except ValueError as e:
        raise ConfigError(str(e)) from None


def backbone_geometry(model_cfg, latent: Latent, image_size: int, input: str, space: str) -> Backbone:
    """The backbone reads pixels (target.input=image: 3 channels, patch stride x lp) or the latent map (C channels,
    patch lp) and writes the prediction space the same way; lp is the model's patch when it sets one (it must
    then equal a conv VAE's own), else the tokenizer's."""
    mlp = model_patch(model_cfg)
    if mlp is not None and latent.patch != 1:
        require(mlp == latent.patch, f"model patch {mlp} (model.name={model_cfg.name}) does not match "
                f"tokenizer.dit_patch={latent.patch}; allowed: {latent.patch}, or set tokenizer.dit_patch={mlp}")
    lp = mlp if mlp is not None else latent.patch
    require(isinstance(lp, int) and lp >= 1 and latent.map_size % lp == 0,
            f"model patch {lp} does not divide the {latent.map_size}-token grid (data.image_size / tokenizer.patch_size)")
    s, c = latent.stride, latent.channels
    size, patch, cin = (image_size, s * lp, 3) if input == "image" else (latent.map_size, lp, c)
    cout, out_patch = (3, s * lp) if space == "image" else (c, lp)
    return Backbone(size, patch, cin, cout, out_patch, (size // patch) ** 2)


def geometry(cfg, tokenizer=None) -> Geometry | None:
    """The latent and backbone geometry of a run config; from the built `tokenizer` when given. None for a plug-in
    tokenizer that is not built yet."""
    size = int(cfg.data.image_size)
    latent = (tokenizer_geometry(tokenizer, cfg.tokenizer, size) if tokenizer is not None
              else latent_geometry(cfg.tokenizer, size))
    if latent is None:
        return None
    t = cfg.target
    return Geometry(latent, backbone_geometry(cfg.model, latent, size, t.input, prediction_space(t.predict)))


# --- batches and learning rates ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Batches:
    """One optimiser step: world_size x accumulate micro-batches of per_device samples = effective."""

    world_size: int
    per_device: int
    accumulate: int
    effective: int
    base_lr: float
    lr: float


def scaled_lr(base_lr: float, effective_batch: int) -> float:
    """The absolute lr of a BASE lr: base_lr x effective batch / 256 (MAE; the paper's recipes)."""
    return base_lr * effective_batch / 256


def batches(world_size: int, per_device: int, accumulate: int, base_lr: float) -> Batches:
    effective = per_device * accumulate * world_size
    return Batches(world_size, per_device, accumulate, effective, base_lr, scaled_lr(base_lr, effective))


def split_batch(global_batch: int, world_size: int, device_cap: int | None) -> tuple[int, int]:
    """Global batch -> (per-device batch, accumulation steps) with per_device * accum * world = global."""
    require(global_batch % world_size == 0, f"data.batch_size={global_batch} is not divisible by the world size "
            f"{world_size} (trainer.devices x trainer.num_nodes); allowed: multiples of {world_size}")
    per_rank = global_batch // world_size
    accum = 1
    if device_cap:
        while per_rank // accum > device_cap or per_rank % accum:
            accum += 1
    return per_rank // accum, accum


def pretrain_batches(cfg) -> Batches:
    """data.batch_size is the effective batch: split over the world, capped per device by accumulation."""
    world = world_size_of(cfg.trainer)
    per_device, accum = split_batch(int(cfg.data.batch_size), world, cfg.data.get("device_batch_size"))
    return batches(world, per_device, accum, cfg.optim.base_lr)


def probe_base_lr(pr) -> float:
    """The probe's BASE lr (x effective batch / 256) named by probe.lr_source: a preset or probe.base_lr."""
    src = pr.get("lr_source", "custom")
    return float(pr.base_lr if src == "custom" else pr.lr_presets[src])


def probe_batches(pr, n_train: int | None, world_size: int, cached: bool) -> Batches:
    """The linear probe's batches on n_train images (None: no fewer than the batch). probe.batch_size is global;
    cached features train in whole batches, features computed on the fly in feature_batch_size pieces
    (accumulated); each DDP rank loads 1/world of a step."""
    batch = pr.batch_size if n_train is None else min(pr.batch_size, n_train)
    accum = 1 if cached else max(1, batch // int(pr.feature_batch_size))
    per_device = max(1, batch // accum // world_size)
    return batches(world_size, per_device, accum, probe_base_lr(pr))


def finetune_batches(pr, n_train: int | None) -> Batches:
    """Fine-tuning's batches on n_train images (None: no fewer than the batch), on one device: an even batch
    (MixUp pairs samples), capped per step by probe.device_batch_size."""
    batch = int(pr.batch_size) if n_train is None else min(int(pr.batch_size), n_train)
    batch -= batch % 2
    per_device, accum = split_batch(batch, 1, pr.get("device_batch_size"))
    return batches(1, per_device, accum, float(pr.base_lr))


# --- devices ---------------------------------------------------------------------------------------------------
def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _wants_gpu(accelerator: str) -> bool:
    """The accelerator asks for a GPU (or auto) and one is visible."""
    return accelerator in GPU_ACCELERATORS and _cuda_available()


def uses_gpu(tcfg) -> bool:
    """Whether the trainer config runs on the GPU: it asks for one (or auto) and one is visible."""
    return _wants_gpu(tcfg.get("accelerator", "auto"))


def device_of(accelerator: str) -> str:
    """Where the work outside Lightning's loops runs (latent cache, probe features, bench) for the requested
    trainer.accelerator: cuda or cpu."""
    return "cuda" if _wants_gpu(accelerator) else "cpu"


def accelerator_of(accelerator: str) -> str:
    """The accelerator of the side Trainers (probe, fine-tuning) for the requested trainer.accelerator: the run's,
    or the CPU without a GPU."""
    return accelerator if _cuda_available() else "cpu"


def world_size_of(tcfg) -> int:
    """Processes the trainer config asks for (devices x nodes); "auto"/-1 counts visible GPUs."""
    devices, nodes = tcfg.get("devices", 1), int(tcfg.get("num_nodes", 1))
    if isinstance(devices, int) and devices > 0:
        return devices * nodes
    if isinstance(devices, (list, tuple)) or OmegaConf.is_list(devices):
        return len(devices) * nodes
    if isinstance(devices, str) and devices.isdigit():
        return int(devices) * nodes
    if isinstance(devices, str) and "," in devices:
        return len([x for x in devices.split(",") if x.strip()]) * nodes
    if not uses_gpu(tcfg):
        return nodes
    import torch

    return torch.cuda.device_count() * nodes


# --- the probe's classes ---------------------------------------------------------------------------------------
def probe_data(cfg):
    """The `data` node of the probe's labelled images: `probe_data` when set (another dataset, read at the
    pretraining input: data.image_size; every dataset gives 3 channels in [-1, 1]), else the pretraining data."""
    pd = cfg.get("probe_data")  # an optional group: absent unless the probe has its own images
    if pd is None:
        return cfg.data
    return OmegaConf.merge(pd, {"image_size": int(cfg.data.image_size)})


def chance_top1(cfg) -> float:
    """Chance top-1 (%) of the probe: 100 / the probe data's classes, the floor every table is read against."""
    return 100.0 / int(probe_data(cfg).num_classes)


# --- the plan ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunPlan:
    image_size: int
    geometry: Geometry | None  # None for a plug-in tokenizer resolved before it is built
    world_size: int
    pretrain: Batches
    probe: Batches | None      # probe=linear: the recipe's batches (capped at probe.num_train when set)
    finetune: Batches | None   # probe=finetune: likewise
    requested_accelerator: str  # trainer.accelerator as asked; where it runs is `device` / `accelerator`
    input: str                 # target.input: latent | image
    prediction_space: str      # latent (eps, x0) | image (image, image_pca)
    clean_input: str           # probe.clean_input: the noise-free view the probe reads

    # The device is asked of torch when a stage reads it, not while resolving: validation stays torch-free.
    @property
    def device(self) -> str:
        """cuda | cpu: work outside Lightning's loops."""
        return device_of(self.requested_accelerator)

    @property
    def accelerator(self) -> str:
        """The side Trainers' accelerator."""
        return accelerator_of(self.requested_accelerator)

    def record(self) -> dict:
        """The plan as results.json records it: every field, with the device and accelerator the run used."""
        out = asdict(self)
        del out["requested_accelerator"]
        return {**out, "device": self.device, "accelerator": self.accelerator}

    @property
    def latent(self) -> Latent | None:
        return self.geometry.latent if self.geometry is not None else None

    @property
    def backbone(self) -> Backbone | None:
        return self.geometry.backbone if self.geometry is not None else None


def resolve(cfg, tokenizer=None) -> RunPlan:
    """The plan of a composed run config; raises ConfigError where the config cannot be realised.

    `tokenizer`: the built tokenizer, whose geometry then replaces the one read from cfg.tokenizer. A plug-in
    tokenizer (`_target_`) knows its geometry only once it is built: without `tokenizer` its plan has
    geometry=None. The probe's and fine-tuning's batches are the recipe's before the training set is counted
    (the stages apply `probe_batches` / `finetune_batches` to the real set size, which only shrinks a batch
    larger than the set).
    """
    pr = cfg.probe
    train = pretrain_batches(cfg)
    return RunPlan(
        image_size=int(cfg.data.image_size),
        geometry=geometry(cfg, tokenizer),
        world_size=train.world_size,
        pretrain=train,
        probe=probe_batches(pr, pr.get("num_train"), train.world_size, bool(pr.cache_features))
        if pr.name == "linear" else None,
        finetune=finetune_batches(pr, pr.get("num_train")) if pr.name == "finetune" else None,
        requested_accelerator=cfg.trainer.get("accelerator", "auto"),
        input=cfg.target.input,
        prediction_space=prediction_space(cfg.target.predict),
        clean_input=pr.clean_input,
    )
