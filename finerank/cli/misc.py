"""``finerank demo`` and ``finerank doctor``: the whole job on Cranfield, and what the environment holds."""

from __future__ import annotations

import json
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from ..demo import DemoConfig, demo as run_demo
from ..doctor import doctor as run_doctor
from .common import out, print_report


def demo(
    out_dir: str = typer.Option("demo-out", "--out", help="Where the data, model and report go."),
    model: str = typer.Option("minilm-l6", "--model", help="Base of the cross-encoder (the distilled student)."),
    bi_model: str = typer.Option("minilm-l6", "--bi-model", help="The bi-encoder: its baseline, the hybrids, the "
                                 "fusion, and the one tuned."),
    epochs: float = typer.Option(1.0, "--epochs", help="Epochs of the fine-tuning on labels."),
    max_train_queries: Optional[int] = typer.Option(None, "--max-train-queries", help="Fewer queries: a faster run."),
    loss: str = typer.Option("bce", "--loss", help="Training loss: bce, lambda or auto."),
    bi_encoder: bool = typer.Option(True, "--bi-encoder/--no-bi-encoder",
                                    help="Also tune the bi-encoder on the same pairs (about 5 min on 2 CPU cores)."),
    distill: bool = typer.Option(True, "--distill/--no-distill", help="Distill the tuned hybrid into the "
                                 "cross-encoder before the labels."),
    pseudo_queries: int = typer.Option(700, "--pseudo-queries", help="Distillation queries made from the corpus."),
    precision: str = typer.Option("auto", "--precision", help="auto (bf16 where the CPU has bf16 units), bf16 or fp32."),
):
    """The whole job on the embedded Cranfield: inspect, split, mine, tune the bi-encoder, distill the hybrid into
    the cross-encoder, fine-tune it on the labels, evaluate (about 25 min on 2 CPU cores)."""
    res = run_demo(DemoConfig(out=out_dir, model=model, epochs=epochs, max_train_queries=max_train_queries, loss=loss,
                              bi_encoder=bi_encoder, bi_model=bi_model, distill=distill,
                              pseudo_queries=pseudo_queries, precision=precision),
                   log=lambda m: out.print(escape(m), highlight=False))
    print_report(res.report)
    m = res.report.metrics[0]
    top = max(res.report.systems, key=lambda s: s.metrics[m])
    out.print(f"best on the held-out queries: [bold]{escape(top.name)}[/] ({m} {top.metrics[m]:.4f})")
    out.print(f"demo finished in {res.seconds / 60:.1f} min; model: {res.train.best_dir}"
              + (f"; distilled: {res.distill.best_dir}" if res.distill else "")
              + (f"; tuned bi-encoder: {res.bi_train.best_dir}" if res.bi_train else ""))


# ---------------------------------------------------------------------------------------------- doctor
def doctor(
    model: Optional[str] = typer.Option(None, "--model", help="Also resolve and load this model."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
):
    """Print the Python, package versions, devices, Hugging Face cache and whether --model loads."""
    r = run_doctor(model)
    if as_json:
        print(json.dumps(r.to_dict(), indent=2))
        return
    t = Table(title="finerank doctor", show_header=False)
    t.add_row("python", f"{r.python} ({r.executable})")
    t.add_row("virtualenv", r.virtualenv or "none")
    t.add_row("platform", r.platform)
    for name, v in r.versions.items():
        t.add_row(name, v or "[dim]not installed[/]")
    d = r.devices
    gpus = ", ".join(d.get("gpus") or []) or "none"
    t.add_row("devices", f"CPU threads {d.get('cpu_threads')} (torch uses {d.get('torch_threads')}); "
              f"CUDA {d.get('cuda')} ({d.get('cuda_version')}), GPUs: {gpus}; MPS {d.get('mps')}")
    dd = r.distributed
    have = ", ".join(f"{b} {'yes' if ok else 'no'}" for b, ok in (dd.get("backends") or {}).items()) or "none"
    t.add_row("distributed", f"world size {dd.get('world_size')}, rank {dd.get('rank')} (local {dd.get('local_rank')}), "
              f"launcher {dd.get('launcher') or 'none'}" + (f", master {dd['master']}" if dd.get("master") else "")
              + f"; backends: {have}; a run would use {dd.get('backend') or 'none'}")
    t.add_row("HF cache", r.hf_cache)
    t.add_row("HF offline", str(r.hf_offline))
    if r.model:
        m = r.model
        status = (f"[green]loads[/] on {m['device']}, max_length {m['max_length']}, activation {m['activation']}, "
                  f"test score {m['test_score']:.4f}") if m["loads"] else "[red]does not load[/]"
        t.add_row("model", f"{m['name']} -> {m.get('resolves_to', '?')}\n{status}")
    out.print(t)
    for w in r.warnings:
        out.print(f"[yellow]warning[/] {escape(w)}")
    if r.model and not r.model["loads"]:
        raise typer.Exit(1)
