"""The ``finerank`` command line: the typer app that gathers every command group, and :func:`main`, which turns a
FinerankError into a message and exit 2 without a traceback. Each command is a thin shell (parse, call one public
function, print) in the module of its group: data, train, evaluate, rerank (and export), serve, cascade, misc (demo,
doctor).

Heavy libraries (torch, transformers) are imported inside the functions that need them, so ``--help`` and the
data commands start fast.
"""

from __future__ import annotations

import os
import sys
from typing import List, Optional

import typer
from rich.markup import escape

from ..core.errors import FinerankError
from .calibrate import calibrate
from .cascade import cascade_app
from .common import err
from .data import data_app
from .distill import distill
from .evaluate import evaluate
from .misc import demo, doctor
from .rerank import export, rerank
from .serve import serve
from .train import train

app = typer.Typer(help="Fine-tune cross-encoder rerankers on your own data, prove it on held-out queries, ship it.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
for command in (train, distill, evaluate, calibrate, rerank, export, serve, demo, doctor):  # the order --help lists them in
    app.command()(command)
app.add_typer(data_app, name="data")
app.add_typer(cascade_app, name="cascade")


def _click_exceptions() -> tuple[tuple, tuple, tuple]:
    """(Exit, ClickException, Abort) classes of every click in play: typer >= 0.2x runs on its own vendored copy
    (``typer._click``), whose exceptions are not ``click``'s; older typer, and commands that raise ``click``
    errors, use ``click``'s."""
    import typer

    mods = []
    for name in ("typer._click.exceptions", "click.exceptions"):
        try:
            mods.append(__import__(name, fromlist=["ClickException"]))
        except ImportError:
            pass
    exits = {typer.Exit, *(m.Exit for m in mods if hasattr(m, "Exit"))}
    aborts = {typer.Abort, *(m.Abort for m in mods if hasattr(m, "Abort"))}
    return tuple(exits), tuple(m.ClickException for m in mods), tuple(aborts)


def main(argv: Optional[List[str]] = None) -> None:
    """Run the CLI; a FinerankError is printed without a traceback and exits 2, a usage error and an OSError too;
    any other exception is a bug, reported in one line (exit 1; ``FINERANK_TRACEBACK=1`` raises it)."""
    exits, click_errors, aborts = _click_exceptions()
    try:
        rv = app(args=argv, prog_name="finerank", standalone_mode=False)
    except exits as e:
        sys.exit(e.exit_code)
    except click_errors as e:
        e.show()
        sys.exit(e.exit_code)
    except aborts:
        err.print("aborted")
        sys.exit(130)
    except FinerankError as e:
        err.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except OSError as e:  # the system's answer (a full disk, a permission): the user can act on it
        where = f"{e.filename}: " if e.filename else ""
        err.print(f"[bold red]error:[/] {escape(where + (e.strerror or str(e)))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except Exception as e:  # noqa: BLE001 - a bug: one line, not a traceback; FINERANK_TRACEBACK=1 shows it
        if os.environ.get("FINERANK_TRACEBACK"):
            raise
        err.print(f"[bold red]internal error:[/] {escape(type(e).__name__)}: {escape(str(e)[:300])}\n  this is a "
                  "bug in finerank, please report it; FINERANK_TRACEBACK=1 shows where it happened",
                  highlight=False, soft_wrap=True)
        sys.exit(1)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
