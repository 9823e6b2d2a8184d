"""Users' own parts: a `tokenizer`, `data`, `schedule` or `model` node with a `_target_` is built by Hydra's
`instantiate` from the user's own module, through the same interface checks as ldae's built-in parts.

The node's keys split in two. ldae's own keys (`name`, the keys a scale or an experiment sets, such as
`tokenizer.patch_size` or `data.batch_size`) drive the framework; each is passed to the constructor only when
its signature names it (or takes **kwargs), so a scale can set `tokenizer.num_patches` under any plug-in.
Every other key is the plug-in's own argument and goes to the constructor as given (an unknown one is the
constructor's TypeError, one line). The target and those own arguments are the plug-in's identity: they enter
the tokenizer artifact key and the data fingerprint; the resume fingerprint hashes the whole config anyway.
"""

from __future__ import annotations

import inspect

from ldae.errors import ConfigError

# ldae's keys of each group (conf/<group>/*.yaml); the rest of a plug-in node is its own arguments.
OWN_KEYS = {
    "tokenizer": ("name", "patch_size", "latent_dim", "latent_units", "num_patches", "fit_images", "seed", "cache",
                  "latent_cache", "center", "scaling"),
    "data": ("name", "root", "image_size", "num_classes", "labels", "num_train", "num_val", "seed", "difficulty",
             "batch_size", "device_batch_size", "num_workers", "crop", "crop_min_scale", "hflip", "download"),
    "schedule": ("name", "num_steps"),
    # conf/model/dit.yaml's keys (a model plug-in's defaults): the scale picks model.name, a registry size
    # whose width/depth/heads/split reach the constructor resolved (ldae.models.build_backbone)
    "model": ("name", "hidden_size", "depth", "num_heads", "encoder_depth", "patch_size", "mlp_ratio", "cond_ratio",
              "class_cond", "class_dropout", "learn_sigma", "adaln_zero"),
}
# What a plug-in's object must have (checked on the built object), and the part of it a class must define
# (checked before any work; latent_dim, gamma and sigma are often set in __init__).
REQUIRED = {"tokenizer": ("encode", "decode", "latent_dim"), "data": ("__getitem__", "__len__"),
            "schedule": ("gamma", "sigma"), "model": ("forward", "forward_features", "hidden_size")}
ON_CLASS = {"tokenizer": ("encode", "decode"), "data": ("__getitem__", "__len__"), "schedule": (),
            "model": ("forward", "forward_features")}
WHAT = {"tokenizer": "a tokenizer", "data": "a dataset", "schedule": "a noise schedule", "model": "a backbone"}
HINT = {"tokenizer": "encode(x) -> z, decode(z) -> x and latent_dim (the per-token d)",
        "data": "__len__ and __getitem__(i) -> (image, label), built with split=train|val",
        "schedule": "gamma and sigma, (num_steps + 1,) tensors of z_t = gamma_t z_0 + sigma_t eps",
        "model": "forward(x, t, y) -> prediction, forward_features(x, t, y, depth=None) -> (B, hidden_size) "
                 "and hidden_size"}


def _first_line(e: BaseException) -> str:
    """The first line of what went wrong in the user's code (Hydra and importlib wrap it as the cause)."""
    cause = e.__cause__ or e
    return (str(cause).strip().splitlines() or [type(cause).__name__])[0][:160]


def is_plugin(node) -> bool:
    return node is not None and hasattr(node, "get") and node.get("_target_") is not None


def _plain(node) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)


def identity(node, group: str) -> dict:
    """The plug-in's target and its own arguments (what its artifacts and caches are keyed by)."""
    spec = _plain(node)
    return {"target": spec["_target_"], "args": {k: v for k, v in spec.items()
                                                 if k != "_target_" and k not in OWN_KEYS[group]}}


def locate(node, group: str):
    """The plug-in's class or factory, or one ConfigError line naming the target."""
    from hydra.utils import get_object

    target = node.get("_target_")
    try:
        return get_object(str(target))
    except Exception as e:  # ImportError, AttributeError, a syntax error in the user's module
        raise ConfigError(f"{group}._target_={target} cannot be imported ({_first_line(e)}); allowed: a dotted path "
                          f"module.Name importable from sys.path") from None


def check_class(node, group: str) -> None:
    """Before any work: the target imports and a class target has the methods of the interface."""
    obj = locate(node, group)
    if inspect.isclass(obj):
        _require_methods(obj, ON_CLASS[group], group, node.get('_target_'))
    if group == "data" and "split" not in _parameters(obj) and not _takes_kwargs(obj):
        raise ConfigError(f"data._target_={node.get('_target_')} takes no 'split' argument; a data plug-in is "
                          f"built once per split with split=train|val")


def _parameters(fn) -> dict:
    try:
        return dict(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return {}


def _takes_kwargs(fn) -> bool:
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in _parameters(fn).values())


def instantiate(node, group: str, ldae_args: dict):
    """Build the plug-in: its own arguments as given, those of `ldae_args` its signature takes; then check it
    has the interface. Errors are one ConfigError line."""
    from hydra.utils import instantiate as hydra_instantiate

    fn = locate(node, group)
    params, kw = _parameters(fn), _takes_kwargs(fn)
    spec = identity(node, group)
    args = {**{k: v for k, v in ldae_args.items() if kw or k in params}, **spec["args"]}
    try:
        obj = hydra_instantiate({"_target_": spec["target"], **args}, _convert_="all")
    except Exception as e:  # Hydra wraps the constructor's own error: show its first line
        raise ConfigError(f"{group}._target_={spec['target']} failed to build ({type(e.__cause__ or e).__name__}: "
                          f"{_first_line(e)})") from None
    _require_methods(obj, REQUIRED[group], group, spec["target"])
    return obj


def _require_methods(obj, names, group: str, target) -> None:
    """The class (before building) or the built object has the interface's names; else one line naming them."""
    missing = [m for m in names if not hasattr(obj, m)]
    if missing:
        raise ConfigError(f"{group}._target_={target} is not {WHAT[group]}: it lacks {', '.join(missing)}; "
                          f"a {group} plug-in needs {HINT[group]}")


def build_backbone_plugin(node, ldae_args: dict):
    """A user's backbone: the geometry and sizes ldae resolved (`ldae_args`, those its signature names), then the
    promises the run relies on: learned σ doubles the output channels, which only the backbone can say."""
    obj = instantiate(node, "model", ldae_args)
    if not hasattr(obj, "learn_sigma"):  # the loss and the samplers read it; a plain backbone has one output
        obj.learn_sigma = False
    if ldae_args["learn_sigma"] and not getattr(obj, "learn_sigma", False):
        raise ConfigError(f"model.learn_sigma=true, but model._target_={node.get('_target_')} has no true "
                          f"learn_sigma attribute; allowed: model.learn_sigma=false, or a backbone whose output "
                          f"has 2 x out_channels channels and learn_sigma = True")
    return obj
