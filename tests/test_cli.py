"""The CLI contract: bad input is one line on stderr and exit code 2."""

import subprocess
import sys

import pytest


def _run(*args):
    return subprocess.run([sys.executable, "-m", "raysweep", *args], capture_output=True,
                          text=True)


@pytest.mark.parametrize("args", [
    ("gmse",),                                   # missing SPEC
    ("train", "--size", "2x32", "--backend", "foo"),  # bad choice
    ("bogus",),                                  # unknown command
    ("gmse", "int9"),                            # RaysweepError from the command
    ("fit",),                                    # missing TABLE
])
def test_bad_input_is_one_line_and_exit_2(args):
    r = _run(*args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "error:" in lines[0]
    assert r.stdout == ""


def test_version_and_help_exit_0():
    assert _run("--version").returncode == 0
    r = _run("--help")
    assert r.returncode == 0 and "gmse" in r.stdout and "run" in r.stdout
