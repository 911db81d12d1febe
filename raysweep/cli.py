"""The ``raysweep`` command line.

Every subcommand is declared here (so ``raysweep --help`` is fast and imports
neither torch nor ray) and dispatches lazily to ``module:function(args) -> int``
in the module that owns it. A :class:`~raysweep.errors.RaysweepError` raised by
a command becomes a one-line ``raysweep: error: ...`` on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

# command -> "module:function"; the function takes the parsed args, returns the exit code.
COMMANDS = {
    "gmse": "raysweep.formats.cli:cmd_gmse",
    "train": "raysweep.train.cli:cmd_train",
    "data": "raysweep.train.cli:cmd_data",
    "plan": "raysweep.sweep.cli:cmd_plan",
    "run": "raysweep.sweep.cli:cmd_run",
    "status": "raysweep.sweep.cli:cmd_status",
    "fit": "raysweep.fit.cli:cmd_fit",
    "report": "raysweep.fit.cli:cmd_report",
    "predict": "raysweep.fit.cli:cmd_predict",
}


def _add_gmse(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("gmse", help="Gaussian MSE, bits and family of representation specs")
    p.add_argument("specs", nargs="+", metavar="SPEC", help="e.g. int4 fp4 sparse50 2:4 vq2x8")
    p.add_argument("--json", action="store_true", help="print one JSON object keyed by spec")


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="one training run, in-process")
    p.add_argument("--size", required=True,
                   help="paper preset (30M, 50M, 100M, 200M), a size-dial value (d64), "
                        "or LxD (e.g. 2x64)")
    p.add_argument("--weights", default="bf16", metavar="SPEC")
    p.add_argument("--activations", default="bf16", metavar="SPEC")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--tokens-per-param", type=float, default=None)
    g.add_argument("--tokens", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None,
                   help="stdlib (default), synthetic, or a dir with train.bin/val.bin")
    p.add_argument("--estimator", default=None, help="ste | trust (default) | rbbm:A")
    p.add_argument("--backend", default="auto", choices=["auto", "triton", "torch"])
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--compile", nargs="?", const=True, default=None, metavar="MODE",
                   help="torch.compile the model; MODE: true (alone), false, reduce-overhead")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a training hyperparameter (repeatable), e.g. --set lr=1e-3")
    p.add_argument("--json", action="store_true", help="print the result row as JSON")


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="prepare token corpora (train.bin/val.bin)")
    dsub = p.add_subparsers(dest="data_cmd", required=True)
    q = dsub.add_parser("prepare", help="write train.bin/val.bin for a corpus")
    q.add_argument("source", help="stdlib | sitepackages | hf:DATASET[:CONFIG]")
    q.add_argument("--out", required=True, help="output directory")
    q.add_argument("--tokenizer", default=None, help="HF tokenizer name (hf: sources only)")
    q.add_argument("--max-bytes", type=int, default=None)


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plan", help="list the trials of a study without running them")
    p.add_argument("study", metavar="STUDY")
    p.add_argument("--json", action="store_true")
    p.add_argument("--out", default="runs", help="output dir (to show what is already done)")

    p = sub.add_parser("run", help="run studies on Ray Tune (local Ray by default)")
    p.add_argument("studies", nargs="+", metavar="STUDY")
    p.add_argument("--out", default="runs", help="results go to OUT/<study name>/ (default: runs)")
    p.add_argument("--address", default=None, help="Ray cluster address (e.g. auto)")
    p.add_argument("--dashboard", action="store_true", help="start the Ray dashboard on 127.0.0.1")
    p.add_argument("--max-concurrent", type=int, default=None)
    p.add_argument("--no-report", action="store_true", help="skip the fit and report at the end")

    p = sub.add_parser("status", help="progress of a study from its results table and registry")
    p.add_argument("study", metavar="STUDY", help="a study YAML or its output directory")
    p.add_argument("--out", default="runs")
    p.add_argument("--json", action="store_true")


def _add_fit(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fit", help="fit a scaling law to a results table")
    p.add_argument("table", metavar="TABLE", help="results.parquet or results.csv")
    p.add_argument("--law", default="unified",
                   help="chinchilla | decoupled | unified | unified-logistic | unified-logistic2 "
                        "| frantar | kumar")
    p.add_argument("--bootstrap", type=int, default=0, metavar="K")
    p.add_argument("--holdout", default=None, metavar="EXPR",
                   help="column comparisons selecting rows to hold out, e.g. "
                        "'n_params > 2e8' (docs/fit.md)")
    p.add_argument("--json", default=None, metavar="OUT", help="write the fit as JSON to OUT")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--share-family", action="append", default=[], metavar="FAM=TO",
                   help="fit family FAM on family TO's capacity curve (e.g. noise=int)")
    p.add_argument("--predict", action="append", default=[], metavar="QUERY",
                   help="predict a run: 'format=int4|int4,n=1e8,d=2e9' (repeatable) or a "
                        "CSV; with --bootstrap, a 95%% prediction interval (docs/fit.md)")
    p.add_argument("--capacity-L", default="auto", choices=["auto", "free", "fixed"],
                   help="unified law: L of each family fixed at 1 unless it has 4+ GMSE "
                        "levels incl. one above 6 bits (auto), or free / fixed for all")


def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="report.md, report.html and plots for a study dir")
    p.add_argument("study_dir", metavar="STUDY_DIR")
    p.add_argument("--bootstrap", type=int, default=50, metavar="K")


def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="zero-shot loss and capacity of specs from their GMSE")
    p.add_argument("specs", nargs="+", metavar="SPEC", help="e.g. int4 fp4 fp8 int2 bf16")
    p.add_argument("--law", default="paper", metavar="paper|FIT.json",
                   help="the paper's published law (default) or a fit.json's params/capacity")
    p.add_argument("--n", default=None, metavar="N", help="parameters (default 1e8)")
    p.add_argument("--d", default=None, metavar="D", help="tokens (default 20 N)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--budget-bits", default=None, metavar="B",
                   help="equal memory: N = B / bits per element; rank by loss")
    g.add_argument("--budget-flops", default=None, metavar="C",
                   help="equal compute: D = C / (6 N) (N from D = 20 N without --n)")
    p.add_argument("--role", default="both", choices=["weights", "activations", "both"],
                   help="where the spec applies (default both: rho = rho_w * rho_a)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


class _Parser(argparse.ArgumentParser):
    """argparse with the CLI contract's error form: one line on stderr, exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="raysweep",
        description="Scaling laws for compressed representations, swept on Ray Tune.",
    )
    from raysweep import __version__

    parser.add_argument("--version", action="version", version=f"raysweep {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)
    for add in (_add_gmse, _add_train, _add_data, _add_sweep, _add_fit, _add_report,
                _add_predict):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from raysweep.errors import RaysweepError

    module, func = COMMANDS[args.command].split(":")
    try:
        return int(getattr(importlib.import_module(module), func)(args) or 0)
    except RaysweepError as exc:
        print(f"raysweep: error: {' '.join(str(exc).splitlines())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = "; run the same command again to resume" if args.command == "run" else ""
        print(f"raysweep: interrupted{hint}", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `raysweep status | head -1`: the reader left, nothing to say
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        print(f"raysweep: error: {exc.filename or 'disk'}: no space left on the device; "
              "nothing half-written was published (free space and run again)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
