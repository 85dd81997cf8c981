#!/usr/bin/env python3
"""Fetches Google's Noto emoji (npm package emoji-datasource-google, MIT) and lays them out as an image folder with
one class folder per emoji category, for io::ImageFolder (labels from the first level of subfolders).

    scripts/fetch_emoji.py [--cache DIR] [--out DIR] [--version V] [--no-skin-tones] [--include-components]

  1. `npm pack emoji-datasource-google@V` into the cache folder (default ~/.cache/diffusion/emoji), once: the
     tarball (~74 MB for 16.0.0) is kept and reused;
  2. reads package/emoji.json and, from the tarball, the 64x64 RGBA PNGs under package/img/google/64/;
  3. writes OUT/<category>/<image>.png (default OUT = CACHE/images), <category> the emoji's `category` field in
     lower case with '&' -> 'and' and spaces -> '_' (e.g. smileys_and_emotion). Skin-tone variations
     (`skin_variations`, each its own image) go to their emoji's category; --no-skin-tones leaves them out. The
     "Component" category (5 images: skin-tone swatches and hair parts, not emoji) is left out unless
     --include-components. Only emoji with has_img_google are used.

The folder is written beside OUT and renamed into place at the end, so OUT is either complete or absent; an
existing OUT is replaced. Prints the number of images per category. Standard library only (and npm).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile

PACKAGE = "emoji-datasource-google"
DEFAULT_VERSION = "16.0.0"


def slug(category):
    return category.lower().replace("&", "and").replace(" ", "_")


def fetch(cache, version):
    """The package tarball in the cache folder, fetched with npm pack when absent."""
    os.makedirs(cache, exist_ok=True)
    tarball = os.path.join(cache, f"{PACKAGE}-{version}.tgz")
    if not os.path.exists(tarball):
        print(f"fetching {PACKAGE}@{version} with npm pack into {cache}", flush=True)
        subprocess.run(["npm", "pack", f"{PACKAGE}@{version}"], cwd=cache, check=True, stdout=subprocess.DEVNULL)
        if not os.path.exists(tarball):
            sys.exit(f"fetch_emoji: npm pack did not produce {tarball}")
    return tarball


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", default=os.path.expanduser("~/.cache/diffusion/emoji"))
    parser.add_argument("--out", default=None, help="output folder (default: CACHE/images)")
    parser.add_argument("--version", default=DEFAULT_VERSION)
    parser.add_argument("--no-skin-tones", action="store_true", help="leave out the skin-tone variations")
    parser.add_argument("--include-components", action="store_true", help="keep the 'Component' category")
    args = parser.parse_args()
    out = os.path.abspath(args.out or os.path.join(args.cache, "images"))

    tarball = fetch(args.cache, args.version)
    with tarfile.open(tarball, "r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
        emoji = json.load(tar.extractfile(members["package/emoji.json"]))
        wanted = {}  # image file name -> category folder
        for e in emoji:
            if e["category"] == "Component" and not args.include_components:
                continue
            variants = [e] + ([] if args.no_skin_tones else list((e.get("skin_variations") or {}).values()))
            for v in variants:
                if v.get("has_img_google"):
                    wanted[v["image"]] = slug(e["category"])
        tmp = out + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        counts, missing = {}, []
        for image, category in sorted(wanted.items()):
            member = members.get(f"package/img/google/64/{image}")
            if member is None:
                missing.append(image)
                continue
            os.makedirs(os.path.join(tmp, category), exist_ok=True)
            with open(os.path.join(tmp, category, image), "wb") as f:
                f.write(tar.extractfile(member).read())
            counts[category] = counts.get(category, 0) + 1
    if missing:
        print(f"fetch_emoji: {len(missing)} images listed in emoji.json are not in the package, e.g. {missing[:3]}")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)
    for category in sorted(counts):
        print(f"{counts[category]:6d}  {category}")
    print(f"{sum(counts.values()):6d}  images in {len(counts)} categories under {out}")


if __name__ == "__main__":
    main()
