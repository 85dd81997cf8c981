"""Writes tests/golden/inception.safetensors: pytorch-fid's Inception-v3 (FID variant) on torchvision's
inception_v3 with generated weights, stage by stage and end to end, for tests/metrics/test_inception.cpp.
Also tests scripts/convert_fid_inception.py on those weights.

Run: /usr/bin/python3 tests/golden/make_inception_fixtures.py   (Debian's torch 1.13, torchvision 0.14; ~1 min)

The network: torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=1008)
with Mixed_5b..5d, Mixed_6b..6e, Mixed_7b, Mixed_7c replaced by the FID blocks of pytorch-fid
(src/pytorch_fid/inception.py, fid_inception_v3): FIDInceptionA/C/E_1 average-pool with count_include_pad=False,
FIDInceptionE_2 max-pools (3, 1, 1). They are re-typed below (fid_* forward functions on torchvision's block modules)
and checked to differ from torchvision's own blocks on the same weights. The forward of pytorch-fid's InceptionV3
(block index 3): F.interpolate(x, (299, 299), bilinear, align_corners=False), 2x - 1, the stages, adaptive average
pool to 1x1.

Why generated weights instead of stored ones: the network has 23.8 M parameters (95 MB in float32), far beyond a
fixture. Every weight and every input is instead a pure function of its name and index that the C++ test recomputes
bit for bit (tests/metrics/test_inception.cpp, inception_weight):
  key = FNV-1a-64(name bytes);  z_i = splitmix64(key + i)  (uint64 wrap-around);  v_i = ((z_i >> 40) - 2^23) / 2^23
  v in [-1, 1) is exact in float32; each value is then ONE float32 operation (no rounding-order ambiguity, FMA-safe):
    *.conv.weight        v * float32(sqrt(6 / fan_in))     (He-uniform: activations keep their scale)
    *.bn.weight          1 + v / 4
    *.bn.bias            v / 8
    *.bn.running_mean    v / 8
    *.bn.running_var     1 + v / 2
    fc.*                 v / 64
    input.<stage>        v                                 (a stage's test input)
    input.image          0.5 + v / 2                       (the end-to-end image, in [0, 1))
As in the other fixtures, the network runs in float64 on these float32 values and outputs are rounded once to float32.

Layout (F32):
  stage.<name>.y       output of stage <name> (Conv2d_1a_3x3 ... Mixed_7c, maxpool1, maxpool2) on input.<name>;
                       metadata stage.<name> = JSON {"input_shape": [N, C, H, W]}
  e2e.features         (1, 2048) pool3 features of input.image, shape in metadata e2e = {"input_shape": [...]}
  e2e.mean.<stage>     (C,) channel means of the activations after maxpool1, maxpool2, Mixed_5d, Mixed_6e, Mixed_7c
                       in the end-to-end run (to locate a disagreement)
"""
import json
import math
import os
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts"))
import safetensors_io  # noqa: E402
import convert_fid_inception  # noqa: E402

U64 = np.uint64


def fnv1a64(data: bytes) -> int:
    h = 1469598103934665603
    for b in data:
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


def splitmix64(z):
    with np.errstate(over="ignore"):
        z = z + U64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> U64(30))) * U64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> U64(27))) * U64(0x94D049BB133111EB)
        return z ^ (z >> U64(31))


def unit(name, n):
    """v_i in [-1, 1), float32, for i < n."""
    with np.errstate(over="ignore"):
        z = splitmix64(U64(fnv1a64(name.encode())) + np.arange(n, dtype=np.uint64))
    u24 = (z >> U64(40)).astype(np.int64)
    return (u24 - (1 << 23)).astype(np.float32) * np.float32(2.0 ** -23)


