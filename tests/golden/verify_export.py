"""Checks that a safetensors U-Net state_dict (as written by the C++ library) loads into the PyTorch reference.

Usage: /usr/bin/python3 tests/golden/verify_export.py PATH [--io IO_FIXTURE]

  PATH          safetensors file with the Unet's state_dict and metadata "diffusion.unet" (JSON of the Unet kwargs)
  --io FIXTURE  a <cfg>.io.safetensors fixture: runs the float32 reference forward on its x/t and requires
                max|y_ref - y| <= 1e-4 * max|y|

Builds reference.Unet(**json.loads(metadata["diffusion.unet"])) and load_state_dict(..., strict=True) (names and
shapes must match exactly; every tensor must be floating point). Prints one line; exit status 0 on success, 1 on
any failure.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import reference as R  # noqa: E402
import safetensors_io  # noqa: E402

UNET_KEYS = ("dim", "init_dim", "out_dim", "dim_mults", "channels", "with_time_emb", "resnet_block_groups",
             "use_convnext", "convnext_mult", "num_classes")
REL_TOL = 1e-4


def verify(path, io_path=None):
    """Returns the one-line result; raises on failure."""
    tensors, metadata = safetensors_io.load(path)
    if "diffusion.unet" not in metadata:
        raise ValueError(f"{path}: metadata has no 'diffusion.unet' entry (keys: {sorted(metadata)})")
    config = json.loads(metadata["diffusion.unet"])
    unknown = sorted(set(config) - set(UNET_KEYS))
    if unknown:
        raise ValueError(f"{path}: metadata 'diffusion.unet' has unknown keys {unknown}; expected {list(UNET_KEYS)}")
    if "dim_mults" in config:
        config["dim_mults"] = tuple(config["dim_mults"])
    non_float = sorted(k for k, v in tensors.items() if not v.is_floating_point())
    if non_float:
        raise ValueError(f"{path}: non floating-point tensors {non_float}")
    model = R.Unet(**config)
    # strict: every missing/unexpected name or shape mismatch raises RuntimeError listing them
    model.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)
    n_params = sum(v.numel() for v in tensors.values())
    msg = f"OK {path}: {len(tensors)} tensors, {n_params} parameters load strictly into Unet({config})"
    if io_path is None:
        return msg
    io, _ = safetensors_io.load(io_path)
    model.eval()
    with torch.no_grad():
        classes = io["classes"].long() if "classes" in io else None  # a conditional network's ids
        y = model(io["x"].float(), io["t"].long(), classes)
    ref = io["y"].float()
    if y.shape != ref.shape:
        raise ValueError(f"{io_path}: output shape {tuple(y.shape)} != fixture y {tuple(ref.shape)}")
    err = (y - ref).abs()
    worst = int(err.argmax())
    max_err = float(err.max())
    bound = REL_TOL * float(ref.abs().max())
    where = tuple(int(i) for i in np.unravel_index(worst, tuple(ref.shape)))
    detail = f"max|y - y_fixture| = {max_err:.3e} at {where} (bound {bound:.3e} = {REL_TOL:g} * max|y|)"
    if not max_err <= bound:
        raise ValueError(f"{io_path}: forward mismatch: {detail}")
    return msg + f"; forward on {os.path.basename(io_path)}: {detail}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path")
    parser.add_argument("--io", dest="io_path", default=None)
    args = parser.parse_args(argv)
    try:
        print(verify(args.path, args.io_path))
    except Exception as e:  # one line, non-zero exit, whatever failed
        print(f"FAIL {args.path}: {type(e).__name__}: {' '.join(str(e).split())}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
