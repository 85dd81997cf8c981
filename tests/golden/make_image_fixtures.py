"""Writes the image-folder test data and its Pillow reference (tests/io/test_image_folder.cpp).

  tests/golden/image_folder/      a labelled folder: every format and pixel layout the data set reads, odd sizes,
                                  nested subfolders, a non-image file; images a few hundred bytes to ~3 KB each
  tests/golden/image_folder_bad/  bad input: a corrupt PNG, a text file named .jpg, an image smaller than the
                                  crop, a class folder without images, a non-image file
  tests/golden/image_folder.safetensors   the reference, per image <p> (path relative to image_folder/):
      <p>|rgb       (h, w, 3) U8   the file decoded by Pillow, alpha composited over BACKGROUND (Pillow's paste
                                   with the alpha as mask), gray repeated to RGB
      <p>|gray      (h, w)    U8   Pillow's convert("L") of <p>|rgb (Rec. 601 luma, its fixed point)
      <p>|box       (h', w', 3) U8 Pillow's resize((w', h'), Image.BOX) of <p>|rgb, (w', h') the cover size of the
                                   crop (the C++ cover_size; = <p>|rgb when no resize is needed)
      <p>|area      (h', w', 3) U8 exact area-weighted average of <p>|rgb in float64 numpy, rounded half up
                                   (shrinking only)
      <p>|bilinear  (h', w', 3) U8 Pillow's resize(..., Image.BILINEAR) (enlarging only: upscale.png)
      <p>|crop      (H, W, 3) U8   Pillow's crop of the centre H x W window of <p>|box
  metadata "crop": {"height": H, "width": W}, "background": [r, g, b], "pillow": version.

Pillow (python3-pil 9.4) is the independent reference for decoding, compositing, gray conversion and cropping; its
BOX filter weighs whole input pixels by whether their centre falls in the output pixel, while stb_image_resize's
box filter weighs them by the exact area they cover, so for non-integer ratios the resize is also compared with
the exact area average computed here (numpy, float64). The script checks its own assumptions (16-bit PNGs read as
their high byte, the compositing and luma formulas of image_decode.hpp) against Pillow and fails if they do not
hold. Deterministic: rerunning rewrites byte-identical files. Run from the repository root with Debian's
/usr/bin/python3 (needs python3-pil, python3-numpy, python3-torch for the safetensors writer).
"""
import json
import os
import shutil
import struct
import sys
import zlib

import numpy as np
import PIL
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from safetensors_io import save  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
GOOD = os.path.join(HERE, "image_folder")
BAD = os.path.join(HERE, "image_folder_bad")
H, W = 16, 12  # the crop (height x width), not square on purpose
BACKGROUND = (40, 200, 90)  # not gray: compositing must use each channel of it


