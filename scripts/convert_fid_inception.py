#!/usr/bin/env python3
"""Converts pytorch-fid's Inception weights to safetensors for diffusion's FidInceptionV3 (model/inception.hpp).

    /usr/bin/python3 scripts/convert_fid_inception.py pt_inception-2015-12-05-6726825d.pth pt_inception.safetensors

The input is the state_dict pytorch-fid downloads (FID_WEIGHTS_URL in pytorch_fid/inception.py:
https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth,
ported by pytorch-fid from TensorFlow's inception-2015-12-05.tgz). Nothing is downloaded here: fetch the file
yourself (this project's build machines have no network). The output holds every tensor of the state_dict under
the same name as float32, except the BatchNorm counters (num_batches_tracked), plus metadata:
  "diffusion.inception"      "pytorch-fid FID Inception-v3 (pt_inception-2015-12-05)"
  "diffusion.inception.source_sha256"   SHA-256 of the .pth file
The script checks that every tensor FidInceptionV3 reads is present with the shape torchvision's Inception3 gives
it (num_classes=1008, aux_logits=False; pytorch-fid's fid_inception_v3()) and that no other tensor is (apart from
fc.weight, fc.bias), and refuses the file otherwise. Needs torch (Debian: python3-torch) and torchvision
(python3-torchvision) for the reference shapes. tests/golden/make_inception_fixtures.py runs it on a random-weight
state_dict to test it.
"""
import argparse
import hashlib
import os
import sys

import torch
import torchvision

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "golden"))
import safetensors_io  # noqa: E402

DESCRIPTION = "pytorch-fid FID Inception-v3 (pt_inception-2015-12-05)"


def expected_shapes():
    """Names and shapes of pytorch-fid's fid_inception_v3() state_dict (its FID blocks only change forward())."""
    net = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=1008)
    return {k: tuple(v.shape) for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}


def convert(src, dst):
    with open(src, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    state = torch.load(src, map_location="cpu")
    if not isinstance(state, dict):
        raise SystemExit(f"{src}: not a state_dict (got {type(state).__name__})")
    tensors = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    want = expected_shapes()
    missing = sorted(set(want) - set(tensors))
    extra = sorted(set(tensors) - set(want))
    if missing or extra:
        raise SystemExit(f"{src}: not pytorch-fid's Inception state_dict: missing {missing[:5]}, unexpected {extra[:5]}")
    for name, shape in want.items():
        if tuple(tensors[name].shape) != shape:
            raise SystemExit(f"{src}: {name} has shape {tuple(tensors[name].shape)}, expected {shape}")
    out = {k: v.detach().to(torch.float32).contiguous() for k, v in tensors.items()}
    safetensors_io.save(dst, out, {"diffusion.inception": DESCRIPTION, "diffusion.inception.source_sha256": digest})
    return len(out), digest


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("pth", help="pytorch-fid's pt_inception-2015-12-05-6726825d.pth")
    parser.add_argument("out", help="safetensors file to write")
    args = parser.parse_args(argv)
    n, digest = convert(args.pth, args.out)
    print(f"wrote {args.out}: {n} tensors from {args.pth} (sha256 {digest})")


if __name__ == "__main__":
    main()
