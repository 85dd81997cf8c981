"""Writes tests/golden/pool_loss.safetensors: PyTorch's pooling layers, ReLU and cross-entropy, forward and
backward, for tests/nn/test_pooling_loss.cpp.

Run: /usr/bin/python3 tests/golden/make_pool_fixtures.py   (Debian's torch 1.13)

As make_layer_fixtures.py: inputs and upstream gradients drawn in float32 under torch.manual_seed(crc32(<case>)),
the forward and backward evaluated in float64 on those values, results rounded once to float32. For each case <c>:
  <c>.x, <c>.y, <c>.dy, <c>.dx     (dx = d sum(y * dy) / dx)
metadata <c> = JSON {"module", "kwargs", "input_shape"}.
The "ties" case draws x from {0, 1, 2} so that windows hold several maxima: the gradient must go to the first one
in row-major order, as PyTorch's CPU kernel sends it.
Cross-entropy case "cross_entropy": x = logits (6, 10), <c>.labels (I64, 6), y = F.cross_entropy(x, labels) (mean)
as shape (1,), dy (1,), dx = dy * d loss / d logits.
Forward-only cases (no dy/dx): "resize_bilinear" (F.interpolate bilinear, align_corners=False, (5, 7) -> (11, 4));
"conv_rect_1x7", "conv_rect_7x1", "conv_rect_strided" (nn.Conv2d with rectangular kernels and per-axis stride and
padding; <c>.weight, <c>.bias stored).
"""
import json
import os
import sys
import zlib

import torch
import torch.nn.functional as F
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import safetensors_io  # noqa: E402

# name: (module, kwargs, input shape, input kind)
CASES = [
    ("maxpool_k2", "MaxPool2d", {"kernel_size": 2}, (2, 3, 8, 8), "normal"),
    ("maxpool_k3s2", "MaxPool2d", {"kernel_size": 3, "stride": 2}, (2, 3, 9, 10), "normal"),
    ("maxpool_k3s1p1", "MaxPool2d", {"kernel_size": 3, "stride": 1, "padding": 1}, (2, 3, 6, 7), "normal"),
    ("maxpool_ties", "MaxPool2d", {"kernel_size": 3, "stride": 2, "padding": 1}, (2, 3, 7, 7), "ties"),
    ("avgpool_k3s1p1_exclude_pad", "AvgPool2d", {"kernel_size": 3, "stride": 1, "padding": 1, "count_include_pad": False},
     (2, 3, 6, 7), "normal"),
    ("avgpool_k3s1p1_include_pad", "AvgPool2d", {"kernel_size": 3, "stride": 1, "padding": 1, "count_include_pad": True},
     (2, 3, 6, 7), "normal"),
    ("avgpool_k5s3", "AvgPool2d", {"kernel_size": 5, "stride": 3}, (2, 3, 11, 12), "normal"),
    ("avgpool_k2", "AvgPool2d", {"kernel_size": 2}, (2, 3, 8, 6), "normal"),
    ("global_avgpool", "AdaptiveAvgPool2d", {"output_size": [1, 1]}, (2, 4, 5, 6), "normal"),
    ("relu", "ReLU", {}, (2, 3, 7, 7), "normal3"),
]


def make_case(name, module_name, kwargs, shape, kind):
    torch.manual_seed(zlib.crc32(name.encode()))
    if kind == "ties":
        x = torch.randint(0, 3, shape).float()
    elif kind == "normal3":
        x = 3.0 * torch.randn(*shape)
    else:
        x = torch.randn(*shape)
    module = getattr(nn, module_name)(**kwargs)
    x64 = x.double().requires_grad_(True)
    y = module(x64)
    dy = torch.randn(y.shape, dtype=torch.float32)
    (y * dy.double()).sum().backward()
    out = {f"{name}.x": x, f"{name}.y": y.detach().float(), f"{name}.dy": dy, f"{name}.dx": x64.grad.float()}
    return out, json.dumps({"module": module_name, "kwargs": kwargs, "input_shape": list(shape)})


def cross_entropy_case():
    name = "cross_entropy"
    torch.manual_seed(zlib.crc32(name.encode()))
    x = 4.0 * torch.randn(6, 10)
    labels = torch.randint(0, 10, (6,), dtype=torch.int64)
    x64 = x.double().requires_grad_(True)
    y = F.cross_entropy(x64, labels).reshape(1)
    dy = torch.randn(1, dtype=torch.float32)
    (y * dy.double()).sum().backward()
    out = {f"{name}.x": x, f"{name}.labels": labels, f"{name}.y": y.detach().float(), f"{name}.dy": dy,
           f"{name}.dx": x64.grad.float()}
    return out, json.dumps({"module": "cross_entropy", "kwargs": {"reduction": "mean"}, "input_shape": [6, 10]})


def resize_case():
    """F.interpolate(x, size, bilinear, align_corners=False): one axis up, one down (Inception's resize)."""
    name = "resize_bilinear"
    torch.manual_seed(zlib.crc32(name.encode()))
    x = torch.rand(2, 3, 5, 7)
    y = F.interpolate(x.double(), size=(11, 4), mode="bilinear", align_corners=False)
    out = {f"{name}.x": x, f"{name}.y": y.float()}
    return out, json.dumps({"module": "interpolate", "kwargs": {"size": [11, 4], "mode": "bilinear",
                                                               "align_corners": False}, "input_shape": [2, 3, 5, 7]})


def conv_rect_cases():
    """nn.Conv2d with rectangular kernels, per-axis stride and padding (forward only: kernels/conv2d_rect.hpp)."""
    cases = [("conv_rect_1x7", dict(in_channels=4, out_channels=5, kernel_size=(1, 7), padding=(0, 3)), (2, 4, 6, 9)),
             ("conv_rect_7x1", dict(in_channels=4, out_channels=5, kernel_size=(7, 1), padding=(3, 0)), (1, 4, 9, 6)),
             ("conv_rect_strided", dict(in_channels=3, out_channels=6, kernel_size=(2, 3), stride=(2, 1),
                                        padding=(1, 0)), (2, 3, 7, 8))]
    tensors, meta = {}, {}
    for name, kwargs, shape in cases:
        torch.manual_seed(zlib.crc32(name.encode()))
        conv = nn.Conv2d(**kwargs)
        x = torch.randn(*shape)
        y = conv.double()(x.double())
        tensors.update({f"{name}.x": x, f"{name}.y": y.detach().float(), f"{name}.weight": conv.weight.detach().float(),
                        f"{name}.bias": conv.bias.detach().float()})
        meta[name] = json.dumps({"module": "Conv2d", "kwargs": kwargs, "input_shape": list(shape)})
    return tensors, meta


def main():
    tensors, metadata = {}, {"generator": "tests/golden/make_pool_fixtures.py"}
    out, meta = resize_case()
    tensors.update(out)
    metadata["resize_bilinear"] = meta
    out, meta = conv_rect_cases()
    tensors.update(out)
    metadata.update(meta)
    for case in CASES:
        out, meta = make_case(*case)
        tensors.update(out)
        metadata[case[0]] = meta
    out, meta = cross_entropy_case()
    tensors.update(out)
    metadata["cross_entropy"] = meta
    path = os.path.join(HERE, "pool_loss.safetensors")
    safetensors_io.save(path, tensors, metadata)
    print(f"wrote {path}: {len(CASES) + 5} cases, {len(tensors)} tensors, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
