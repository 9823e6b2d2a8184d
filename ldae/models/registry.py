"""Model sizes, keyed by encoder size and encoder/decoder depth, with the paper's and DiT's names as aliases.

Canonical key: "{size}-{encoder_depth}-{decoder_depth}" (e.g. "L-12-12"). The paper's default backbone is
DiT-L: 24 blocks of width 1024 split 12/12, so its encoder is "ViT-12L". Its "ViT-B" and "ViT-L" encoders
come with a decoder of the same size (PAPER.md 2.4). "micro" and "tiny" are for CPU runs.
DiT's own names `DiT-S/2` ... `DiT-XL/8` (any name with a "/P" suffix) also set the patch size P on a latent
map (DiT: S = 12 blocks of 384, B = 12 of 768, L = 24 of 1024, XL = 28 of 1152; halves as encoder/decoder).
"""

from __future__ import annotations

from dataclasses import dataclass

# size -> (width, heads)
WIDTHS = {"micro": (32, 2), "tiny": (192, 3), "S": (384, 6), "B": (768, 12), "L": (1024, 16), "XL": (1152, 16)}

ALIASES = {
    "DiT-S": "S-6-6",
    "DiT-B": "B-6-6",
    "DiT-L": "L-12-12",
    "ViT-12L": "L-12-12",
    "DiT-XL": "XL-14-14",
    "ViT-B": "B-12-12",
    "ViT-L": "L-24-24",
}


@dataclass(frozen=True)
class ModelSpec:
    key: str
    hidden_size: int
    num_heads: int
    encoder_depth: int
    decoder_depth: int
    patch_size: int | None = None  # from a "/P" suffix (DiT-L/2); None: the input's own patch

    @property
    def depth(self) -> int:
        return self.encoder_depth + self.decoder_depth


DIT_PATCHES = (2, 4, 8)


def known_names() -> list[str]:
    dit = [f"{a}/{p}" for a in ALIASES if a.startswith("DiT-") for p in DIT_PATCHES]
    return sorted(ALIASES) + dit + [f"{s}-E-D" for s in WIDTHS]


def lookup(name: str) -> ModelSpec:
    """A registry name or alias -> ModelSpec. Raises ValueError naming what is allowed."""
    base, _, patch = str(name).partition("/")
    key = ALIASES.get(base, base)
    parts = key.split("-")
    try:
        size, enc, dec = parts[0], int(parts[1]), int(parts[2])
        width, heads = WIDTHS[size]
        p = int(patch) if patch else None
        if len(parts) != 3 or enc < 1 or dec < 0 or (p is not None and p < 1):
            raise ValueError
    except (IndexError, ValueError, KeyError):
        raise ValueError(f"unknown model.name '{name}'; allowed: {', '.join(sorted(ALIASES))}, "
                         f"or SIZE-ENC-DEC with SIZE in {', '.join(WIDTHS)} (e.g. tiny-4-4), optionally "
                         f"with a /P patch suffix (e.g. DiT-L/2)") from None
    return ModelSpec(key, width, heads, enc, dec, p)


def checkpoint_bytes(spec: ModelSpec, mlp_ratio: float, cond_ratio: float, hidden_size: int | None = None,
                     depth: int | None = None) -> int:
    """About the size of one pretraining checkpoint: fp32 weights, their EMA and AdamW's two moments, of the
    blocks alone (attention 4w², MLP 2rw², adaLN 6w x cond width); embeddings and the tokenizer add a little."""
    w, n = hidden_size or spec.hidden_size, depth or spec.depth
    per_block = (4 + 2 * mlp_ratio + 6 * cond_ratio) * w * w
    return int(4 * 4 * n * per_block)