def smooth(rng, h, w, c):
    """A smooth random image (low-frequency pattern plus a little noise): realistic for JPEG and resizing."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.zeros((h, w, c))
    for k in range(c):
        a, b, p, q = rng.uniform(0.05, 0.4, 4)
        out[:, :, k] = 127.5 + 90 * np.sin(a * x + p * 7) * np.cos(b * y + q * 7) + rng.normal(0, 12, (h, w))
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png16(path, pixels16):
    """A 16-bit PNG (gray (h, w) or RGB (h, w, 3)), written by hand: Pillow cannot write 16-bit RGB."""
    h, w = pixels16.shape[:2]
    color = 0 if pixels16.ndim == 2 else 2
    raw = b"".join(b"\x00" + pixels16[r].astype(">u2").tobytes() for r in range(h))
    data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color, 0, 0, 0))
    data += png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b"")
    with open(path, "wb") as f:
        f.write(data)


def make_inputs():
    """The input files, rewritten from scratch."""
    rng = np.random.RandomState(20240612)
    for d in (GOOD, BAD):
        shutil.rmtree(d, ignore_errors=True)
    mk = lambda *p: os.makedirs(os.path.join(*p), exist_ok=True)  # noqa: E731
    for c in ("animals/nested/deep", "shapes", "symbols"):
        mk(GOOD, c)
    g = lambda *p: os.path.join(GOOD, *p)  # noqa: E731

    Image.fromarray(smooth(rng, 23, 37, 3)).save(g("animals", "cat_rgb.png"))               # odd size, RGB 8-bit
    gray16 = rng.randint(0, 65536, (30, 20)).astype(np.uint16)
    write_png16(g("animals", "dog_gray16.png"), gray16)
    assert np.array_equal(np.array(Image.open(g("animals", "dog_gray16.png"))), gray16)  # Pillow keeps 16 bits
    Image.fromarray(smooth(rng, 32, 40, 3)).save(g("animals", "nested", "deep", "owl_420.jpg"), quality=90,
                                                 subsampling=2)                          # JPEG 4:2:0, nested
    Image.fromarray(smooth(rng, 21, 27, 3)).save(g("animals", "fox_444.jpg"), quality=95, subsampling=0)
    gray_jpeg = smooth(rng, 19, 17, 1)[:, :, 0]
    Image.fromarray(gray_jpeg, "L").save(g("animals", "nested", "moth_gray.jpg"), quality=90)
    rgba = np.dstack([smooth(rng, 33, 33, 3), rng.randint(0, 256, (33, 33)).astype(np.uint8)])
    rgba[:4, :4, 3] = 0  # fully transparent and fully opaque corners
    rgba[-4:, -4:, 3] = 255
    Image.fromarray(rgba, "RGBA").save(g("shapes", "circle_rgba.png"))
    la = np.dstack([smooth(rng, 40, 24, 1)[:, :, 0], rng.randint(0, 256, (40, 24)).astype(np.uint8)])
    Image.fromarray(la, "LA").save(g("shapes", "square_la.png"))
    Image.fromarray(smooth(rng, 18, 30, 3)).save(g("shapes", "tri.bmp"))
    Image.fromarray(smooth(rng, 27, 19, 3)).save(g("shapes", "star.tga"))
    Image.fromarray(smooth(rng, 20, 26, 3)).save(g("shapes", "star_rle.TGA"), compression="tga_rle")  # RLE, caps
    rgb16 = rng.randint(0, 65536, (21, 21, 3)).astype(np.uint16)
    write_png16(g("shapes", "rgb16.png"), rgb16)
    # Pillow reads 16-bit RGB as 8-bit RGB: the high bytes, as stb does (checked, not assumed).
    assert np.array_equal(np.array(Image.open(g("shapes", "rgb16.png"))), (rgb16 >> 8).astype(np.uint8))
    Image.fromarray(smooth(rng, 16, 12, 1)[:, :, 0], "L").save(g("shapes", "gray8_exact.png"))  # crop size: no resize
    # Palette PNG with a transparent entry (stb: RGBA from PLTE + tRNS).
    pal = Image.fromarray(rng.randint(0, 6, (17, 29)).astype(np.uint8), "P")
    pal.putpalette([int(v) for v in rng.randint(0, 256, 18)] + [0] * (768 - 18))
    pal.info["transparency"] = 2
    pal.save(g("symbols", "palette_trns.png"), transparency=2)
    # GIF: two frames; the first one (with a transparent index) is what the data set reads.
    f0 = Image.fromarray(rng.randint(0, 8, (26, 22)).astype(np.uint8), "P")
    palette = [int(v) for v in rng.randint(0, 256, 24)] + [0] * (768 - 24)
    f0.putpalette(palette)
    f1 = Image.fromarray(rng.randint(0, 8, (26, 22)).astype(np.uint8), "P")
    f1.putpalette(palette)
    f0.save(g("symbols", "anim.gif"), save_all=True, append_images=[f1], transparency=3, duration=100, loop=0,
            optimize=False)
    Image.fromarray(smooth(rng, 32, 24, 3)).save(g("symbols", "twice.png"))    # 2x the crop: an integer ratio
    Image.fromarray(smooth(rng, 48, 36, 3)).save(g("symbols", "thrice.png"))   # 3x
    Image.fromarray(smooth(rng, 10, 7, 3)).save(g("symbols", "upscale.png"))   # smaller than the crop
    with open(g("symbols", "README.txt"), "w") as f:  # not an image: ignored
        f.write("not an image\n")

    mk(BAD, "good")
    mk(BAD, "empty_class")
    b = lambda *p: os.path.join(BAD, *p)  # noqa: E731
    Image.fromarray(smooth(rng, 20, 20, 3)).save(b("good", "ok.png"))
    ok = open(b("good", "ok.png"), "rb").read()
    # Corrupt: the IDAT payload scrambled (header intact, so stbi_info accepts it and decoding fails).
    i = ok.index(b"IDAT") + 4
    corrupt = bytearray(ok)
    for k in range(i + 2, min(i + 40, len(ok) - 16)):
        corrupt[k] ^= 0x5A
    with open(b("good", "corrupt.png"), "wb") as f:
        f.write(bytes(corrupt))
    with open(b("good", "fake.jpg"), "w") as f:  # an image extension, not an image
        f.write("this is text, not a JPEG\n")
    Image.fromarray(smooth(rng, 5, 9, 3)).save(b("good", "tiny.png"))  # smaller than the crop
    with open(b("empty_class", "notes.txt"), "w") as f:
        f.write("no images in this class folder\n")


def cover_size(w, h):
    """The C++ cover_size: the smallest size at the image's aspect ratio covering W x H (floor)."""
    if W * h >= H * w:
        return W, h * W // w
    return w * H // h, H


