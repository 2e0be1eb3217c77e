"""Make (or remake) the golden fixtures: ``python -m tests.zfturbo_golden.make --repo PATH
[NAME ...]`` from the repository root, PATH a checkout of ZFTurbo's
Music-Source-Separation-Training at ``common.UPSTREAM_COMMIT``, in a venv where its model
code imports (torch, einops, omegaconf, ml_collections, demucs 4.1.0, rotary_embedding_torch;
torchaudio and pytorch_lightning for BandIt: the fixtures were made with torch 2.9.1 and
torchaudio 2.9.1, CPU).

Each fixture's script is a module of this package with ``FIXTURES``, a mapping of fixture
name to ``make(folder: Path) -> None``.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from pathlib import Path

from . import common


def fixtures() -> dict:
    found = {}
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name in ("common", "make"):
            continue
        module = importlib.import_module(f"{__package__}.{info.name}")
        found.update(getattr(module, "FIXTURES", {}))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", required=True, type=Path)
    parser.add_argument("names", nargs="*")
    args = parser.parse_args()
    common.use_checkout(args.repo)
    import torch

    torch.set_num_threads(2)
    known = fixtures()
    for name in args.names or sorted(known):
        if name not in known:
            raise SystemExit(f"unknown fixture {name!r}; known: {', '.join(sorted(known))}")
        folder = common.DATA / name
        folder.mkdir(parents=True, exist_ok=True)
        known[name](folder)
        size = sum(p.stat().st_size for p in folder.iterdir())
        print(f"{name}: {size / 1e6:.2f} MB in {folder}")


if __name__ == "__main__":
    main()
