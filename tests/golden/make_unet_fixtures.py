"""Writes the whole-U-Net fixtures of tests/golden/ (see README.md there):

  <cfg>.weights.safetensors  model.state_dict() (names unchanged, F32), metadata "diffusion.unet" = JSON of the
                             resolved Unet kwargs
  <cfg>.io.safetensors       x (2,1,28,28), t (2,) I64 = [3, 150], y = model(x, t), g ~ N(0,1) (shape of y),
                             dx and grad.<name> (every parameter) of sum(y * g)
  ddim_unet.safetensors      deterministic DDIM (eta 0, no clipping) with the unet_convnext weights, linear schedule
                             T=200, ddim_timesteps(200, 10, "linspace"): x_T, timesteps (I64, ascending),
                             alphas_cumprod (F64, T), x_1 .. x_10 (x after step k) and x_0 (= x_10)
  unet_options.safetensors   forward of two small U-Nets with the options above at other values (write_options)
  ddpm_unet.safetensors      the primer's p_sample_loop (posterior variance, no clipping) with the unet_convnext
                             weights, linear schedule T=20, x_T (2,1,12,12), noise (19,288): z of step k
                             (t = 19 - k) for k = 0..18 (t = 0 adds none), x_1 .. x_20 (x after step k; x_20 = x_0)

for cfg in unet_convnext (Unet(dim=8, channels=1, dim_mults=(1,2,4))) and unet_resnet (same with
use_convnext=False, resnet_block_groups=8).

Run: /usr/bin/python3 tests/golden/make_unet_fixtures.py

Weights: float32 default PyTorch init under torch.manual_seed(<seed of the config>), then every GroupNorm's affine
parameters overwritten with weight 1 + 0.5 N(0,1), bias 0.5 N(0,1) (with the default 1/0 a swap of two norms'
parameters would go unnoticed). All outputs are evaluated in float64 on the stored float32 weights/inputs (default
dtype float64 during evaluation, so the time embedding and the schedule are float64 too) and rounded once to F32.
"""
import json
import os
import sys

import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import reference as R  # noqa: E402
import safetensors_io  # noqa: E402

CONFIGS = {
    "unet_convnext": (1001, dict(dim=8, channels=1, dim_mults=(1, 2, 4))),
    "unet_resnet": (1002, dict(dim=8, channels=1, dim_mults=(1, 2, 4), use_convnext=False, resnet_block_groups=8)),
}
# The options the primer's network leaves at their defaults: no time embedding, init_dim and out_dim given (out_dim !=
# channels), attention "none" / "full" per level and "linear" / "none" in the middle, other head counts and widths.
OPTION_CONFIGS = {
    "options_convnext": (1003, dict(dim=4, channels=2, init_dim=6, out_dim=3, dim_mults=(1, 2), with_time_emb=False,
                                    convnext_mult=1),
                         dict(level_attention=["none", "full"], mid_attention="linear", attention_heads=2,
                              attention_dim_head=3)),
    "options_resnet": (1004, dict(dim=4, channels=2, init_dim=5, out_dim=1, dim_mults=(1, 2), use_convnext=False,
                                  resnet_block_groups=2),
                       dict(level_attention=["full", "none"], mid_attention="none", attention_heads=1,
                            attention_dim_head=6)),
}
IO_SEED_OFFSET = 100  # x and g of <cfg>.io come from torch.manual_seed(seed + 100)
DDIM_SEED = 2001
DDIM = dict(T=200, schedule="linear", steps=10, spacing="linspace", eta=0.0, clip_x0=False)
DDPM_SEED = 2002
DDPM = dict(T=20, schedule="linear", variance="posterior", clip_x0=False)


class Float64Default:
    """Context: torch default dtype float64 (tensors created inside the forward, e.g. the time embedding's
    frequencies and the schedule's linspace, become float64)."""

    def __enter__(self):
        torch.set_default_dtype(torch.float64)

    def __exit__(self, *exc):
        torch.set_default_dtype(torch.float32)


def randomize_group_norms(module):
    for m in module.modules():
        if isinstance(m, nn.GroupNorm) and m.affine:
            with torch.no_grad():
                m.weight.copy_(1.0 + 0.5 * torch.randn_like(m.weight))
                m.bias.copy_(0.5 * torch.randn_like(m.bias))


def build(name):
    seed, kwargs = CONFIGS[name]
    torch.manual_seed(seed)
    model = R.Unet(**kwargs)  # float32
    randomize_group_norms(model)
    return model, R.unet_config(**kwargs), seed


def write_unet(name):
    model, config, seed = build(name)
    meta = {"diffusion.unet": json.dumps(config)}
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    assert all(v.dtype == torch.float32 for v in state.values())
    assert set(state) == set(n for n, _ in model.named_parameters()), "state_dict holds only parameters"
    wpath = os.path.join(HERE, f"{name}.weights.safetensors")
    safetensors_io.save(wpath, state, meta)

    torch.manual_seed(seed + IO_SEED_OFFSET)
    x = torch.randn(2, 1, 28, 28)
    t = torch.tensor([3, 150], dtype=torch.int64)
    model64 = model.double()
    x64 = x.double().requires_grad_(True)
    with Float64Default():
        y = model64(x64, t)
    assert y.dtype == torch.float64
    g = torch.randn(y.shape, dtype=torch.float32)
    model64.zero_grad(set_to_none=True)
    (y * g.double()).sum().backward()
    io = {"x": x, "t": t, "y": y.detach().float(), "g": g, "dx": x64.grad.float()}
    for pname, p in model64.named_parameters():
        io[f"grad.{pname}"] = p.grad.float()
    iopath = os.path.join(HERE, f"{name}.io.safetensors")
    safetensors_io.save(iopath, io, meta)
    n_params = sum(v.numel() for v in state.values())
    print(f"{name}: {n_params} parameters in {len(state)} tensors; "
          f"{os.path.basename(wpath)} {os.path.getsize(wpath)} B, {os.path.basename(iopath)} {os.path.getsize(iopath)} B; "
          f"max|y| {y.abs().max().item():.4g}")
    return state


