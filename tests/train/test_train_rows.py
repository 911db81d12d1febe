"""The result row: a diverged row counts the steps it trained; `raysweep train --json`
prints every results-table column, its run id the hash of the resolved config."""

import json
import math

from raysweep.cli import main
from raysweep.results import COLUMNS, run_id
from raysweep.train.cli import cli_labels
from raysweep.train.config import resolve_config
from raysweep.train.loop import train

TINY = {"size": "2x32", "data": "synthetic", "tokens": 40 * 8 * 64, "seq_len": 64,
        "eval_every": 10}


def test_diverged_row_counts_trained_steps_only():
    row = train({**TINY, "lr": 1e4})
    assert row["status"] == "diverged"
    assert 0 < row["steps"] < row["steps_planned"] == 40
    assert row["tokens"] == row["steps"] * row["batch_size"] * row["seq_len"]
    assert row["flops"] == 6.0 * row["n_params"] * row["tokens"]
    assert math.isclose(row["tokens_per_param"], row["tokens"] / row["n_params"])


def test_cli_train_json_has_every_results_column(capsys):
    args = ["train", "--size", "2x32", "--data", "synthetic", "--tokens", "5120",
            "--weights", "int4", "--set", "seq_len=64", "--json"]
    assert main(args) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(COLUMNS) <= set(row), sorted(set(COLUMNS) - set(row))
    assert row["study"] == "" and row["format"] == "int4|bf16"
    config = {"size": "2x32", "weights": "int4", "activations": "bf16", "seed": 0,
              "backend": "auto", "tokens": 5120, "data": "synthetic", "seq_len": 64}
    assert row["run_id"] == cli_labels(config, row)["run_id"] == run_id(resolve_config(config))
    assert row["tokens_per_param"] == row["tokens"] / row["n_params"]