def weight(name, shape):
    n = int(np.prod(shape))
    v = unit(name, n)
    if name.endswith(".conv.weight"):
        fan_in = int(np.prod(shape[1:]))
        out = v * np.float32(math.sqrt(6.0 / fan_in))
    elif name.endswith(".bn.weight"):
        out = np.float32(1.0) + v * np.float32(0.25)
    elif name.endswith(".bn.bias") or name.endswith(".bn.running_mean"):
        out = v * np.float32(0.125)
    elif name.endswith(".bn.running_var"):
        out = np.float32(1.0) + v * np.float32(0.5)
    elif name.startswith("fc."):
        out = v * np.float32(1.0 / 64.0)
    else:
        raise ValueError(name)
    assert out.dtype == np.float32
    return torch.from_numpy(out.reshape(shape))


# --- pytorch-fid's FID blocks, as forward functions on torchvision's block modules --------------------------------

def fid_a(m, x):  # FIDInceptionA
    b1 = m.branch1x1(x)
    b5 = m.branch5x5_2(m.branch5x5_1(x))
    b3 = m.branch3x3dbl_3(m.branch3x3dbl_2(m.branch3x3dbl_1(x)))
    bp = m.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False))
    return torch.cat([b1, b5, b3, bp], 1)


def fid_c(m, x):  # FIDInceptionC
    b1 = m.branch1x1(x)
    b7 = m.branch7x7_3(m.branch7x7_2(m.branch7x7_1(x)))
    d = m.branch7x7dbl_1(x)
    for layer in (m.branch7x7dbl_2, m.branch7x7dbl_3, m.branch7x7dbl_4, m.branch7x7dbl_5):
        d = layer(d)
    bp = m.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False))
    return torch.cat([b1, b7, d, bp], 1)


def fid_e(m, x, max_pool):  # FIDInceptionE_1 (avg, no pad count) / FIDInceptionE_2 (max)
    b1 = m.branch1x1(x)
    b3 = m.branch3x3_1(x)
    b3 = torch.cat([m.branch3x3_2a(b3), m.branch3x3_2b(b3)], 1)
    d = m.branch3x3dbl_2(m.branch3x3dbl_1(x))
    d = torch.cat([m.branch3x3dbl_3a(d), m.branch3x3dbl_3b(d)], 1)
    if max_pool:
        p = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
    else:
        p = F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)
    return torch.cat([b1, b3, d, m.branch_pool(p)], 1)


STAGES = ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
          "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e",
          "Mixed_7a", "Mixed_7b", "Mixed_7c"]
FID_KIND = {"Mixed_5b": "a", "Mixed_5c": "a", "Mixed_5d": "a", "Mixed_6b": "c", "Mixed_6c": "c", "Mixed_6d": "c",
            "Mixed_6e": "c", "Mixed_7b": "e1", "Mixed_7c": "e2"}

# Stage test inputs (N, C, H, W): small spatial sizes keep the fixture small; each still reaches every kernel tap
# that matters (a 7-tap kernel on width 3 uses 5 taps, a 3-tap one on width 2 uses all 3) and the padding.
STAGE_INPUTS = {
    "Conv2d_1a_3x3": (2, 3, 9, 9), "Conv2d_2a_3x3": (1, 32, 6, 6), "Conv2d_2b_3x3": (1, 32, 4, 4),
    "maxpool1": (1, 64, 5, 5), "Conv2d_3b_1x1": (1, 64, 3, 3), "Conv2d_4a_3x3": (1, 80, 5, 5),
    "maxpool2": (1, 192, 5, 5), "Mixed_5b": (2, 192, 3, 3), "Mixed_5c": (1, 256, 3, 3), "Mixed_5d": (1, 288, 3, 3),
    "Mixed_6a": (1, 288, 5, 5), "Mixed_6b": (1, 768, 3, 3), "Mixed_6c": (1, 768, 2, 2), "Mixed_6d": (1, 768, 2, 2),
    "Mixed_6e": (1, 768, 2, 2), "Mixed_7a": (1, 768, 3, 3), "Mixed_7b": (1, 1280, 2, 2), "Mixed_7c": (1, 2048, 2, 2),
}
E2E_INPUT = (1, 3, 24, 32)  # not square: the resize's two axes differ
E2E_MEANS = ["maxpool1", "maxpool2", "Mixed_5d", "Mixed_6e", "Mixed_7c"]


