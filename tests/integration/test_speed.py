"""Speed switches (conf/speed/): each one runs on CPU and leaves the pretraining losses as they were."""

import csv

import pytest
import torch

from ldae.config import ConfigError, validate

LEAN = ["trainer.max_epochs=1", "trainer.accelerator=cpu", "checkpoint.every_n_steps=null"]


def _pretrain(compose, tmp_path, *overrides):
    from ldae.stages import pretrain

    out = tmp_path / "_".join(o.split("=")[0].split(".")[-1] for o in overrides) if overrides else tmp_path / "base"
    out.mkdir(parents=True)
    module, _, info = pretrain(compose(*LEAN, *overrides), out)
    rows = list(csv.DictReader(open(out / "csv" / "pretrain" / "metrics.csv")))
    return module, [float(r["pretrain/loss"]) for r in rows if r.get("pretrain/loss")], out


def test_fp32_switches_leave_the_losses_unchanged(compose, tmp_path):
    """compile (the eager backend: dynamo captures the graph, without inductor's ~20 s C++ build),
    activation checkpointing, fused AdamW, the explicit-softmax attention, EMA without foreach."""
    _, base, _ = _pretrain(compose, tmp_path)
    module, fast, out = _pretrain(compose, tmp_path, "speed.compile=true", "speed.compile_backend=eager",
                                  "speed.activation_checkpointing=true", "speed.fused_adamw=true",
                                  "speed.fused_attention=false", "speed.ema_foreach=false")
    bb = module.backbone
    assert bb._compiled_call_impl is not None and bb.grad_checkpointing
    assert not bb.blocks[0].attn.fused_attn
    assert module.trainer.optimizers[0].defaults["fused"] is True
    assert len(base) == 4 and fast == pytest.approx(base, rel=1e-4)
    # Checkpoint keys carry no compile/DDP wrapper prefixes, and the checkpoint loads into a fresh module.
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert not any("_orig_mod." in k or k.startswith("module.") for k in state)
    assert set(state) == set(module.state_dict())


def test_bf16_autocast_and_channels_last_conv_tokenizer(compose, tmp_path):
    _, base, _ = _pretrain(compose, tmp_path, "experiment=trajectory/04_noise_schedule")
    module, got, _ = _pretrain(compose, tmp_path, "experiment=trajectory/04_noise_schedule",
                               "trainer.precision=bf16-mixed", "speed.channels_last=true")
    conv = next(m for m in module.tokenizer.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size[0] > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert all(torch.isfinite(torch.tensor(got)))
    assert got == pytest.approx(base, rel=0.05)  # bf16 rounding, same data and noise


def test_tf32_switch_sets_matmul_precision():
    from ldae.speed import set_tf32

    before = torch.get_float32_matmul_precision()
    try:
        set_tf32(True)
        assert torch.get_float32_matmul_precision() == "high" and torch.backends.cuda.matmul.allow_tf32
        set_tf32(False)
        assert torch.get_float32_matmul_precision() == "highest" and not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.set_float32_matmul_precision(before)


@pytest.mark.parametrize("override, message", [
    ("speed.compile_mode=fast", "unknown speed.compile_mode 'fast'"),
    ("speed.compile_backend=tvm", "unknown speed.compile_backend 'tvm'"),
    ("speed.fused_adamw=maybe", "speed.fused_adamw=maybe must be auto, true or false"),
])
def test_bad_speed_values_are_one_line_errors(compose, override, message):
    with pytest.raises(ConfigError, match=message):
        validate(compose(override))
