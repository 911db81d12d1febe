"""`raysweep fit` input errors (unreadable table, --bootstrap < 0, --json into a missing
directory) and the modes of its output files."""

import json
import os

import pytest

from raysweep.cli import main
from raysweep.fit.synthetic import synthetic_table


@pytest.fixture(scope="module")
def exact():
    """Noise-free rows from the known law: dense and int formats at every (N, D)."""
    return synthetic_table(families=("int",), roles=("w", "a", "wa"), sizes=(3e7, 1e8, 3e8),
                           tokens_per_param=(20, 100), noise=0.0, seed=1)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("raysweep: error:") and "\n" not in err, err
    return err


@pytest.mark.parametrize("name,content", [("bad.parquet", b"not a parquet file at all"),
                                          ("bad.csv", b"\xff\xfe\x00garbage\x00\x81\n\x00")])
def test_fit_unreadable_table_exits_2(tmp_path, capsys, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    assert main(["fit", str(path)]) == 2
    assert name in _one_line_error(capsys)


def test_fit_negative_bootstrap_and_missing_json_dir(exact, tmp_path, capsys):
    path = tmp_path / "results.csv"
    exact.to_csv(path, index=False)
    assert main(["fit", str(path), "--bootstrap", "-3"]) == 2
    assert "--bootstrap" in _one_line_error(capsys)
    out = tmp_path / "nodir" / "fit.json"
    assert main(["fit", str(path), "--law", "chinchilla", "--json", str(out)]) == 2
    assert str(tmp_path / "nodir") in _one_line_error(capsys)
    assert not (tmp_path / "nodir").exists()


def test_fit_json_is_group_and_other_readable(exact, tmp_path, capsys):
    path = tmp_path / "results.csv"
    exact.to_csv(path, index=False)
    out = tmp_path / "fit.json"
    old = os.umask(0o022)
    try:
        assert main(["fit", str(path), "--law", "chinchilla", "--json", str(out)]) == 0
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o044 == 0o044
    assert json.loads(out.read_text())["law"] == "chinchilla"
