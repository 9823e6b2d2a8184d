"""The allowed values of every named choice, in one light module (no torch import): the config checks
read them here so a bad command line fails in about a second. `check` is the one check of a choice, called by the
config checks and the constructors alike; a registry (SCHEDULES, SAMPLERS) also names the function of each name."""

import importlib
from pathlib import Path

from ldae.errors import ConfigError

# data.name -> the "module:function" that reads a split of it (ldae.data.build_dataset dispatches here): a new
# dataset is its reader, its conf/data node and one line here.
DATASETS = {
    "shapes": "ldae.data.datasets:shapes_split",
    "fashion_mnist": "ldae.data.datasets:fashion_mnist_split",
    "cifar10": "ldae.data.datasets:cifar10_split",
    "imagefolder": "ldae.data.datasets:imagefolder_split",
}
CROPS = ("center", "random_resized")
# tokenizer.name -> the "module:function" that builds it from its node (ldae.tokenizers.build_tokenizer dispatches
# here): a new tokenizer is its class, its builder and one line here.
TOKENIZERS = {
    "vqgan": "ldae.tokenizers:build_conv_vae",
    "patch_vae": "ldae.tokenizers:build_patch_vae",
    "patch_ae": "ldae.tokenizers:build_patch_ae",
    "patch_pca": "ldae.tokenizers:build_patch_pca",
    "none": "ldae.tokenizers:build_pixels",
}
LATENT_UNITS = ("paper", "absolute")  # tokenizer.latent_dim per 768-dim patch (the paper's) or per D = 3 p²
NO_DECODER: tuple[str, ...] = ()  # encoder-only tokenizers (none ship yet): image inputs/targets need a decoder
PCA_SCALINGS = ("global", "whiten", "none")  # whiten: each component to unit variance (off by default)
LATENT_NORMS = ("scale", "scale_shift", "none")  # the measured latent normalisation of trained tokenizers
POSTERIORS = ("sample", "mean")  # what a VAE's encode returns while pretraining (eval always uses the mean)
RECON_LOSSES = ("l1", "l2")
# schedule=NAME -> the "module:function" that builds it: the allowed names and build_schedule's dispatch in one
# table, so a new schedule is its function plus one line here (imported only when built: this module stays light).
SCHEDULES = {
    "ddpm_linear": "ldae.diffusion.schedules:ddpm_linear",
    "cosine": "ldae.diffusion.schedules:cosine",
    "linear_gamma2": "ldae.diffusion.schedules:linear_gamma2",
    "sigma_linear": "ldae.diffusion.schedules:sigma_linear",
    "single_level": "ldae.diffusion.schedules:single_level",
}
# target.predict: the keys of ldae.diffusion.predictions.PREDICTION (its table says what each one means)
INPUTS = ("latent", "image")
LAMBDAS = ("one", "snr", "gamma2", "inv_one_plus_sigma2")
OUTPUT_BASES = ("pixels", "tokenizer")  # target.output_basis: the basis an image-space output layer is written in
BASIS_TOKENIZERS = ("patch_pca", "none")  # tokenizers with an orthonormal patch basis (Tokenizer.basis())
PROBE_OPTIMIZERS = ("lars", "sgd", "adamw")
CLEAN_INPUTS = ("projected", "original")
PROBE_POOLS = ("avg", "cls")  # cls only for a model with a class token (the DiT has none: a clear error)
PROBE_LR_SOURCES = ("mae", "paper_printed", "custom")  # conf/probe/linear.yaml: lr_presets
PROTOCOLS = ("linear", "finetune", "knn")  # probe=NAME (conf/probe/)
RESUME_MODES = ("auto", "never")
NONFINITE_ACTIONS = ("stop", "skip")
# gen.sampler=NAME -> the "module:function" that runs it (ldae.diffusion.sampling.sample dispatches here)
SAMPLERS = {"ddpm": "ldae.diffusion.sampling:run_ddpm", "ddim": "ldae.diffusion.sampling:run_ddim"}
GUIDANCE_CHANNELS = ("all", "dit")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")  # speed.compile_mode
COMPILE_BACKENDS = ("inductor", "aot_eager", "eager")  # speed.compile_backend
FUSED_ADAMW = ("auto", True, False)  # speed.fused_adamw  # gen.guidance_channels (ldae/diffusion/sampling.py)
# trainer.precision: Lightning's accepted spellings (lightning_fabric.connector's _PRECISION_INPUT; a test keeps
# this copy equal to it), so a typo fails here and not after the tokenizer fit.
PRECISIONS = ("transformer-engine", "transformer-engine-float16", "16-true", "16-mixed", "bf16-true", "bf16-mixed",
              "32-true", "64-true", "64", "32", "16", "bf16", 64, 32, 16)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # imagefolder
SHAPES_MAX_CLASSES = 12  # len(ldae.data.shapes.SHAPE_CLASSES), here without importing the data package (torch)


def check(key: str, value, allowed) -> None:
    """`value` of config key `key` is one of `allowed`: the one check of a choice, which the config checks and the
    constructors both call, so the message is written once."""
    if value not in allowed:
        raise ConfigError(f"unknown {key} '{value}'; allowed: {', '.join(str(a) for a in allowed)}")


def builder(table: dict[str, str], name: str):
    """The callable a registry entry names ("module:function"), imported when it is asked for."""
    module, _, attr = table[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def check_pool(pool: str) -> None:
    """Only global average pooling exists: the DiT encoder has no class token (PAPER.md 2.4)."""
    check("probe.pool", pool, PROBE_POOLS)
    if pool == "cls":
        raise ConfigError("probe.pool=cls needs a class token, and the DiT encoder has none (the paper pools "
                          "globally, PAPER.md 2.4); allowed: avg")


def fashion_mnist_files(root: Path, split: str) -> tuple[Path, Path] | None:
    """The IDX image and label files of a split under root (Debian's layout or torchvision's), or None."""
    prefix = "train" if split == "train" else "t10k"
    for sub in (root, root / "FashionMNIST" / "raw"):
        for ext in (".gz", ""):
            imgs = sub / f"{prefix}-images-idx3-ubyte{ext}"
            labs = sub / f"{prefix}-labels-idx1-ubyte{ext}"
            if imgs.exists() and labs.exists():
                return imgs, labs
    return None