def pil_rgb(path):
    """Pillow's decoding, alpha composited over BACKGROUND: (h, w, 3) uint8, plus the gray reading."""
    im = Image.open(path)
    im.seek(0)
    if im.mode in ("I;16", "I;16B", "I"):
        raw = np.array(im).astype(np.int64)
        # Our assumption about 16-bit files: the high byte (stb's reduction). Pillow keeps 16 bits in mode I;16.
        im = Image.fromarray((raw >> 8).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("LA", "RGBA", "PA"):
        rgba = im.convert("RGBA")
        out = Image.new("RGB", im.size, BACKGROUND)
        out.paste(rgba.convert("RGB"), (0, 0), rgba.getchannel("A"))
        # The formula of image_decode.hpp, checked against Pillow's paste.
        a = np.array(rgba).astype(np.int64)
        formula = (a[:, :, :3] * a[:, :, 3:] + np.array(BACKGROUND) * (255 - a[:, :, 3:]) + 127) // 255
        assert np.array_equal(formula, np.array(out)), path
        im = out
    rgb = im.convert("RGB")
    arr = np.array(rgb)
    gray = np.array(rgb.convert("L"))
    r, g, b = (arr[:, :, k].astype(np.int64) for k in range(3))
    assert np.array_equal((r * 19595 + g * 38470 + b * 7471 + 32768) >> 16, gray), path  # the luma formula
    if im.mode == "L":
        assert np.array_equal(np.array(im), gray), path  # gray -> RGB -> gray is exact
    return arr, gray


def area_resize(img, nw, nh):
    """Exact area-weighted average (float64), each output pixel the mean of the input area it covers."""
    def weights(n_in, n_out):
        s = n_in / n_out
        m = np.zeros((n_out, n_in))
        for o in range(n_out):
            lo, hi = o * s, (o + 1) * s
            for i in range(int(np.floor(lo)), min(n_in, int(np.ceil(hi)))):
                m[o, i] = (min(hi, i + 1) - max(lo, i)) / s
        return m
    wy, wx = weights(img.shape[0], nh), weights(img.shape[1], nw)
    out = np.einsum("oh,hwc,pw->opc", wy, img.astype(np.float64), wx)
    return np.floor(out + 0.5).clip(0, 255).astype(np.uint8)


def main():
    make_inputs()
    tensors = {}
    files = []
    for dirpath, dirnames, filenames in os.walk(GOOD):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith((".png", ".jpg", ".jpeg", ".bmp", ".tga", ".gif")):
                files.append(os.path.relpath(os.path.join(dirpath, name), GOOD).replace(os.sep, "/"))
    for rel in sorted(files):
        rgb, gray = pil_rgb(os.path.join(GOOD, rel))
        h, w = rgb.shape[:2]
        nw, nh = cover_size(w, h)
        tensors[rel + "|rgb"] = rgb
        tensors[rel + "|gray"] = gray
        pil = Image.fromarray(rgb)
        box = np.array(pil.resize((nw, nh), Image.BOX)) if (nw, nh) != (w, h) else rgb
        tensors[rel + "|box"] = box
        if nw < w:
            tensors[rel + "|area"] = area_resize(rgb, nw, nh)
        if nw > w:
            tensors[rel + "|bilinear"] = np.array(pil.resize((nw, nh), Image.BILINEAR))
        top, left = (nh - H) // 2, (nw - W) // 2
        tensors[rel + "|crop"] = np.array(Image.fromarray(box).crop((left, top, left + W, top + H)))
    meta = {"crop": json.dumps({"height": H, "width": W}), "background": json.dumps(list(BACKGROUND)),
            "pillow": PIL.__version__, "files": json.dumps(sorted(files))}
    save(os.path.join(HERE, "image_folder.safetensors"),
         {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()}, meta)
    total = sum(os.path.getsize(os.path.join(d, f)) for base in (GOOD, BAD) for d, _, fs in os.walk(base) for f in fs)
    print(f"{len(files)} images, input files {total} bytes, fixture "
          f"{os.path.getsize(os.path.join(HERE, 'image_folder.safetensors'))} bytes")


if __name__ == "__main__":
    main()
