"""The options of ``finerank train`` (:class:`TrainConfig`: defaults, a YAML/TOML file, validation, the effective
config written beside the run) and the guide's warnings about them (:func:`guardrails`).

A trainer with more options extends TrainConfig with a dataclass of its own: :meth:`TrainConfig.validate` checks
every field's type and range by its annotation (subclass fields too; use ``from __future__ import annotations``), a
subclass's ``validate`` adds its own checks after ``super().validate()``, and ``ARCHS``/``LOSSES`` name what it
accepts for ``arch`` and ``loss``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from ..core.errors import FinerankError
from ..core.metrics import DEFAULT_METRICS
from ..core.records import Dataset, Pair
from ..data.inspect import MIN_PAIRS, TRUNCATION_WARN, conflicting_labels, token_lengths
from ..data.split import check_leakage
from ..evaluation.dependence import CHECK_LISTS
from ..io.outputs import atomic_write

LR_RANGE = (2e-5, 5e-5)
ARCHS = ("cross-encoder", "bi-encoder")  # what train --arch fine-tunes: finerank.training.train dispatches
MAX_EPOCHS = 3
PRIMARY = DEFAULT_METRICS[0]  # nDCG@10 picks the best checkpoint
PRECISIONS = ("auto", "bf16", "fp32")  # bf16 on a CPU with AMX or AVX512-BF16 trains about 2x faster (measured)
TRACKERS = ("none", "tensorboard", "mlflow", "wandb")


@dataclass
class TrainConfig:
    """Every option of ``finerank train``; a YAML/TOML config file may set any of them."""

    ARCHS: ClassVar[tuple[str, ...]] = ARCHS
    LOSSES: ClassVar[tuple[str, ...]] = ("auto", "bce", "lambda")

    model: str = "minilm-l6"
    arch: str = "cross-encoder"        # cross-encoder | bi-encoder (finerank.training.bi_encoder)
    train: str = ""
    val: str | None = None
    out: str = "runs/finerank"
    val_corpus: str | None = None      # BM25 top-k over this collection for each validation query
    val_top_k: int = 30
    epochs: float = 2.0
    lr: float = 3e-5
    batch_size: int = 16
    max_length: int = 512
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    eval_steps: int = 100
    loss: str = "auto"                 # auto | bce | lambda
    pos_weight: float | None = None    # BCE: weight of positives; None = negatives/positives when > 1
    max_label: float | None = None     # top of the label scale (None: 0-4, BCE scales by the data's highest label)
    early_stopping_patience: int = 3
    save_total_limit: int = 2
    seed: int = 42
    max_steps: int = -1
    resume: bool = False
    overwrite: bool = False            # a fresh run into a folder holding an earlier one: remove that run's files
    require_improvement: bool = False
    report_to: str = "none"            # experiment tracking: none | tensorboard | mlflow | wandb (the Trainer's)
    fusion: str = "auto"               # auto: fuse with BM25 + bi-encoder when that wins on validation; off
    bi_encoder: str = "minilm-l6"      # the second model fusion may use
    balance: bool = True               # add other queries' negatives so each positive document is as often a negative
    length_buckets: bool = False       # batches of pairs of similar token length (less padding), shuffled by batch
    query_check: int = CHECK_LISTS     # validation lists the kept model also scores under other queries' texts; 0 off
    precision: str = "auto"            # auto: bf16 on a GPU that has it; bf16: on a CPU too (autocast); fp32
    format: str | None = None
    split: str | None = None

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> dict[str, Any]:
        """Options from a YAML or TOML file (keys as the option names, dashes or underscores)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise FinerankError(f"{path}: cannot read the config file ({getattr(e, 'strerror', None) or e})",
                                hint="--config takes a YAML or TOML file of option names and values") from None
        data = _parse(path, text)
        if not isinstance(data, dict):
            raise FinerankError(f"{path}: a config file holds a mapping of option names to values")
        names = {f.name for f in fields(cls)}
        out = {}
        for key, value in data.items():
            k = str(key).replace("-", "_")
            if k not in names:
                raise FinerankError(f"{path}: unknown option '{key}'", hint=f"options: {', '.join(sorted(names))}")
            out[k] = value
        return out

    @classmethod
    def resolve(cls, config_file: str | os.PathLike | None = None, **given) -> "TrainConfig":
        """The effective configuration: the defaults, overridden by ``config_file``, overridden by every option in
        ``given`` that is not None (the command line's precedence)."""
        opts = cls.from_file(config_file) if config_file else {}
        opts.update({k: v for k, v in given.items() if v is not None})
        return cls(**opts).validate()

    def validate(self) -> "TrainConfig":
        """Every option of the right type and in range (a config file's values too); a FinerankError naming the
        option otherwise. Returns the config, with whole numbers and booleans normalised."""
        for f in fields(self):
            _check_type(self, f)
        if self.lr < 0:  # 0 is allowed: the weights stay as they are (a baseline run); guardrails warn
            raise FinerankError(f"option {_flag('lr')}: got {self.lr:g}, expected a learning rate >= 0",
                                hint="the guide's range is 2e-5..5e-5")
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "eval_steps": self.eval_steps,
                    "max_length": self.max_length, "val_top_k": self.val_top_k,
                    "save_total_limit": self.save_total_limit, "pos_weight": self.pos_weight,
                    "max_label": self.max_label}
        for name, value in positive.items():
            if value is not None and value <= 0:
                raise FinerankError(f"option {_flag(name)}: got {value:g}, expected a number above 0")
        for name in ("weight_decay", "early_stopping_patience", "query_check"):
            if getattr(self, name) < 0:
                raise FinerankError(f"option {_flag(name)}: got {getattr(self, name):g}, expected 0 or more")
        if not 0 <= self.warmup_ratio < 1:
            raise FinerankError(f"option {_flag('warmup_ratio')}: got {self.warmup_ratio:g}, expected 0 <= ratio < 1")
        if self.max_steps == 0 or self.max_steps < -1:
            raise FinerankError(f"option {_flag('max_steps')}: got {self.max_steps}, expected a number of steps >= 1",
                                hint="leave --max-steps out to train for --epochs")
        if self.loss not in self.LOSSES:
            raise FinerankError(f"option {_flag('loss')}: got {self.loss!r}", hint=f"choose {_or(self.LOSSES)}")
        if self.precision not in PRECISIONS:
            raise FinerankError(f"option {_flag('precision')}: got {self.precision!r}", hint=f"choose {_or(PRECISIONS)}")
        if self.fusion not in ("auto", "off"):
            raise FinerankError(f"option {_flag('fusion')}: got {self.fusion!r}", hint="choose auto or off")
        if self.arch not in self.ARCHS:
            raise FinerankError(f"option arch: got {self.arch!r}", hint=f"choose {' or '.join(self.ARCHS)}")
        if not str(self.out).strip():
            raise FinerankError("option out: empty", hint="--out DIR names the run folder")
        return self

    def dump(self, path: Path) -> None:
        """The effective configuration, as a config file that ``finerank train --config`` takes again."""
        import yaml

        with atomic_write(path) as f:
            f.write("# the effective configuration of this run; reuse it with: finerank train --config THIS_FILE\n")
            yaml.safe_dump({**asdict(self), "overwrite": False}, f, sort_keys=False)  # reusing it never deletes a run


