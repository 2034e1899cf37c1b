"""An isolated environment holding sentence-transformers' OpenVINO/ONNX extras, for the peer benchmark.

sentence-transformers' export helpers need optimum-intel and optimum-onnx, whose pins conflict
with the project's (they hold transformers below 5 and huggingface-hub below 1.0, which the
``datasets`` package, also needed by the static int8 export, does not respect on its own). So the
peer runs in its own virtual environment, created here once and reused; the project's own
environment is never touched.

    python benchmarks/peer_env.py [PATH]      # create (or check) it and print its Python
"""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from pathlib import Path

DEFAULT = Path.home() / ".cache" / "vecdoctor" / "peer-env"
# torch first and pinned (the CPU build); the rest in one resolver run with the hub client held
# below 1.0, which transformers 4.x requires and a bare `pip install datasets` would break.
REQUIREMENTS = [
    ["torch==2.13.0"],
    ["sentence-transformers[openvino,onnx]==5.7.0", "datasets", "huggingface-hub>=0.34,<1.0", "numpy"],
]


def ensure(path: Path = DEFAULT) -> Path:
    """The peer environment's Python, creating the environment when it is missing or stale."""
    python = path / "bin" / "python"
    stamp = path / "vecdoctor-peer.json"
    if python.exists() and stamp.exists() and json.loads(stamp.read_text()) == REQUIREMENTS:
        return python
    print(f"creating the peer environment in {path} (a few minutes, once)", file=sys.stderr, flush=True)
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    for group in REQUIREMENTS:
        subprocess.run([str(python), "-m", "pip", "install", "-q", *group], check=True)
    subprocess.run([str(python), "-m", "pip", "check"], check=True)
    stamp.write_text(json.dumps(REQUIREMENTS))
    return python


if __name__ == "__main__":
    print(ensure(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT))
