"""`ldae-export`: the encoder as a plain timm `VisionTransformer` with the adaLN modulation folded in at a fixed t.

    ldae-export ckpt_path=RUN/checkpoints/last.ckpt t=10 out=encoder_t10.pth [block=N] [use_ema=true]
    (or python -m ldae.export ...)

The fold is ldae.models.timm_vit; the input fold (`input=image|network`) and the output (`out=FOLDER` for a
timm local-dir folder with a model card, `out=FILE.pth` for the state dict and FILE.pth.json) are
ldae.timm_export.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from ldae.cli import fail
from ldae.errors import ConfigError


def cli(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = dict(a.split("=", 1) for a in argv if "=" in a)
    allowed = {"ckpt_path", "t", "out", "block", "use_ema", "input"}
    try:
        bad = sorted(set(args) - allowed)
        if bad:
            raise ConfigError(f"unknown argument '{bad[0]}'; allowed: {', '.join(sorted(allowed))}")
        if "ckpt_path" not in args or "out" not in args:
            raise ConfigError("missing required value: give ckpt_path=CKPT and out=FOLDER or out=FILE.pth (t=10 by default)")
        block = None if args.get("block", "null") == "null" else int(args["block"])
        from ldae.timm_export import export_checkpoint  # torch and timm load after the arguments are checked

        rec = export_checkpoint(args["ckpt_path"], int(args.get("t", 10)), args["out"], block,
                                args.get("use_ema", "true").lower() == "true", args.get("input", "image"),
                                command="ldae-export " + " ".join(shlex.quote(a) for a in argv))
    except (ConfigError, ValueError) as e:
        fail("ldae-export", str(e))
    what = "a timm local-dir folder" if Path(args["out"]).suffix != ".pth" else "timm VisionTransformer weights"
    print(f"wrote {args['out']} ({what}, depth {rec['timm_kwargs']['depth']}, t={rec['t']}, input={rec['input']})")


if __name__ == "__main__":
    cli()
