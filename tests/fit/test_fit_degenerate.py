"""Degenerate input gives a clear FitError or a flagged soft failure, never a silent fit."""

import numpy as np
import pytest

from raysweep.errors import FitError
from raysweep.fit import FitStatus, fit_table
from raysweep.fit.synthetic import synthetic_table


def _table(**kw):
    kw.setdefault("families", ("int",))
    kw.setdefault("roles", ("w", "a"))
    kw.setdefault("sizes", (1e7, 4e7, 1.6e8))
    kw.setdefault("tokens_per_param", (50, 200))
    kw.setdefault("dense_seeds", 2)
    return synthetic_table(**kw)


def test_too_few_points():
    df = _table().iloc[:3]
    with pytest.raises(FitError, match="parameters but only"):
        fit_table(df, law="chinchilla")


@pytest.mark.parametrize("bad", [np.nan, 0.0, -1.0])
def test_nan_or_non_positive_loss(bad):
    df = _table()
    df.loc[5, "loss"] = bad
    with pytest.raises(FitError, match="'loss'.*syn00005"):
        fit_table(df)


def test_missing_column_is_named():
    with pytest.raises(FitError, match=r"missing required column\(s\) \['tokens'\]"):
        fit_table(_table().drop(columns=["tokens"]))


def test_single_n_is_flagged_not_identified():
    res = fit_table(_table(sizes=(4e7,), dense_seeds=4, tokens_per_param=(20, 50, 100, 200)),
                    law="chinchilla")
    assert res.status is FitStatus.NOT_IDENTIFIED
    assert "single model size" in res.flags["alpha"]


def test_family_with_one_point_is_flagged():
    df = _table(families=("int", "noise"))
    noise_rows = df.index[df["family"] == "noise"]
    df = df.drop(noise_rows[1:])  # a single noise run
    res = fit_table(df, law="unified")
    assert res.status is FitStatus.NOT_IDENTIFIED
    assert "'noise' has 1 distinct GMSE" in res.flags["noise"]
    assert res.rho["noise1|bf16"] is not None  # the format's own rho is still estimated


def test_no_dense_rows_is_flagged():
    df = _table()
    df = df[df["format"] != "bf16|bf16"]
    res = fit_table(df, law="decoupled")
    assert res.status is FitStatus.NOT_IDENTIFIED
    assert "dense rows" in res.flags["rho scale"]


def test_dense_law_on_table_without_dense_rows():
    df = _table()
    with pytest.raises(FitError, match="usable row"):
        fit_table(df[df["format"] != "bf16|bf16"], law="chinchilla")


def test_bad_holdout_query_is_named():
    with pytest.raises(FitError, match="--holdout 'n_params >>> 3'"):
        fit_table(_table(), holdout="n_params >>> 3")
    with pytest.raises(FitError, match="selects every row"):
        fit_table(_table(), holdout="n_params > 0")


def test_unknown_law_lists_allowed():
    with pytest.raises(FitError, match="unknown law 'tanh'.*unified"):
        fit_table(_table(), law="tanh")


def test_failed_runs_are_left_out_with_a_note():
    df = _table()
    df.loc[0, "status"] = "diverged"
    df.loc[0, "loss"] = np.nan
    res = fit_table(df, law="chinchilla")
    assert any("status != 'ok'" in n for n in res.notes)


def test_holdout_is_scored():
    df = _table(noise=0.003, seed=1)
    res = fit_table(df, law="unified", holdout="n_params > 1e8")
    held = int((df["n_params"] > 1e8).sum())
    assert res.holdout_error["n"] == held
    assert res.n_points == len(df) - held
    assert 0 < res.holdout_error["rmse_log"] < 0.05


def test_decoupled_holdout_of_an_unseen_format_is_noted():
    df = _table(noise=0.003, seed=1)
    res = fit_table(df, law="decoupled", holdout="format == 'int2|bf16' or n_params > 1e8")
    assert res.holdout_error["n"] == int(((df["format"] != "int2|bf16")
                                          & (df["n_params"] > 1e8)).sum())
    assert any("not scored" in n for n in res.notes)
    assert res.rho["int2|bf16"] is None


def test_unknown_option_is_named():
    with pytest.raises(FitError, match="unknown option.*'detla'"):
        fit_table(_table(), detla=1e-3)
