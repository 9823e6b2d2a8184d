"""The paper's numbers (PAPER.md) that tables and plots put beside ours: the trajectory of Fig. 6 (with Table 1's
FIDs) and Table 2 (linear probe vs latent dim per tokenizer). ImageNet, DiT-L, 400 epochs: a reference for the
shape of a curve, not a target at small scales."""

from __future__ import annotations

# (config name, the paper's change, short label, paper lin-probe % (Fig. 6), paper FID (Table 1) or None)
STEPS: list[tuple[str, str, str, float, float | None]] = [
    ("00_dit_baseline", "DiT baseline (class-conditional)", "DiT", 57.5, 11.6),
    ("01_no_class_cond", "+ remove class-conditioning", "-cls", 62.5, 30.9),
    ("02_no_perceptual", "+ remove VQGAN perceptual loss", "-perc", 58.4, 54.3),
    ("03_no_adversarial", "+ remove VQGAN adversarial loss", "-adv", 59.0, 75.6),
    ("04_noise_schedule", "+ replace noise schedule (linear γ²)", "γ² sched", 63.4, 93.2),
    ("05_patch_vae", "conv. VAE to patch-wise VAE (d=16)", "patch VAE", 64.9, None),
    ("06_patch_ae", "to patch-wise AE (d=16)", "patch AE", 64.7, None),
    ("07_patch_pca", "to patch-wise PCA (d=32)", "PCA", 65.1, None),
    ("08_predict_x0", "+ predict clean data", "x0", 62.4, None),
    ("09_no_input_scaling", "+ remove input scaling (γ≡1)", "γ≡1", 63.6, None),
    ("10_image_input", "+ image input with inv. PCA", "img in", 63.6, None),
    ("11_image_output", "+ image output with inv. PCA", "img out", 63.9, None),
    ("12_predict_image", "+ predict original image (l-DAE)", "orig img", 64.5, None),
]
STEP_INDEX = {name: i for i, (name, *_rest) in enumerate(STEPS)}

# Table 2: {tokenizer config name: {d (paper units): lin-probe %}}; vqgan is the conv. VAE baseline. The d = 128
# cells of the patch VAE/AE rows are blank in the paper's OCR (PAPER.md).
TABLE2: dict[str, dict[int, float]] = {
    "vqgan": {8: 54.5, 16: 63.4, 32: 62.8, 64: 57.0, 128: 48.1},
    "patch_vae": {8: 58.3, 16: 64.9, 32: 64.8, 64: 56.8},
    "patch_ae": {8: 59.9, 16: 64.7, 32: 64.6, 64: 59.9},
    "patch_pca": {8: 56.0, 16: 63.4, 32: 65.1, 64: 60.0, 128: 53.9},
}


def paper_top1(family: str, experiment: str, tokenizer: str | None = None, latent_dim: int | None = None) -> float | None:
    """The paper's probe accuracy for a run, where the paper has the same point: a trajectory row at its own
    settings, or a Table 2 cell; else None."""
    if family == "sweep/table2":
        return TABLE2.get(tokenizer or "", {}).get(int(latent_dim)) if latent_dim is not None else None
    if family in ("trajectory", "sweep/trajectory") and experiment in STEP_INDEX:
        return STEPS[STEP_INDEX[experiment]][3]
    return None