def write_ddim():
    model, config, _ = build("unet_convnext")
    model64 = model.double()
    torch.manual_seed(DDIM_SEED)
    x_T = torch.randn(2, 1, 28, 28)
    with Float64Default():
        betas = R.SCHEDULES[DDIM["schedule"]](DDIM["T"])
        tabs = R.tables(betas)
        assert tabs["alphas_cumprod"].dtype == torch.float64
        timesteps = R.ddim_timesteps(DDIM["T"], DDIM["steps"], DDIM["spacing"])
        xs = R.ddim_sample(model64, x_T.double(), timesteps, tabs["alphas_cumprod"], eta=DDIM["eta"],
                           clip_x0=DDIM["clip_x0"])
    out = {"x_T": x_T, "timesteps": timesteps, "alphas_cumprod": tabs["alphas_cumprod"]}
    for k, xk in enumerate(xs, start=1):
        out[f"x_{k}"] = xk.float()
    out["x_0"] = xs[-1].float()
    meta = {"diffusion.unet": json.dumps(config), "diffusion.ddim": json.dumps(DDIM),
            "weights": "unet_convnext.weights.safetensors"}
    path = os.path.join(HERE, "ddim_unet.safetensors")
    safetensors_io.save(path, out, meta)
    print(f"ddim_unet: timesteps {timesteps.tolist()}, {os.path.getsize(path)} B, "
          f"max|x_0| {xs[-1].abs().max().item():.4g}")


def write_ddpm():
    """The primer's p_sample_loop with the unet_convnext weights and fixed noise: linear schedule T = 20, batch 2,
    12x12 images (12 -> 6 -> 3). Noise z_k for every step with t > 0, x after every step."""
    model, config, _ = build("unet_convnext")
    model64 = model.double()
    torch.manual_seed(DDPM_SEED)
    x_T = torch.randn(2, 1, 12, 12)
    zs = torch.randn(DDPM["T"] - 1, 2, 1, 12, 12)  # z for t = T-1, ..., 1 (step k uses zs[k]); t = 0 draws none
    out = {"x_T": x_T, "noise": zs.reshape(DDPM["T"] - 1, -1)}  # safetensors tensors of the C++ reader: rank <= 4
    with Float64Default():
        tabs = R.tables(R.SCHEDULES[DDPM["schedule"]](DDPM["T"]))
        x = x_T.double()
        for k, t_index in enumerate(reversed(range(DDPM["T"]))):
            t = torch.full((2,), t_index, dtype=torch.long)
            noise = zs[k].double() if t_index > 0 else None
            with torch.no_grad():
                x = R.p_sample(model64, x, t, t_index, tabs, noise=noise)
            out[f"x_{k + 1}"] = x.float()
    meta = {"diffusion.unet": json.dumps(config), "diffusion.ddpm": json.dumps(DDPM),
            "weights": "unet_convnext.weights.safetensors"}
    path = os.path.join(HERE, "ddpm_unet.safetensors")
    safetensors_io.save(path, out, meta)
    print(f"ddpm_unet: T {DDPM['T']}, {os.path.getsize(path)} B, max|x_0| {x.abs().max().item():.4g}")


def write_options():
    """unet_options.safetensors: the options the two U-Nets above leave at their defaults, forward only (the
    backward of these configurations is checked by finite differences in tests/model/test_unet_gradients.cpp).
    For each configuration <c>: <c>.weights (P,) F32, every parameter flattened in the order of metadata
    "<c>.parameters" (JSON list of [name, shape]); <c>.x (2, 2, 8, 8); <c>.t (2,) I64; <c>.y = model(x, t).
    Metadata "<c>.unet": the resolved reference kwargs; "<c>.extensions": the C++ extension kwargs."""
    out, meta = {}, {}
    for name, (seed, kwargs, extensions) in OPTION_CONFIGS.items():
        torch.manual_seed(seed)
        model = R.Unet(**kwargs, **extensions)
        randomize_group_norms(model)
        x = torch.randn(2, kwargs["channels"], 8, 8)
        t = torch.tensor([5, 41], dtype=torch.int64)
        names = [n for n, _ in model.named_parameters()]
        out[f"{name}.weights"] = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
        out[f"{name}.x"] = x
        out[f"{name}.t"] = t
        with Float64Default():
            with torch.no_grad():
                y = model.double()(x.double(), t)
        out[f"{name}.y"] = y.float()
        meta[f"{name}.unet"] = json.dumps(R.unet_config(**kwargs))
        meta[f"{name}.extensions"] = json.dumps(extensions)
        meta[f"{name}.parameters"] = json.dumps([[n, list(p.shape)] for n, p in model.named_parameters()])
        print(f"{name}: {out[name + '.weights'].numel()} parameters in {len(names)} tensors, max|y| "
              f"{y.abs().max().item():.4g}")
    path = os.path.join(HERE, "unet_options.safetensors")
    safetensors_io.save(path, out, meta)
    print(f"unet_options: {os.path.getsize(path)} B")


def main():
    for name in CONFIGS:
        write_unet(name)
    write_ddim()
    write_ddpm()
    write_options()


if __name__ == "__main__":
    main()
