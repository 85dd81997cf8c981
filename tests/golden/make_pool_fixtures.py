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


def main():
    tensors, metadata = {}, {"generator": "tests/golden/make_pool_fixtures.py"}
    for case in CASES:
        out, meta = make_case(*case)
        tensors.update(out)
        metadata[case[0]] = meta
    out, meta = cross_entropy_case()
    tensors.update(out)
    metadata["cross_entropy"] = meta
    path = os.path.join(HERE, "pool_loss.safetensors")
    safetensors_io.save(path, tensors, metadata)
    print(f"wrote {path}: {len(CASES) + 1} cases, {len(tensors)} tensors, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
