"""What `target.predict` names: one entry per prediction, read by the objective, the samplers, the denoising
pictures, the backbone's output geometry and the config checks (PAPER.md 2.1 and 2.3).

  eps        the noise ε in the latent (DDPM / DiT);
  x0         the clean latent z0;
  image_pca  the image through the inverse tokenizer, V^T V x0 (the target lies in the PCA subspace);
  image      the original image x0, its error weighted per PCA component (1 for i ≤ d, target.residual_weight beyond).

No torch import: the config checks read this table before a run starts. The functions take tensors and call
only their methods and those of the schedule and tokenizer they are given.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Prediction:
    """One value of target.predict.

    space: where the network's output lives, "latent" (the tokenizer's map) or "image" (pixels).
    needs_decoder: the objective maps latents to pixels, so an encoder-only tokenizer cannot serve it.
    target: (x0 image, z0, ε, tokenizer) -> what the output is compared with.
    to_x0: (prediction, z_t, t, schedule, tokenizer) -> the latent x̂0 it implies.
    to_eps: (prediction, x̂0, z_t, t, schedule) -> the latent ε̂ it implies.
    per_component: the error is weighted per component of the tokenizer's orthonormal basis (Eq. 4), where
        it has one; otherwise it is the plain mean square.
    """

    space: str
    needs_decoder: bool
    target: Callable
    to_x0: Callable
    to_eps: Callable
    per_component: bool = False

    @property
    def learned_sigma(self) -> bool:
        """Whether DiT's learned variance and its bound term vb are defined: the bound's posterior lives in the
        latent, so only a latent prediction gives its mean."""
        return self.space == "latent"

    def latents(self, pred, z_t, t, schedule, tokenizer):
        """A prediction -> the latents (x̂0, ε̂) the samplers step with."""
        x0 = self.to_x0(pred, z_t, t, schedule, tokenizer)
        return x0, self.to_eps(pred, x0, z_t, t, schedule)


# Named functions, not lambdas: an Objective holding its entry stays picklable (spawned DDP workers).
def _noise(x0, z0, eps, tokenizer):
    return eps


def _latent(x0, z0, eps, tokenizer):
    return z0


def _projected_image(x0, z0, eps, tokenizer):
    return tokenizer.decode(z0)  # V^T V x0 for PCA


def _image(x0, z0, eps, tokenizer):
    return x0


def _x0_from_eps(pred, z_t, t, schedule, tokenizer):
    return schedule.x0_from_eps(z_t, pred, t)


def _x0_is_pred(pred, z_t, t, schedule, tokenizer):
    return pred


def _x0_from_image(pred, z_t, t, schedule, tokenizer):
    return tokenizer.encode(pred)  # the image back to the latent


def _eps_is_pred(pred, x0, z_t, t, schedule):
    return pred


def _eps_from_x0(pred, x0, z_t, t, schedule):
    return schedule.eps_from_x0(z_t, x0, t)


PREDICTION: dict[str, Prediction] = {
    "eps": Prediction("latent", needs_decoder=False, target=_noise, to_x0=_x0_from_eps, to_eps=_eps_is_pred),
    "x0": Prediction("latent", needs_decoder=False, target=_latent, to_x0=_x0_is_pred, to_eps=_eps_from_x0),
    "image_pca": Prediction("image", needs_decoder=True, target=_projected_image, to_x0=_x0_from_image,
                            to_eps=_eps_from_x0),
    "image": Prediction("image", needs_decoder=True, target=_image, to_x0=_x0_from_image, to_eps=_eps_from_x0,
                        per_component=True),
}


def names(test: Callable[[Prediction], bool]) -> tuple[str, ...]:
    """The predictions whose entry passes `test`, in the table's order (what the config checks allow)."""
    return tuple(k for k, p in PREDICTION.items() if test(p))
