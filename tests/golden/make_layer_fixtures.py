"""Writes tests/golden/layers.safetensors: forward and backward of single layers/blocks, for the C++ layer tests.

Run: /usr/bin/python3 tests/golden/make_layer_fixtures.py   (Debian's torch 1.13; no other dependency)

For every case <c> (float32 tensors unless noted):
  <c>.x                  input                        (I64 for time_embedding)
  <c>.temb               time embedding input         (ResnetBlock/ConvNextBlock cases with time_emb_dim only)
  <c>.y                  output
  <c>.dy                 upstream gradient, standard normal, shape of y
  <c>.dx                 d/dx of sum(y * dy)          (absent for time_embedding)
  <c>.dtemb              d/dtemb of sum(y * dy)       (with temb only)
  <c>.param.<name>       every parameter, <name> = its state_dict name in the module
  <c>.grad.<name>        d/d<param> of sum(y * dy)
metadata <c> = JSON {"module", "args", "kwargs", "input_shape"} of the constructor call and input.

Parameters and inputs are drawn in float32 (default PyTorch init, torch.manual_seed(crc32(<c>)) so a case does not
depend on the others); GroupNorm affine parameters are then overwritten with random values (weight 1 + 0.5 N(0,1),
bias 0.5 N(0,1)) so that the affine part is tested. The forward and backward are then evaluated in float64 on
those exact float32 values and the results rounded once to float32: the stored y/dx/grad are the float32 roundings
of the exact-arithmetic results of the stored inputs, so C++ float and double builds are both compared against
the truth rather than against PyTorch's own float32 rounding errors.
"""
import json
import os
import sys
import zlib

import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import reference as R  # noqa: E402
import safetensors_io  # noqa: E402


def randomize_group_norms(module):
    for m in module.modules():
        if isinstance(m, nn.GroupNorm) and m.affine:
            with torch.no_grad():
                m.weight.copy_(1.0 + 0.5 * torch.randn_like(m.weight))
                m.bias.copy_(0.5 * torch.randn_like(m.bias))


def spec(module_name, *args, **kwargs):
    return {"module": module_name, "args": list(args), "kwargs": kwargs}


# name: (constructor spec, builder, input shape or tensor factory, time_emb dim or None, input scale)
CASES = [
    ("conv3x3", spec("Conv2d", 5, 8, 3, padding=1), lambda: nn.Conv2d(5, 8, 3, padding=1), (2, 5, 7, 7)),
    ("conv7x7_pad3", spec("Conv2d", 3, 6, 7, padding=3), lambda: nn.Conv2d(3, 6, 7, padding=3), (2, 3, 9, 9)),
    ("conv_down", spec("Conv2d", 6, 6, 4, stride=2, padding=1), lambda: nn.Conv2d(6, 6, 4, stride=2, padding=1),
     (2, 6, 7, 7)),
    ("conv_depthwise", spec("Conv2d", 8, 8, 7, padding=3, groups=8),
     lambda: nn.Conv2d(8, 8, 7, padding=3, groups=8), (2, 8, 7, 7)),
    ("conv_grouped", spec("Conv2d", 8, 12, 3, padding=1, groups=4),
     lambda: nn.Conv2d(8, 12, 3, padding=1, groups=4), (2, 8, 5, 6)),
    ("conv1x1_nobias", spec("Conv2d", 6, 12, 1, bias=False), lambda: nn.Conv2d(6, 12, 1, bias=False), (3, 6, 4, 5)),
    ("conv_transpose", spec("ConvTranspose2d", 6, 6, 4, 2, 1), lambda: nn.ConvTranspose2d(6, 6, 4, 2, 1),
     (2, 6, 7, 7)),
    ("conv_transpose_k3", spec("ConvTranspose2d", 4, 5, 3, stride=2, padding=1),
     lambda: nn.ConvTranspose2d(4, 5, 3, stride=2, padding=1), (2, 4, 5, 5)),
    ("linear", spec("Linear", 10, 7), lambda: nn.Linear(10, 7), (3, 10)),
    ("group_norm_1", spec("GroupNorm", 1, 6), lambda: nn.GroupNorm(1, 6), (2, 6, 7, 7)),
    ("group_norm_3", spec("GroupNorm", 3, 6), lambda: nn.GroupNorm(3, 6), (2, 6, 7, 7)),
    ("silu", spec("SiLU"), lambda: nn.SiLU(), (2, 3, 7, 7), None, 3.0),
    ("gelu", spec("GELU"), lambda: nn.GELU(), (2, 3, 7, 7), None, 3.0),
    ("attention", spec("Attention", 8), lambda: R.Attention(8), (2, 8, 7, 7)),
    ("attention_small", spec("Attention", 6, heads=2, dim_head=8), lambda: R.Attention(6, heads=2, dim_head=8),
     (2, 6, 5, 5)),
    ("linear_attention", spec("LinearAttention", 8), lambda: R.LinearAttention(8), (2, 8, 7, 7)),
    ("linear_attention_small", spec("LinearAttention", 6, heads=2, dim_head=8),
     lambda: R.LinearAttention(6, heads=2, dim_head=8), (2, 6, 5, 5)),
    ("time_embedding", spec("SinusoidalPositionEmbeddings", 28), lambda: R.SinusoidalPositionEmbeddings(28),
     lambda: torch.tensor([0, 1, 57, 199, 999], dtype=torch.int64)),
    ("resnet_block", spec("ResnetBlock", 8, 16, time_emb_dim=12, groups=4),
     lambda: R.ResnetBlock(8, 16, time_emb_dim=12, groups=4), (2, 8, 7, 7), 12),
    ("resnet_block_same", spec("ResnetBlock", 8, 8, groups=8), lambda: R.ResnetBlock(8, 8, groups=8), (2, 8, 7, 7)),
    ("convnext_block", spec("ConvNextBlock", 8, 16, time_emb_dim=12, mult=2),
     lambda: R.ConvNextBlock(8, 16, time_emb_dim=12, mult=2), (2, 8, 7, 7), 12),
    ("convnext_block_same", spec("ConvNextBlock", 8, 8, mult=2), lambda: R.ConvNextBlock(8, 8, mult=2),
     (2, 8, 7, 7)),
    ("prenorm_linear_attention",
     {"module": "Residual(PreNorm(8, LinearAttention(8)))", "args": [], "kwargs": {}},
     lambda: R.Residual(R.PreNorm(8, R.LinearAttention(8))), (2, 8, 7, 7)),
]