def build():
    net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=1008)
    state = net.state_dict()
    for name in list(state):
        if not name.endswith("num_batches_tracked"):
            state[name] = weight(name, tuple(state[name].shape))
    net.load_state_dict(state, strict=True)
    return net.eval()


def stage_forward(net, name, x):
    if name == "maxpool1" or name == "maxpool2":
        return F.max_pool2d(x, kernel_size=3, stride=2)
    m = getattr(net, name)
    kind = FID_KIND.get(name)
    if kind == "a":
        return fid_a(m, x)
    if kind == "c":
        return fid_c(m, x)
    if kind == "e1":
        return fid_e(m, x, False)
    if kind == "e2":
        return fid_e(m, x, True)
    return m(x)  # BasicConv2d, InceptionB (Mixed_6a), InceptionD (Mixed_7a): torchvision's own


def input_tensor(name, shape):
    return torch.from_numpy(unit(name, int(np.prod(shape))).reshape(shape))


def check_converter(net, tmp):
    pth = os.path.join(tmp, "random_inception.pth")
    out = os.path.join(tmp, "random_inception.safetensors")
    state = net.float().state_dict()
    torch.save(state, pth)
    convert_fid_inception.main([pth, out])
    converted, meta = safetensors_io.load(out)
    want = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    assert set(converted) == set(want), sorted(set(converted) ^ set(want))[:5]
    for k, v in want.items():
        assert converted[k].dtype == torch.float32 and torch.equal(converted[k], v), k
    assert meta["diffusion.inception"] == convert_fid_inception.DESCRIPTION
    print(f"convert_fid_inception.py: {len(converted)} tensors round-trip exactly")


def main():
    torch.set_grad_enabled(False)
    net = build()
    with tempfile.TemporaryDirectory() as tmp:
        check_converter(net, tmp)
    net = net.double()
    out, meta = {}, {"generator": "tests/golden/make_inception_fixtures.py"}
    for name in STAGES:
        shape = STAGE_INPUTS[name]
        x = input_tensor("input." + name, shape).double()
        y = stage_forward(net, name, x)
        if name in FID_KIND:  # the FID patch must matter: torchvision's block gives something else
            assert not torch.allclose(getattr(net, name)(x), y, rtol=1e-3, atol=1e-3), name
        out[f"stage.{name}.y"] = y.float()
        meta[f"stage.{name}"] = json.dumps({"input_shape": list(shape)})
        print(f"stage {name}: {tuple(shape)} -> {tuple(y.shape)}, max |y| {y.abs().max().item():.4g}")

    image = torch.from_numpy(np.float32(0.5) + unit("input.image", int(np.prod(E2E_INPUT))).reshape(E2E_INPUT)
                             * np.float32(0.5)).double()
    x = F.interpolate(image, size=(299, 299), mode="bilinear", align_corners=False)
    x = 2 * x - 1
    for name in STAGES:
        x = stage_forward(net, name, x)
        if name in E2E_MEANS:
            out[f"e2e.mean.{name}"] = x.mean(dim=(0, 2, 3)).float()
    features = F.adaptive_avg_pool2d(x, (1, 1)).flatten(1)
    out["e2e.features"] = features.float()
    meta["e2e"] = json.dumps({"input_shape": list(E2E_INPUT)})
    print(f"end to end: {tuple(E2E_INPUT)} -> {tuple(features.shape)}, mean {features.mean().item():.4g}, "
          f"max {features.max().item():.4g}")
    path = os.path.join(HERE, "inception.safetensors")
    safetensors_io.save(path, out, meta)
    print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