def _parse(path: Path, text: str):
    """A config file's contents: TOML by the ``.toml`` suffix, YAML otherwise."""
    if path.suffix.lower() == ".toml":
        import tomllib

        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise FinerankError(f"{path}: not valid TOML ({e})") from None
    import yaml

    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise FinerankError(f"{path}: not valid YAML ({str(e).splitlines()[0]}"
                            f"{getattr(e, 'problem_mark', '') or ''})") from None


def _check_type(cfg: TrainConfig, f) -> None:
    """One option against its annotation (int, float, bool, str, each maybe ``| None``); whole numbers normalised."""
    value = getattr(cfg, f.name)
    kind = str(f.type).replace(" ", "")
    if value is None and kind.endswith("|None"):
        return
    base = kind.split("|")[0]
    if base in ("int", "float"):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value \
            and abs(value) != float("inf") and (base == "float" or float(value).is_integer())
        if not ok:
            raise FinerankError(f"option {_flag(f.name)}: got {value!r}, expected "
                                f"{'a whole number' if base == 'int' else 'a finite number'}")
        setattr(cfg, f.name, int(value) if base == "int" else float(value))
    elif base == "bool" and not isinstance(value, bool):
        raise FinerankError(f"option {_flag(f.name)}: got {value!r}, expected true or false")
    elif base == "str" and not isinstance(value, str):
        raise FinerankError(f"option {_flag(f.name)}: got {value!r}, expected a string")


