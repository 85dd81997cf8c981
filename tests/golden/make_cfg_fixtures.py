"""Writes the class-conditional U-Net fixtures of tests/golden/ (issue 15; see README.md there):

  <cfg>.weights.safetensors  model.state_dict() (F32) of reference.Unet(num_classes=3, ...), metadata
                             "diffusion.unet" (resolved kwargs, with num_classes) and "diffusion.unet.extensions"
  <cfg>.io.safetensors       x (4,1,8,8), t (4,) I64, classes (4,) I64 = [2, -1, 0, 2] (-1: the null embedding;
                             class 1 unused, so its classes_emb row must get no gradient; class 2 twice, so its row
                             sums two images), y = model(x, t, classes), g ~ N(0,1), dx and grad.<name> of
                             sum(y * g); and the guided prediction (reference.guided_prediction, i.e.
                             classifier_free_guidance.py's forward_with_cond_scale without the parallel-component
                             removal) for guided_classes = [2, 0, 1, 2]:
                               guided.w0           w = 0 (cond_scale 1: the conditional prediction)
                               guided.w2           w = 2 (cond_scale 3)
                               guided.w2.phi0.7    w = 2, rescaled_phi 0.7
                               guided.w5.phi1      w = 5, rescaled_phi 1

for cfg in unet_cfg_convnext (dim 8, channels 1, dim_mults (1, 2), 2 heads of 8) and unet_cfg_resnet (the same with
ResNet blocks, 4 groups).

Run: /usr/bin/python3 tests/golden/make_cfg_fixtures.py

Weights: float32 default PyTorch init under torch.manual_seed(<seed>), GroupNorm affine parameters randomised as in
make_unet_fixtures.py. Outputs in float64 on the stored float32 weights and inputs, rounded once to F32.
"""
import json
import os
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import reference as R  # noqa: E402
import safetensors_io  # noqa: E402
from make_unet_fixtures import Float64Default, randomize_group_norms  # noqa: E402

EXTENSIONS = dict(level_attention=["linear", "linear"], mid_attention="full", attention_heads=2, attention_dim_head=8)
CONFIGS = {
    "unet_cfg_convnext": (1501, dict(dim=8, channels=1, dim_mults=(1, 2), num_classes=3)),
    "unet_cfg_resnet": (1502, dict(dim=8, channels=1, dim_mults=(1, 2), num_classes=3, use_convnext=False,
                                   resnet_block_groups=4)),
}
CLASSES = [2, -1, 0, 2]
GUIDED_CLASSES = [2, 0, 1, 2]
GUIDED = {"guided.w0": (0.0, 0.0), "guided.w2": (2.0, 0.0), "guided.w2.phi0.7": (2.0, 0.7),
          "guided.w5.phi1": (5.0, 1.0)}


def write(name):
    seed, kwargs = CONFIGS[name]
    torch.manual_seed(seed)
    model = R.Unet(**kwargs, **EXTENSIONS)
    randomize_group_norms(model)
    meta = {"diffusion.unet": json.dumps(R.unet_config(**kwargs)), "diffusion.unet.extensions": json.dumps(EXTENSIONS)}
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    assert set(state) == set(n for n, _ in model.named_parameters())
    wpath = os.path.join(HERE, f"{name}.weights.safetensors")
    safetensors_io.save(wpath, state, meta)

    x = torch.randn(4, 1, 8, 8)
    t = torch.tensor([3, 150, 41, 7], dtype=torch.int64)
    classes = torch.tensor(CLASSES, dtype=torch.int64)
    model64 = model.double()
    x64 = x.double().requires_grad_(True)
    with Float64Default():
        y = model64(x64, t, classes)
    g = torch.randn(y.shape, dtype=torch.float32)
    model64.zero_grad(set_to_none=True)
    (y * g.double()).sum().backward()
    io = {"x": x, "t": t, "classes": classes, "y": y.detach().float(), "g": g, "dx": x64.grad.float()}
    for pname, p in model64.named_parameters():
        io[f"grad.{pname}"] = p.grad.float()
    guided_classes = torch.tensor(GUIDED_CLASSES, dtype=torch.int64)
    io["guided_classes"] = guided_classes
    with Float64Default(), torch.no_grad():
        for key, (w, phi) in GUIDED.items():
            io[key] = R.guided_prediction(model64, x.double(), t, guided_classes, cond_scale=1.0 + w,
                                          rescaled_phi=phi).float()
    iopath = os.path.join(HERE, f"{name}.io.safetensors")
    safetensors_io.save(iopath, io, meta)
    print(f"{name}: {sum(v.numel() for v in state.values())} parameters in {len(state)} tensors; "
          f"{os.path.getsize(wpath)} B + {os.path.getsize(iopath)} B; max|y| {y.abs().max().item():.4g}, "
          f"max|guided.w2 - y_cond| {(io['guided.w2'] - io['guided.w0']).abs().max().item():.4g}")


def main():
    for name in CONFIGS:
        write(name)


if __name__ == "__main__":
    main()
