"""``raysweep train`` and ``raysweep data``: the training wing's command handlers."""

from __future__ import annotations

import json
import math
import sys

from raysweep.errors import RaysweepError
from raysweep.results import format_label, run_id
from raysweep.train.config import resolve_config
from raysweep.train.loop import train


def parse_set(items: list[str]) -> dict:
    """``--set KEY=VALUE`` pairs: VALUE read as JSON (numbers, true/false, null), else a string."""
    out = {}
    for item in items:
        key, sep, val = item.partition("=")
        if not sep or not key.strip():
            raise RaysweepError(f"--set: expected KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = json.loads(val)
        except ValueError:
            out[key.strip()] = val
    return out


def config_from_args(args) -> dict:
    """The training config of a ``raysweep train`` command line."""
    config = {"size": args.size, "weights": args.weights, "activations": args.activations,
              "seed": args.seed, "backend": args.backend}
    for key in ("tokens", "tokens_per_param", "data", "estimator", "device"):
        if getattr(args, key, None) is not None:
            config[key] = getattr(args, key)
    mode = getattr(args, "compile", None)
    if mode is not None:  # --compile alone is True; true/false as words are the bools
        config["compile"] = {"true": True, "false": False}.get(str(mode).lower(), mode)
    config.update(parse_set(args.set))
    return config


def _progress(d: dict) -> None:
    if d.get("done"):
        return
    print(f"step {d['step']:>6}  tokens {d['tokens']:>10,}  train {d['train_loss']:.4f}  "
          f"val {d['val_loss']:.4f}  {d['tokens_per_s']:,.0f} tok/s", file=sys.stderr, flush=True)


def _json_safe(row: dict) -> dict:
    """NaN / inf become null: strict JSON has no NaN."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in row.items()}


def cli_labels(config: dict, row: dict) -> dict:
    """The label columns a results-table row has and a lone ``raysweep train`` lacks.

    ``run_id``: :func:`raysweep.results.run_id` of the resolved training config
    (sha256 of its canonical JSON, run-location keys such as ``device`` left
    out), so the same command gives the same id; ``study``: "" (no study);
    ``format``: ``"<weights>|<activations>"``, as the results table labels a
    representation without a name. Labels already in ``config`` win.
    """
    return {"run_id": config.get("run_id") or run_id(resolve_config(config)),
            "study": config.get("study") or "",
            "format": config.get("format") or format_label(row["weights"], row["activations"])}


def cmd_train(args) -> int:
    """``raysweep train``: one run; a human summary, or the row as JSON with ``--json``."""
    config = config_from_args(args)
    row = train(config, report=_progress)
    if args.json:
        print(json.dumps(_json_safe({**cli_labels(config, row), **row})))
    else:
        print(f"{row['size']} ({row['n_layers']}x{row['d_model']}, N={row['n_params']:,}) "
              f"W={row['weights']} A={row['activations']}: {row['tokens']:,} tokens "
              f"in {row['wall_s']:.1f} s ({row['tokens_per_s']:,.0f} tok/s)")
        print(f"status {row['status']}  val loss {row['loss']:.4f}  "
              f"train loss {row['train_loss']:.4f}  data {row['data_hash']}"
              + (f"\nerror: {row['error']}" if row["error"] else ""))
    return 0 if row["status"] == "ok" else 1


def cmd_data(args) -> int:
    """``raysweep data prepare SOURCE --out DIR``: see :mod:`raysweep.train.prepare`."""
    from raysweep.train.prepare import prepare

    if args.data_cmd != "prepare":
        raise RaysweepError(f"data: unknown subcommand {args.data_cmd!r}; allowed: prepare")
    meta = prepare(args.source, args.out, tokenizer=args.tokenizer, max_bytes=args.max_bytes)
    print(json.dumps(meta))
    return 0
