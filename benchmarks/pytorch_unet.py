#!/usr/bin/python3
"""The PyTorch side of the comparison: the same measurement as bench_unet, printing the same JSON line.

    /usr/bin/python3 benchmarks/pytorch_unet.py --mode train|forward [--batch B] [--threads N] [--iters K]
        [--warmup W] [--dim 28] [--dim-mults 1,2,4] [--block convnext|resnet] [--channels 1] [--image-size 28]
        [--timesteps 300] [--seed 0] [--grad] [--print-layers]

The network is the reference Unet of tests/golden/reference.py (the primer's), in float32, on the CPU, with
torch.set_num_threads(N). The input batch is synthetic (uniform in [-1, 1]), as in bench_unet.
  train:   optimizer.zero_grad(); t ~ U{0..T-1}; eps ~ N(0, I); loss = p_losses(..., loss_type="l2") (q_sample,
           forward, MSE); loss.backward(); Adam(lr=1e-3).step()  -- one iteration
  forward: model(x, t) under torch.no_grad() (how sampling runs it); --grad records the autograd graph instead,
           which keeps the activations like the C++ forward does.
FLOPs per image are counted with forward hooks on a batch of one (2 * MACs of Conv2d, ConvTranspose2d, Linear and
the attention products; element-wise work not counted), the same definition as benchmarks/unet_census.hpp, so the
two programs' counts must agree. Training FLOPs are estimated as 3x forward.
Peak memory is this process's ru_maxrss (MiB), which includes the Python interpreter and libtorch themselves;
baseline_rss_mib is the peak right after `import torch`, before the model exists.
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch
from torch import nn

BASELINE_RSS_MIB = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "golden"))
import reference  # noqa: E402  (the primer's Unet, schedules and p_losses)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=["train", "forward"], default="train")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--dim", type=int, default=28)
    p.add_argument("--dim-mults", default="1,2,4")
    p.add_argument("--block", choices=["convnext", "resnet"], default="convnext")
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--image-size", type=int, default=28)
    p.add_argument("--timesteps", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grad", action="store_true", help="forward mode: keep autograd enabled")
    p.add_argument("--print-layers", action="store_true", help="list the counted layers and exit")
    a = p.parse_args(argv)
    if a.batch < 1 or a.iters < 1 or a.warmup < 0 or a.threads < 0:
        p.error("--batch and --iters must be >= 1, --warmup and --threads >= 0")
    a.dim_mults = tuple(int(m) for m in a.dim_mults.split(","))
    return a


def count_forward_macs(model, channels, size, timesteps, listing=None):
    """MACs per image of one forward pass, from forward hooks on a batch of one."""
    macs = {"conv": 0, "linear": 0, "attention": 0}
    names = {m: n for n, m in model.named_modules()}

    def conv_hook(m, inputs, out):
        k = m.kernel_size[0] * m.kernel_size[1]
        if isinstance(m, nn.ConvTranspose2d):
            _, ci, h, w = inputs[0].shape
            n = ci * h * w * (m.out_channels // m.groups) * k
        else:
            _, co, oh, ow = out.shape
            n = co * oh * ow * (m.in_channels // m.groups) * k
        macs["conv"] += n
        if listing is not None:
            listing.append(f"conv      {names[m]}  {tuple(inputs[0].shape[1:])} -> {tuple(out.shape[1:])}  {n / 1e6:g}")

    def linear_hook(m, inputs, out):
        rows = inputs[0].numel() // m.in_features
        n = rows * m.in_features * m.out_features
        macs["linear"] += n
        if listing is not None:
            listing.append(f"linear    {names[m]}  {m.in_features}->{m.out_features}  {n / 1e6:g}")

    def attention_hook(m, inputs, out):
        _, _, h, w = inputs[0].shape
        P = h * w
        d = m.to_qkv.out_channels // 3 // m.heads
        if isinstance(m, reference.LinearAttention):
            n = m.heads * 2 * d * d * P  # context (d x d over P) + output (d x P over d)
        else:
            n = m.heads * 2 * P * P * d  # q^T k (P x P over d) + attention x v
        macs["attention"] += n
        if listing is not None:
            listing.append(f"attention {names[m]}  {type(m).__name__} {tuple(inputs[0].shape[1:])}  {n / 1e6:g}")

    handles = []
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
        elif isinstance(m, (reference.Attention, reference.LinearAttention)):
            handles.append(m.register_forward_hook(attention_hook))
    with torch.no_grad():
        model(torch.zeros(1, channels, size, size), torch.full((1,), timesteps // 2, dtype=torch.long))
    for h in handles:
        h.remove()
    return macs


def main(argv=None):
    a = parse_args(argv)
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    model = reference.Unet(dim=a.dim, dim_mults=a.dim_mults, channels=a.channels, use_convnext=a.block == "convnext")
    listing = [] if a.print_layers else None
    macs = count_forward_macs(model, a.channels, a.image_size, a.timesteps, listing)
    if a.print_layers:
        print("\n".join(listing))
        print(f"# forward MMACs per image: conv {macs['conv'] / 1e6:g}, linear {macs['linear'] / 1e6:g}, "
              f"attention {macs['attention'] / 1e6:g}; forward GFLOP per image {2 * sum(macs.values()) / 1e9:g}")
        return 0
    fwd_flops = 2.0 * sum(macs.values())

    gen = torch.Generator().manual_seed(a.seed)
    x0 = torch.rand(a.batch, a.channels, a.image_size, a.image_size, generator=gen) * 2 - 1  # (N, C, H, W)
    tabs = reference.tables(reference.linear_beta_schedule(a.timesteps))
    seconds = []
    last = 0.0
    if a.mode == "train":
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        for i in range(a.warmup + a.iters):
            t0 = time.perf_counter()
            optimizer.zero_grad()
            t = torch.randint(0, a.timesteps, (a.batch,), generator=gen)
            noise = torch.randn(x0.shape, generator=gen)
            loss = reference.p_losses(model, x0, t, tabs, noise=noise, loss_type="l2")
            loss.backward()
            optimizer.step()
            last = loss.item()
            t1 = time.perf_counter()
            if i >= a.warmup:
                seconds.append(t1 - t0)
    else:
        model.eval()
        t = torch.randint(0, a.timesteps, (a.batch,), generator=gen)
        with torch.set_grad_enabled(a.grad):
            for i in range(a.warmup + a.iters):
                t0 = time.perf_counter()
                y = model(x0, t)
                t1 = time.perf_counter()
                if i >= a.warmup:
                    seconds.append(t1 - t0)
                last = float(y.mean())
                del y

    train = a.mode == "train"
    flops = 3.0 * fwd_flops if train else fwd_flops
    s_median = statistics.median(seconds)
    s_total = sum(seconds)
    out = {
        "impl": "pytorch",
        "mode": a.mode,
        "batch": a.batch,
        "threads": torch.get_num_threads(),
        "iters": a.iters,
        "warmup": a.warmup,
        "images_per_s_median": a.batch / s_median,
        "images_per_s_mean": a.batch * len(seconds) / s_total,
        "s_per_iter_median": s_median,
        "s_per_iter_mean": s_total / len(seconds),
        "s_per_iter_min": min(seconds),
        "s_per_iter_max": max(seconds),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "baseline_rss_mib": BASELINE_RSS_MIB,
        "flops_per_image": flops,
        "forward_flops_per_image": fwd_flops,
        "flops_note": ("estimate: 3 x forward (2*MACs of convs, linears, attention products)" if train else
                       "2*MACs of convs, linears, attention products (element-wise ops not counted)"),
        "gflops_per_s": flops * a.batch / s_median * 1e-9,
        "parameters": sum(p.numel() for p in model.parameters()),
        ("last_loss" if train else "output_mean"): last,
        "config": {"dim": a.dim, "dim_mults": list(a.dim_mults), "block": a.block, "channels": a.channels,
                   "image_size": a.image_size, "timesteps": a.timesteps, "seed": a.seed},
        "torch_version": torch.__version__,
        "forward_grad": bool(a.grad) if not train else True,
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
