"""``--holdout EXPR`` is parsed by a small safe parser of column comparisons, never by
``df.query``/``eval``: ``@pd.io.common.os.system(...)`` used to run a shell command."""

import numpy as np
import pandas as pd
import pytest

from raysweep.cli import main
from raysweep.errors import FitError
from raysweep.fit import fit_table
from raysweep.fit.synthetic import synthetic_table


@pytest.fixture(scope="module")
def table():
    return synthetic_table(families=("int",), roles=("w", "a"), sizes=(1e7, 4e7, 1.6e8),
                           tokens_per_param=(50, 200), dense_seeds=2)


def holdout_mask(df, expr):
    from raysweep.fit.core import holdout_mask as mask  # new in the safe parser

    return mask(df, expr)


@pytest.fixture()
def no_query(monkeypatch):
    """Fail the test if anything evaluates the holdout through pandas' query/eval."""
    def refuse(*_a, **_k):
        raise AssertionError("df.query/df.eval/pd.eval must not be called for --holdout")

    monkeypatch.setattr(pd.DataFrame, "query", refuse)
    monkeypatch.setattr(pd.DataFrame, "eval", refuse)
    monkeypatch.setattr(pd, "eval", refuse)


INJECTIONS = [
    "@pd.io.common.os.system('id > {f}')",
    "n_params > 0 and @pd.io.common.os.system('id > {f}')",
    "__import__('os').system('id > {f}')",
    "n_params > __import__('os').system('id > {f}')",
    "format == `__import__('os').system('id > {f}')`",
    "n_params.__class__.__base__ == 'x' or __import__('os').system('id > {f}') == 0",
    "n_params in [__import__('os').system('id > {f}')]",
    "[__import__('os').system('id > {f}') for _ in (1,)]",
    "n_params > 1 if __import__('os').system('id > {f}') else 2",
    "lambda: __import__('os').system('id > {f}')",
]


@pytest.mark.parametrize("template", INJECTIONS)
def test_holdout_code_injection_is_a_fit_error_and_runs_nothing(table, tmp_path, template):
    target = tmp_path / "pwned"
    expr = template.format(f=target)
    with pytest.raises(FitError, match="--holdout"):
        fit_table(table, law="chinchilla", holdout=expr)
    assert not target.exists()


