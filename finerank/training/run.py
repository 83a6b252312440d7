"""The run folder (``OUT``) and the process that writes it: the lock (``OUT/.lock``), a fresh run refused into a
non-empty folder unless ``--resume`` or ``--overwrite``, a finished run's recorded result, stale debris of a killed
writer, complete checkpoints and the one to resume from, the atomic save of ``best/``, the evaluation history and
the kept checkpoint's metrics; :class:`TrainResult`, what a run returns.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import time
from dataclasses import dataclass, fields
from pathlib import Path

from ..core.errors import FinerankError
from ..core.metrics import DEFAULT_METRICS
from ..io.files import COMPLETE, RUN_CONFIG, RUN_RECORD
from ..io.outputs import check_output_folder
from ..io.models import BEST
from .config import PRIMARY, TrainConfig

LOCK = ".lock"  # OUT/.lock holds "PID@HOST" of the process writing the run folder
BASE_METRICS = "base-metrics.json"  # the untrained model on validation, reused by --resume
RUN_FILES = (RUN_RECORD, RUN_CONFIG, BASE_METRICS)
RUN_FOLDERS = (BEST, "eval", "runs")  # with checkpoint-N/; eval/: the evaluator's CSV, runs/: TensorBoard


@dataclass
class TrainResult:
    out_dir: str
    best_dir: str
    best_checkpoint: str | None
    base_metrics: dict[str, float]      # the model before training, on the validation lists
    best_metrics: dict[str, float]      # the kept checkpoint's model alone
    improved: bool
    history: list[dict]
    warnings: list[str]
    train_pairs: int
    seconds: float
    pairs_per_second: float
    loss: str
    fusion: dict | None = None          # what finerank.scorers.fused.fit measured on validation (systems, weights)
    fusion_saved: bool = False          # the fusion won and ships with the model (best/finerank.json)
    calibration: dict | None = None     # the shipped score's map to P(relevant) (finerank.scorers.calibration)
    record: str = ""                    # the run record's path
    world_size: int = 1                 # processes that trained (torchrun / accelerate launch)
    main_process: bool = True           # False on the other ranks: they train, rank 0 writes and reports
    balancing_negatives: int = 0        # label-0 pairs train added (TrainConfig.balance), counted in train_pairs
    query_dependence: dict | None = None  # the kept cross-encoder on validation: finerank.core.metrics.query_dependence
    finished_before: int | None = None  # --resume of a run that had finished: its recorded step; nothing was done


# ------------------------------------------------------------------------------------------------- lock
def _alive(pid: int) -> bool:
    if pid <= 0:  # garbage in a lock file (os.kill would address a process group)
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


class RunLock:
    """``OUT/.lock`` with this process's PID: a second writer of the same run folder is refused with a clear
    message; the lock of a process that no longer runs (on this machine) is taken over.

    Taking it is atomic: the writer holds ``flock`` on the lock file for as long as it runs (the kernel drops it
    when the process dies, however it dies), and the file it holds must still be ``OUT/.lock`` once held (a file
    unlinked by a writer that finished meanwhile does not count). Of several processes taking over a dead PID's
    lock at once, exactly one gets it. The PID and host written inside name the holder for the message, and keep
    a lock taken on another machine (where flock may not reach) from being taken over."""

    def __init__(self, out: Path):
        self.path = out / LOCK
        self.mine = f"{os.getpid()}@{platform.node()}"
        self.took_over: str | None = None  # the stale holder, when its lock was taken over
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        import fcntl

        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o644)
            except OSError as e:
                raise FinerankError(f"{self.path.parent}: cannot create the run folder's lock ({e.strerror or e})",
                                    hint="give an --out folder you can write to") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:  # a live writer holds it
                os.close(fd)
                holder = self._holder()
                if holder is None:  # released meanwhile, or its writer has not written its PID yet: try again
                    time.sleep(0.05)
                    continue
                self._refuse(*holder)
            if not self._same_file(fd):  # unlinked (a writer finished) between our open and our flock
                os.close(fd)
                continue
            holder = self._read(fd)
            if holder is not None:
                pid, host = holder
                if host != platform.node() or (pid != os.getpid() and _alive(pid)):
                    os.close(fd)  # another machine's writer (flock does not tell), or one that takes no flock
                    self._refuse(pid, host)
                self.took_over = f"{pid}@{host}"
            os.ftruncate(fd, 0)
            os.pwrite(fd, (self.mine + "\n").encode(), 0)
            self._fd = fd
            return self
        raise FinerankError(f"{self.path}: could not take the run folder's lock", hint=f"delete {self.path}")

    def _refuse(self, pid: int, host: str):
        raise FinerankError(
            f"{self.path.parent}: another finerank train is writing this run folder (PID {pid} on {host}, "
            f"lock {self.path})",
            hint="wait for it to finish or give another --out; if that process is gone (another machine), "
                 f"delete {self.path}") from None

    def _same_file(self, fd: int) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino)

    @staticmethod
    def _parse(text: str) -> tuple[int, str] | None:
        text = text.strip()
        if not text:
            return None
        pid, _, host = text.partition("@")
        try:
            return int(pid), host or platform.node()
        except ValueError:
            return -1, platform.node()  # garbage: no live process holds it

    def _read(self, fd: int) -> tuple[int, str] | None:
        return self._parse(os.pread(fd, 4096, 0).decode("utf-8", "replace"))

    def _holder(self) -> tuple[int, str] | None:
        try:
            return self._parse(self.path.read_text())
        except (FileNotFoundError, OSError):
            return None

    def release(self) -> None:
        if self._fd is None:
            return
        if self._same_file(self._fd):  # unlink while holding it: a waiting opener sees another file and retries
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        os.close(self._fd)
        self._fd = None


# ------------------------------------------------------------------------------------------- run folder
def run_artifacts(out: Path) -> list[Path]:
    """What a run wrote into ``out``: checkpoints, best/, the record, the config, base metrics, TensorBoard logs."""
    found = [p for p in out.glob("checkpoint-*")]
    found += [out / n for n in (*RUN_FOLDERS, *RUN_FILES) if (out / n).exists()]
    return sorted(found)


def clean_stale(out: Path) -> list[str]:
    """Remove what a killed writer left: ``.best.tmp-PID``/``.best.old-PID`` folders and atomic writes' temp files
    (only called under the run folder's lock, so no live writer owns them)."""
    gone = []
    for p in [p for p in out.iterdir() if _debris(p)]:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        gone.append(p.name)
    return gone


def _debris(p: Path) -> bool:
    """A temp folder or file of an interrupted save (save_atomically, atomic_write)."""
    n = p.name
    return (n.startswith((f".{BEST}.tmp-", f".{BEST}.old-", ".finerank-probe."))
            or (n.startswith(".") and n.endswith(".tmp")))


def finished_run(cfg: TrainConfig, out: Path, result_type: type = TrainResult) -> TrainResult | None:
    """The result of the run recorded in ``out`` when it finished with the same step budget (``max_steps``,
    ``epochs``) that ``cfg`` asks for: resuming it would have nothing to do. A ``result_type`` extending
    TrainResult gets its own fields from the record's keys of the same names."""
    path = out / RUN_RECORD
    if not path.exists():
        return None
    try:
        rec = json.loads(path.read_text())
        done = rec["config"]
        if (done.get("max_steps"), float(done.get("epochs"))) != (cfg.max_steps, float(cfg.epochs)):
            return None
        own = {f.name: rec.get(f.name) for f in fields(result_type)} if result_type is not TrainResult else {}
        own = {k: v for k, v in own.items() if k not in {f.name for f in fields(TrainResult)}}
        return result_type(str(out), str(out / BEST), rec.get("best_checkpoint"), rec.get("base") or {},
                           rec.get("best") or {}, bool(rec.get("improved")), rec.get("eval_history") or [],
                           [], rec["data"]["train"]["pairs"], rec["timings"]["train_seconds"],
                           rec.get("train_pairs_per_second") or 0.0, rec["loss"], fusion=rec.get("fusion"),
                           fusion_saved=bool(rec.get("fusion_saved")), record=str(path),
                           finished_before=int(rec.get("global_step") or 0), **own)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # an unreadable record: resume from the checkpoints as after a crash


def open_run_folder(cfg: TrainConfig, main: bool, say=None,
                    result_type: type = TrainResult) -> "RunLock | TrainResult | None":
    """The run folder's rules, before any work: the lock (rank 0), a fresh run into a non-empty folder refused
    unless ``resume`` or ``overwrite`` (which removes the earlier run's files, nothing else), stale temp folders
    removed, and ``resume`` of a run that finished returning its recorded result (a ``result_type``). Returns the
    lock (None on the other ranks) or that result."""
    out = Path(cfg.out)
    _check_paths(cfg, out)
    if not main:  # the other ranks of a launched job: rank 0 holds the lock and cleans
        if cfg.resume and (done := finished_run(cfg, out, result_type)) is not None:
            done.main_process = False  # every rank returns; rank 0 reports
            return done
        return None
    out.mkdir(parents=True, exist_ok=True)
    lock = RunLock(out).acquire()
    try:
        if lock.took_over and say:
            say(f"took over the lock of a finished or killed run (PID {lock.took_over})")
        clean_stale(out)
        if cfg.overwrite and not cfg.resume:
            for p in run_artifacts(out):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        if cfg.resume and (done := finished_run(cfg, out, result_type)) is not None:
            lock.release()
            return done
    except BaseException:
        lock.release()
        raise
    return lock


def _check_paths(cfg: TrainConfig, out: Path) -> None:
    """Refuse an ``out`` that cannot be written, holds the model or the data, or holds files of another run when
    neither ``resume`` nor ``overwrite`` is given."""
    check_output_folder(out)
    if local := _local_model(cfg.model):
        if local == out.resolve() or out.resolve() in local.parents:
            raise FinerankError(f"--model {cfg.model} is inside the run folder --out {cfg.out}",
                                hint="give the run another --out (the run would overwrite the model it starts from)")
    for data in (cfg.train, cfg.val):
        if data and Path(data).exists() and any(Path(data).resolve() == p.resolve() or p.resolve() in
                                                Path(data).resolve().parents for p in run_artifacts(out)):
            raise FinerankError(f"{data}: lies among the run files of --out {cfg.out}",
                                hint="keep the data outside the run's checkpoints and records")
    if cfg.resume and out.is_dir():
        _check_same_arch(cfg, out)
    if not cfg.resume and not cfg.overwrite and out.is_dir():
        held = sorted(p.name for p in out.iterdir() if p.name != LOCK and not _debris(p))
        if held:
            shown = ", ".join(held[:5]) + (f" and {len(held) - 5} more" if len(held) > 5 else "")
            raise FinerankError(f"{out}: not empty ({shown}); a fresh run would mix its files with these",
                                hint="--resume continues the run there, --overwrite starts afresh (removing its "
                                     "checkpoints, best/ and record), or give a new --out")


def earlier_arch(out: Path) -> tuple[str, str] | None:
    """(the architecture, the file that says so) of the run in ``out``: its record's or its config's ``arch``, else
    what its newest complete checkpoint holds (``bi-encoder``: a pooling module, else ``cross-encoder``); None
    when nothing there tells."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError, AttributeError):
        return json.loads((out / RUN_RECORD).read_text())["config"]["arch"], str(out / RUN_RECORD)
    with contextlib.suppress(OSError, StopIteration):
        text = (out / RUN_CONFIG).read_text(encoding="utf-8")
        return next(ln.split(":", 1)[1].strip().strip("'\"") for ln in text.splitlines()
                    if ln.startswith("arch:")), str(out / RUN_CONFIG)
    for ckpt in reversed(complete_checkpoints(out)):
        with contextlib.suppress(OSError):
            bi = "Pooling" in (ckpt / "modules.json").read_text(encoding="utf-8")
            return ("bi-encoder" if bi else "cross-encoder"), str(ckpt)
    return None


def _check_same_arch(cfg: TrainConfig, out: Path) -> None:
    """``--resume`` continues a run of the same architecture only: another one's checkpoint would fail to load
    (optimizer groups of another size) or be converted silently."""
    found = earlier_arch(out)
    if found is None:
        return
    arch, where = found
    family = (lambda a: "bi-encoder" if a == "bi-encoder" else "cross-encoder")
    same = family(arch) == family(cfg.arch) if Path(where).name.startswith("checkpoint-") else arch == cfg.arch
    if not same:
        raise FinerankError(f"{out}: holds a {arch} run ({where}), and --resume asks for {cfg.arch}: the "
                            "architectures differ, so its checkpoints cannot be continued",
                            hint=f"resume with the {arch} options it was started with, or give another --out "
                                 "(--overwrite starts afresh there)")


def _local_model(name) -> Path | None:
    p = Path(str(name)).expanduser()
    return p.resolve() if p.exists() else None


# ------------------------------------------------------------------------------------- checkpoints, best
def complete_checkpoints(out: Path) -> list[Path]:
    """Checkpoints whose save finished (marked by finerank after the Trainer wrote them), oldest first."""
    found = [p for p in out.glob("checkpoint-*") if (p / COMPLETE).exists() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def _remove_incomplete(out: Path) -> list[str]:
    gone = []
    for p in out.glob("checkpoint-*"):
        if p.is_dir() and not (p / COMPLETE).exists():
            shutil.rmtree(p, ignore_errors=True)
            gone.append(p.name)
    return gone


def resume_checkpoint(out: Path) -> str | None:
    """The newest complete checkpoint in ``out`` (incomplete ones removed), as rank 0 sees it, on every rank."""
    from .callbacks import on_rank_zero

    def pick() -> str | None:
        _remove_incomplete(out)
        done = complete_checkpoints(out)
        return str(done[-1]) if done else None

    return on_rank_zero(pick)


def save_atomically(model, target: Path) -> None:
    """Save to a temp folder beside ``target`` and swap it in: a kill leaves the old ``target`` or the new one."""
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def eval_history(log_history: list[dict], evaluator) -> list[dict]:
    """Each evaluation during training: step, epoch, the metrics (ir-measures names) and its seconds. The Trainer's
    log survives a resume (trainer_state.json); the evaluator's own timings do not."""
    timing = {h["step"]: h["seconds"] for h in (evaluator.history if evaluator else [])}
    prefix = "eval_val_"
    return [{"step": h["step"], "epoch": h.get("epoch"),
             **{k[len(prefix):]: v for k, v in h.items() if k.startswith(prefix) and k[len(prefix):] in
                DEFAULT_METRICS},
             "seconds": timing.get(h["step"])}
            for h in log_history if f"{prefix}{PRIMARY}" in h]


def kept_metrics(history: list[dict], best_checkpoint: str | None) -> dict[str, float]:
    """The validation metrics of the kept checkpoint."""
    if not history:
        return {}
    step = int(best_checkpoint.rsplit("-", 1)[-1]) if best_checkpoint else history[-1]["step"]
    best = next((h for h in history if h["step"] == step), None) or max(history, key=lambda h: h[PRIMARY])
    return {m: best[m] for m in DEFAULT_METRICS if m in best}


# ---------------------------------------------------------------------------------------------- process
def finish_distributed() -> None:
    """Tear down the process group a launcher's run started (the CLI calls it before the process exits, so that
    NCCL does not warn about a leaked group); nothing when there is none."""
    import sys

    if "torch" not in sys.modules:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def quiet_replica() -> None:
    """Ranks other than 0 print errors only: their warnings and logs would repeat rank 0's, once a process."""
    import logging
    import warnings

    warnings.simplefilter("ignore")
    for name in ("transformers", "sentence_transformers", "accelerate", "datasets", "torch.distributed"):
        logging.getLogger(name).setLevel(logging.ERROR)