def _or(names) -> str:
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else names[0]


FLAGS = {"early_stopping_patience": "patience", "warmup_ratio": None, "weight_decay": None,  # the command line's
         "save_total_limit": None, "format": None, "split": None}                         # name, None: config only


def _flag(name: str) -> str:
    """An option as a config file and the command line name it: ``lr (--lr)``, ``early_stopping_patience
    (--patience)``, ``warmup_ratio`` (config only)."""
    flag = FLAGS.get(name, name)
    return name if flag is None else f"{name} (--{flag.replace('_', '-')})"


def tracking(report_to: str) -> str:
    """The Trainer's ``report_to``: ``none`` or one tracker, whose package must be installed (the extras
    ``finerank[tensorboard]``, ``[mlflow]``, ``[wandb]``). TensorBoard writes into ``OUT/runs/``; mlflow and wandb
    follow their own environment variables (``MLFLOW_TRACKING_URI``, ``WANDB_MODE=offline``, ...)."""
    import importlib.util

    name = (report_to or "none").strip().lower()
    if name not in TRACKERS:
        raise FinerankError(f"unknown --report-to '{report_to}'", hint=f"choose one of: {', '.join(TRACKERS)}")
    if name != "none" and importlib.util.find_spec(name) is None:
        raise FinerankError(f"--report-to {name} needs the package '{name}', which is not installed",
                            hint=f"pip install 'finerank[{name}]'")
    return name


# ------------------------------------------------------------------------------------------- guardrails
def guardrails(cfg: TrainConfig, train: Dataset, val: Dataset | None, tokenizer=None) -> list[str]:
    """The guide's warnings, each with its reason, checked before training starts."""
    w: list[str] = []
    lo, hi = LR_RANGE
    if not lo <= cfg.lr <= hi:
        w.append(f"learning rate {cfg.lr:g} is outside {lo:g}..{hi:g}: higher rates make a pretrained cross-encoder "
                 "forget what it knew (catastrophic forgetting), lower ones barely move it")
    if cfg.epochs > MAX_EPOCHS:
        w.append(f"{cfg.epochs:g} epochs: more than {MAX_EPOCHS} invites overfitting to the training queries")
    if len(train.pairs) < MIN_PAIRS:
        w.append(f"only {len(train.pairs)} training pairs (fewer than {MIN_PAIRS}): expect overfitting or no gain; "
                 "mine negatives (finerank data mine) or label more")
    if val is not None:
        leak = check_leakage(train, val)
        if not leak.ok:
            w.append(f"leakage: {leak.summary()} -- validation scores will be inflated; split with finerank data split")
    if (msg := label_warning(cfg, train.pairs)) is not None:
        w.append(msg)
    conflicts = len(conflicting_labels(train.pairs))
    if conflicts:
        w.append(f"{conflicts} (query, document) pairs carry conflicting labels in the training data (label noise)")
    if tokenizer is not None:
        share = token_lengths(train.pairs, tokenizer, cfg.max_length, sample=2000)["truncated_share"]
        if share > TRUNCATION_WARN:
            w.append(f"{share:.0%} of training pairs exceed max_length={cfg.max_length} tokens and are truncated: "
                     "raise --max-length, or expect the model to miss what documents say late")
    return w


RARE_GRADES = 0.01  # graded labels on fewer than this share of pairs, with the rest 0/1, look like typos


def label_warning(cfg: TrainConfig, pairs: list[Pair]) -> str | None:
    """A warning when ``auto`` picks LambdaLoss because of a few labels above 1 in otherwise binary data."""
    if cfg.loss != "auto" or cfg.max_label is not None or not pairs:
        return None
    high = sum(1 for p in pairs if p.label > 1)
    if 0 < high < RARE_GRADES * len(pairs):
        return (f"only {high} of {len(pairs)} training pairs carry a label above 1, so the labels count as graded "
                "and --loss auto trains with LambdaLoss: if the data is binary these are typos (fix them, or pass "
                "--max-label 1 to refuse them); if it is graded, pass --max-label to say the scale")
    return None
