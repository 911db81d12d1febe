"""`raysweep fit` input checks: ``--json`` at a directory, ``--share-family`` with a
family not in the table, an absurd loss in an ``ok`` row: one-line FitErrors."""

import numpy as np
import pytest

from raysweep.cli import main
from raysweep.errors import FitError
from raysweep.fit import fit_table
from raysweep.fit.synthetic import synthetic_table


@pytest.fixture(scope="module")
def table():
    return synthetic_table(families=("int", "noise"), roles=("w", "a"), sizes=(1e7, 4e7, 1.6e8),
                           tokens_per_param=(50, 200), dense_seeds=2)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("raysweep: error:") and "\n" not in err, err
    return err


def test_fit_json_at_an_existing_directory_is_a_one_line_error(table, tmp_path, capsys):
    path = tmp_path / "results.csv"
    table.to_csv(path, index=False)
    out = tmp_path / "outdir"
    out.mkdir()
    assert main(["fit", str(path), "--law", "chinchilla", "--json", str(out)]) == 2
    err = _one_line_error(capsys)
    assert f"--json {str(out)!r}: is a directory; allowed: a file path" in err
    assert list(out.iterdir()) == []
    assert "law chinchilla" not in capsys.readouterr().out  # refused before fitting


def test_write_json_refuses_a_directory(tmp_path):
    from raysweep.fit.cli import write_json

    with pytest.raises(FitError, match="is a directory"):
        write_json(tmp_path, {"a": 1}, mkdir=False)


@pytest.mark.parametrize("item,bad", [("int=bogus", "bogus"), ("bogus=int", "bogus"),
                                      ("fp=int", "fp")])
def test_share_family_not_in_the_table_is_named(table, tmp_path, capsys, item, bad):
    path = tmp_path / "results.csv"
    table.to_csv(path, index=False)
    assert main(["fit", str(path), "--share-family", item]) == 2
    err = _one_line_error(capsys)
    assert f"--share-family {item}: family {bad!r} is not in the table" in err
    assert "['int', 'noise']" in err


def test_share_family_python_api_checks_too(table):
    with pytest.raises(FitError, match=r"family 'bogus' is not in the table; allowed: the "
                                       r"table's families \['int', 'noise'\]"):
        fit_table(table, law="unified", share={"noise": "bogus"})


def test_share_family_onto_a_shared_family_is_refused(table):
    with pytest.raises(FitError, match="'int' is itself shared onto 'noise'"):
        fit_table(table, law="unified", share={"noise": "int", "int": "noise"})


def test_share_family_on_a_dense_only_table_says_there_is_none(table):
    dense = table[table["format"] == "bf16|bf16"]
    with pytest.raises(FitError, match="no compressed rows"):
        fit_table(dense, law="chinchilla", share={"noise": "int"})


def test_share_family_present_still_fits(table):
    res = fit_table(table, law="unified", share={"noise": "int"})
    assert set(res.capacity) == {"int"}


@pytest.mark.parametrize("bad", [1e300, 1e7])
def test_absurd_loss_is_an_error_naming_the_run(table, bad):
    df = table.copy()
    df.loc[7, "loss"] = bad
    with pytest.raises(FitError, match=r"column 'loss'.*absurd loss above 1e\+06.*syn00007") as e:
        fit_table(df, law="chinchilla")
    assert repr(bad) in str(e.value) and "\n" not in str(e.value)


def test_absurd_loss_in_a_failed_run_is_left_out(table):
    df = table.copy()
    df.loc[7, "loss"] = 1e300
    df.loc[7, "status"] = "diverged"
    res = fit_table(df, law="chinchilla")
    assert any("status != 'ok'" in n for n in res.notes)


@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_infinite_loss_is_an_error(table, bad):
    df = table.copy()
    df.loc[3, "loss"] = bad
    with pytest.raises(FitError, match="'loss' must be positive and finite.*syn00003"):
        fit_table(df, law="chinchilla")


def test_absurd_loss_through_the_cli(table, tmp_path, capsys):
    df = table.copy()
    df.loc[7, "loss"] = 1e300
    path = tmp_path / "results.csv"
    df.to_csv(path, index=False)
    assert main(["fit", str(path)]) == 2
    assert "syn00007" in _one_line_error(capsys)
