"""Writes tests/golden/io_python.safetensors: tensors of several dtypes written by PyTorch 1.13 for the C++ reader.

Values are either exact formulas the C++ test recomputes (f32, f64, i64) or float32 sources stored beside
PyTorch's own F16/BF16 conversions of them, so the test checks the reader's decoding and half.hpp's rounding
against PyTorch's. Run with Debian's /usr/bin/python3 from the repository root.
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_io import save  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    g = torch.Generator().manual_seed(1234)
    t = {}
    # Exact formulas, recomputed by the test.
    t["f32"] = (torch.arange(120, dtype=torch.float32) / 8 - 7).reshape(2, 3, 4, 5)  # k/8 - 7: exact
    t["f64"] = (torch.arange(24, dtype=torch.float64) / 3).reshape(4, 6)  # correctly rounded k/3
    t["i64"] = (torch.arange(12, dtype=torch.int64) * 1234567890123 - 5000000000000).reshape(3, 4)
    t["i64"][0, 0] = -(2**63)
    t["i64"][2, 3] = 2**63 - 1

    # Special values: ties, overflow to inf, subnormals of F16, float denormals, inf, nan.
    special = torch.tensor(
        [0.0, -0.0, 0.1, 1.0 / 3.0, 65504.0, 65519.0, 65520.0, 1e5, 6e-8, 2.9802322387695312e-08, 2.99e-8,
         1e-5, float("inf"), float("-inf"), float("nan"), 1e-40, -3.0517578125e-05, 1.00048828125, 1.000732421875,
         3.0e38, -2.5e-39],
        dtype=torch.float32)
    # Random magnitudes from 2^-30 to 2^20 so that every rounding regime is exercised.
    scale = torch.pow(2.0, torch.randint(-30, 21, (2000,), generator=g).to(torch.float32))
    rand = torch.randn(2000, generator=g, dtype=torch.float32) * scale
    source = torch.cat([special, rand])
    t["source"] = source
    t["source_f16"] = source.half()
    t["source_bf16"] = source.bfloat16()
    t["source_f16_bits"] = source.half().view(torch.int16).to(torch.int32) & 0xFFFF
    t["source_bf16_bits"] = source.bfloat16().view(torch.int16).to(torch.int32) & 0xFFFF

    # Decoding: selected 16-bit patterns (all F16 subnormals of both signs, then a stride through the rest),
    # viewed as F16 and BF16, with PyTorch's float32 value of each.
    patterns = torch.cat([torch.arange(0, 1024), torch.arange(0x8000, 0x8400), torch.arange(1024, 65536, 17)])
    as_i16 = patterns.to(torch.int32).to(torch.int16)  # wraps like a C cast
    t["patterns"] = patterns.to(torch.int32)
    t["patterns_f16"] = as_i16.view(torch.float16)
    t["patterns_f16_as_f32"] = as_i16.view(torch.float16).float()
    t["patterns_bf16"] = as_i16.view(torch.bfloat16)
    t["patterns_bf16_as_f32"] = as_i16.view(torch.bfloat16).float()

    metadata = {"format": "pt", "producer": "make_io_fixtures.py", "torch": torch.__version__, "note": "ünïcode ✓"}
    path = os.path.join(HERE, "io_python.safetensors")
    save(path, t, metadata)
    print(path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
