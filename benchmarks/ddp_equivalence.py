"""DDP equivalence: 2 processes x per-device batch 8 against 1 process x batch 16, same seed, data and steps.

Both runs see the same global batch of 16 pairs a step (binary cross-entropy, so a step is a fixed number of pairs;
with LambdaLoss a step takes whole queries per device, rounded, and the two would not match). The data is the issue's:
Cranfield split by ``finerank data split``, training pairs with BM25 negatives from ``finerank data mine``, the
validation queries reranked over BM25's top 30 (``--val-corpus cranfield``). A third run, 1 x 16 with another seed,
measures how far two equally valid runs drift apart anyway: the yardstick for the DDP difference.

Why not bit-identical: each rank draws its own dropout masks (every rank is seeded alike, so the two halves of a
global batch get the masks one process would draw for a batch of 8, not those of the single process's batch of 16);
each rank pads its 8 pairs to its own longest, and the two gradients are averaged by an all-reduce, so float sums run
in another order. The data is the same: each step, rank 0 takes the first 8 and rank 1 the last 8 of the 16 pairs
the single process takes (checked: same seed, same sampler order).

    python benchmarks/ddp_equivalence.py [--model minilm-l6] [--max-steps 60] [--eval-steps 20] [--out FILE]

Runs on CPUs (gloo), one thread a process; takes minutes with minilm-l6 on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sh(cmd: list[str], env: dict) -> None:
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stderr[-4000:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="minilm-l6")
    ap.add_argument("--max-steps", type=int, default=60)
    ap.add_argument("--eval-steps", type=int, default=20)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--other-seed", type=int, default=7, help="seed of the yardstick run (1 x 16)")
    ap.add_argument("--work", help="folder for data and runs (default: a temporary one)")
    ap.add_argument("--out", help="also write the numbers to this JSON file")
    a = ap.parse_args()

    work = Path(a.work or tempfile.mkdtemp(prefix="ddp-eq-"))
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"), "TOKENIZERS_PARALLELISM": "false"}
    fr = [sys.executable, "-m", "finerank"]
    data = work / "data"
    if not (data / "train-mined.jsonl").exists():
        _sh([*fr, "data", "split", "cranfield", "--out", str(data)], env)
        _sh([*fr, "data", "mine", "cranfield", "--queries", str(data / "train.jsonl"), "--out",
             str(data / "train-mined.jsonl")], env)

    def train_args(out: Path, batch: int, seed: int) -> list[str]:
        return ["-m", "finerank", "train", "--model", a.model, "--train", str(data / "train-mined.jsonl"),
                "--val", str(data / "val.jsonl"), "--val-corpus", "cranfield", "--out", str(out),
                "--loss", "bce", "--batch-size", str(batch), "--max-steps", str(a.max_steps),
                "--eval-steps", str(a.eval_steps), "--max-length", str(a.max_length), "--seed", str(seed),
                "--patience", "0", "--fusion", "off"]

    runs = {
        "1x16": [sys.executable, *train_args(work / "single", 16, a.seed)],
        "2x8": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
                "--master_port", str(_free_port()), *train_args(work / "ddp", 8, a.seed)],
        f"1x16 seed {a.other_seed}": [sys.executable, *train_args(work / "other-seed", 16, a.other_seed)],
    }
    history: dict[str, dict[int, float]] = {}
    seconds: dict[str, float] = {}
    for name, cmd in runs.items():
        t = time.time()
        _sh(cmd, {**env, "OMP_NUM_THREADS": "1"})  # one thread a process: equal arithmetic, no fight over cores
        seconds[name] = round(time.time() - t, 1)
        record = json.loads((Path(cmd[cmd.index("--out") + 1]) / "finerank-run.json").read_text())
        history[name] = {h["step"]: h["nDCG@10"] for h in record["eval_history"]}
        history[name][0] = record["base"]["nDCG@10"]
        print(f"{name}: world_size {record['world_size']}, per-device batch {record['per_device_batch']}, "
              f"global batch {record['global_batch']}, {seconds[name]:.0f}s", flush=True)

    names = list(runs)
    steps = sorted(history[names[0]])
    print(f"\nvalidation nDCG@10 ({a.model}, BCE, seed {a.seed}, {a.max_steps} steps, Cranfield BM25 top 30)")
    print(f"{'step':>6} " + " ".join(f"{n:>16}" for n in names) + f" {'|2x8 - 1x16|':>14} {'|seed diff|':>12}")
    ddp_diff, seed_diff = [], []
    for s in steps:
        v = [history[n].get(s) for n in names]
        d, o = abs(v[1] - v[0]), abs(v[2] - v[0])
        if s:
            ddp_diff.append(d)
            seed_diff.append(o)
        print(f"{s:>6} " + " ".join(f"{x:>16.4f}" for x in v) + f" {d:>14.4f} {o:>12.4f}")
    summary = {"model": a.model, "max_steps": a.max_steps, "eval_steps": a.eval_steps, "seed": a.seed,
               "other_seed": a.other_seed, "history": {n: history[n] for n in names}, "seconds": seconds,
               "max_abs_diff_ddp": max(ddp_diff), "max_abs_diff_other_seed": max(seed_diff)}
    print(f"\nmax |2x8 - 1x16| over the evaluations after step 0: {summary['max_abs_diff_ddp']:.4f} nDCG@10; "
          f"max |seed {a.other_seed} - seed {a.seed}| (1x16): {summary['max_abs_diff_other_seed']:.4f}")
    if a.out:
        Path(a.out).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