def make_case(name, ctor_spec, build, x_spec, temb_dim=None, x_scale=1.0):
    torch.manual_seed(zlib.crc32(name.encode()))
    module = build()  # float32, default init
    randomize_group_norms(module)
    if callable(x_spec):
        x = x_spec()
    else:
        x = x_scale * torch.randn(*x_spec)
    temb = torch.randn(x.shape[0], temb_dim) if temb_dim is not None else None

    # Evaluate in float64 on the float32 values (see module docstring).
    module = module.double()
    floating = x.is_floating_point()
    x64 = x.double().requires_grad_(True) if floating else x
    args = [x64]
    if temb is not None:
        temb64 = temb.double().requires_grad_(True)
        args.append(temb64)
    torch.set_default_dtype(torch.float64)  # also makes the time embedding's arange/exp float64
    try:
        y = module(*args)
    finally:
        torch.set_default_dtype(torch.float32)
    assert y.dtype == torch.float64, name
    dy = torch.randn(y.shape, dtype=torch.float32)
    module.zero_grad(set_to_none=True)
    if y.requires_grad:  # time_embedding has neither parameters nor a differentiable input
        (y * dy.double()).sum().backward()

    out = {f"{name}.x": x, f"{name}.y": y.detach().float(), f"{name}.dy": dy}
    if floating:
        out[f"{name}.dx"] = x64.grad.float()
    if temb is not None:
        out[f"{name}.temb"] = temb
        out[f"{name}.dtemb"] = temb64.grad.float()
    for pname, p in module.named_parameters():
        out[f"{name}.param.{pname}"] = p.detach().float()
        out[f"{name}.grad.{pname}"] = p.grad.float()
    # state_dict holds no buffers for these modules: every entry is a parameter
    assert set(module.state_dict().keys()) == set(n for n, _ in module.named_parameters()), name
    meta = dict(ctor_spec)
    meta["input_shape"] = list(x.shape)
    if temb is not None:
        meta["temb_shape"] = list(temb.shape)
    return out, json.dumps(meta)


def main():
    tensors = {}
    metadata = {"format": "diffusion layer fixtures v1; see tests/golden/README.md"}
    for case in CASES:
        name = case[0]
        out, meta = make_case(*case)
        tensors.update(out)
        metadata[name] = meta
    path = os.path.join(HERE, "layers.safetensors")
    safetensors_io.save(path, tensors, metadata)
    print(f"wrote {path}: {len(CASES)} cases, {len(tensors)} tensors, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
