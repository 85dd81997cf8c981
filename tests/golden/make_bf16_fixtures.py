"""Writes tests/golden/unet_bf16_autocast.safetensors: the unet_convnext fixture's network (weights of
unet_convnext.weights.safetensors, x and t of unet_convnext.io.safetensors) run by the reference in PyTorch's CPU
mixed precision, torch.autocast("cpu", dtype=torch.bfloat16): convolutions, linears and matmuls with bf16 operands,
the rest as autocast decides, GroupNorm in fp32 (as PyTorch >= 2.0's autocast does; 1.13's fails without it). Tensors:

  y_autocast   the output under autocast, as F32 (2,1,28,28)
  y_fp32       the same network in plain float32 (for the record: how far float32 itself is from the float64 y)

tests/model/test_unet_bf16.cpp compares our bf16 matmul precision (kernels/precision.hpp) with y_autocast and with
the float64 y of unet_convnext.io.safetensors: bf16 has its own tolerance, stated there, not the float32 one.

Run: /usr/bin/python3 tests/golden/make_bf16_fixtures.py
"""
import os
import sys

import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import reference as R  # noqa: E402
import safetensors_io  # noqa: E402
from make_unet_fixtures import CONFIGS  # noqa: E402


def group_norm_in_fp32():
    """PyTorch 1.13's CPU autocast runs convolutions in bf16 but lacks GroupNorm in its fp32 list, so GroupNorm
    fails on a bf16 input with fp32 affine parameters. Later versions list it (inputs cast to fp32): do that."""
    forward = nn.GroupNorm.forward
    nn.GroupNorm.forward = lambda self, x: forward(self, x.float())


def main():
    group_norm_in_fp32()
    torch.set_num_threads(1)  # deterministic reductions
    _, kwargs = CONFIGS["unet_convnext"]
    model = R.Unet(**kwargs)
    weights, _ = safetensors_io.load(os.path.join(HERE, "unet_convnext.weights.safetensors"))
    model.load_state_dict(weights)
    model.eval()
    io, _ = safetensors_io.load(os.path.join(HERE, "unet_convnext.io.safetensors"))
    x, t, y64 = io["x"], io["t"], io["y"]
    with torch.no_grad():
        y32 = model(x, t)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y16 = model(x, t)
    y16 = y16.float()
    rms = y64.pow(2).mean().sqrt().item()
    out = {"y_autocast": y16, "y_fp32": y32}
    path = os.path.join(HERE, "unet_bf16_autocast.safetensors")
    safetensors_io.save(path, out, {"weights": "unet_convnext.weights.safetensors",
                                    "io": "unet_convnext.io.safetensors",
                                    "autocast": "torch.autocast('cpu', dtype=torch.bfloat16), torch " + torch.__version__})
    print(f"unet_bf16_autocast: {os.path.getsize(path)} B; rms(y) {rms:.4g}; "
          f"max|autocast - y64| / rms {(y16 - y64).abs().max().item() / rms:.4g}, "
          f"rms(autocast - y64) / rms {(y16 - y64).pow(2).mean().sqrt().item() / rms:.4g}; "
          f"max|fp32 - y64| / rms {(y32 - y64).abs().max().item() / rms:.3g}")


if __name__ == "__main__":
    main()