def test_holdout_os_system_through_the_cli_exits_2_and_creates_no_file(table, tmp_path, capsys):
    path = tmp_path / "results.csv"
    table.to_csv(path, index=False)
    target = tmp_path / "pwned"
    rc = main(["fit", str(path), "--law", "chinchilla",
               "--holdout", f"@pd.io.common.os.system('id > {target}')"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("raysweep: error: --holdout") and "\n" not in err
    assert "allowed:" in err
    assert not target.exists()


# every --holdout expression used in the repo (docs, tests, CLI contract) still works
@pytest.mark.parametrize("expr,want", [
    ("n_params > 2.5e8", lambda d: d["n_params"] > 2.5e8),
    ("n_params > 1e8", lambda d: d["n_params"] > 1e8),
    ("format == 'int2|bf16' or n_params > 1e8",
     lambda d: (d["format"] == "int2|bf16") | (d["n_params"] > 1e8)),
    ("format == 'w3a3'", lambda d: d["format"] == "w3a3"),
    ("1e8 < n_params", lambda d: d["n_params"] > 1e8),
    ("tokens >= 8e9", lambda d: d["tokens"] >= 8e9),
    ("tokens == 8e9", lambda d: d["tokens"] == 8e9),
    ("tokens != 8e9", lambda d: d["tokens"] != 8e9),
    ("n_params <= 4e7", lambda d: d["n_params"] <= 4e7),
    ("n_params < 4e7", lambda d: d["n_params"] < 4e7),
    ("1e7 < n_params <= 1.6e8", lambda d: (d["n_params"] > 1e7) & (d["n_params"] <= 1.6e8)),
    ('format in ["int2|bf16", "bf16|int2"]', lambda d: d["format"].isin(["int2|bf16",
                                                                          "bf16|int2"])),
    ("format not in ('bf16|bf16',)", lambda d: d["format"] != "bf16|bf16"),
    ("n_params > 1e8 & format == 'int4|bf16'",
     lambda d: (d["n_params"] > 1e8) & (d["format"] == "int4|bf16")),
    ("n_params < 2e7 | tokens > 1e10", lambda d: (d["n_params"] < 2e7) | (d["tokens"] > 1e10)),
    ("~(n_params > 1e8)", lambda d: ~(d["n_params"] > 1e8)),
    ("not n_params > 1e8 and not (format == 'bf16|bf16' or seed == 1)",
     lambda d: ~(d["n_params"] > 1e8) & ~((d["format"] == "bf16|bf16") | (d["seed"] == 1))),
    ("`n_params` > -1e18", lambda d: d["n_params"] > -1e18),
    ("format == ['int8|bf16', 'bf16|int8']",
     lambda d: d["format"].isin(["int8|bf16", "bf16|int8"])),
])
def test_holdout_grammar_selects_the_rows_pandas_would(table, no_query, expr, want):
    np.testing.assert_array_equal(holdout_mask(table, expr), want(table).to_numpy(bool))


def test_holdout_scores_with_the_parser_and_never_calls_query(table, no_query):
    res = fit_table(table, law="chinchilla", holdout="n_params > 1e8 and tokens > 1e10")
    held = int(((table["n_params"] > 1e8) & (table["tokens"] > 1e10)).sum())
    assert res.holdout_error["n"] == held > 0


def test_holdout_bool_column_alone(no_query):
    df = pd.DataFrame({"big": [True, False, True], "n_params": [1.0, 2.0, 3.0]})
    np.testing.assert_array_equal(holdout_mask(df, "big"), [True, False, True])
    np.testing.assert_array_equal(holdout_mask(df, "~big"), [False, True, False])
    with pytest.raises(FitError, match="not a bool column"):
        holdout_mask(df, "n_params")


def test_holdout_column_name_with_a_space_in_backticks():
    df = pd.DataFrame({"my col": [1, 2, 3]})
    np.testing.assert_array_equal(holdout_mask(df, "`my col` >= 2"), [False, True, True])


def test_holdout_unknown_column_names_it_and_lists_the_columns(table):
    with pytest.raises(FitError, match=r"unknown column 'nparams'.*'n_params'.*'tokens'") as e:
        fit_table(table, holdout="nparams > 1e8")
    assert "--holdout 'nparams > 1e8'" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(FitError, match="unknown column 'w3a3'.*quote a string"):
        holdout_mask(table, "format == w3a3")


@pytest.mark.parametrize("expr,why", [
    ("n_params >>> 3", "invalid syntax"),
    ("n_params + 1 > 3", "arithmetic"),
    ("n_params > (1).real", "attribute"),
    ("n_params > abs(-1)", "a call"),
    ("n_params[0] > 1", "a subscript"),
    ("n_params > tokens", "compare a column with a literal"),
    ("1 < 2", "column on one side"),
    ("n_params", "not a bool column"),
    ("n_params is 3", "Is"),
    ("n_params in 3", "list of literals"),
    ("'int4|bf16' in format", "column on the left"),
    ("n_params > f'{1}'", "f-string"),
    ("format == b'x'", "not a literal"),
    ("n_params == None", "not a literal"),
    ("format == 'unterminated", "unterminated string"),
    ("`n_params > 1", "unterminated"),
    ("n_params > 1\x00", "null"),
    ("not " * 200 + "n_params > 1", "nested deeper"),
])
def test_holdout_forms_outside_the_grammar_are_named(table, expr, why):
    with pytest.raises(FitError) as e:
        holdout_mask(table, expr)
    msg = str(e.value)
    assert msg.startswith("--holdout ") and why in msg, msg
    assert "\n" not in msg


def test_holdout_grammar_is_listed_in_the_error(table):
    with pytest.raises(FitError, match="allowed: COLUMN OP LITERAL.*== != < <= > >=.*in "
                                       r"\[LITERAL.*and, or, not.*&, \|, ~"):
        holdout_mask(table, "os.system('id')")


def test_holdout_type_mismatch_is_a_fit_error(table):
    with pytest.raises(FitError, match="column 'n_params'.*cannot be compared with '1e8'"):
        holdout_mask(table, "n_params > '1e8'")
    with pytest.raises(FitError, match="column 'format'.*cannot be compared with 3"):
        holdout_mask(table, "format < 3")


def test_holdout_that_selects_no_row_is_a_fit_error(table):
    with pytest.raises(FitError, match=r"--holdout 'n_params > 1e18' selects no row"):
        fit_table(table, law="chinchilla", holdout="n_params > 1e18")
    with pytest.raises(FitError, match="selects no row"):
        fit_table(table, law="chinchilla", holdout="format == 'w3a3'")


def test_holdout_that_selects_every_row_is_still_a_fit_error(table):
    with pytest.raises(FitError, match="selects every row"):
        fit_table(table, law="chinchilla", holdout="n_params > 0 | format == 'x'")
