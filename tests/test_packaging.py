"""Packaging: the installed layout and the light import path.

``formats/`` and ``kernels/`` must install under the ``raysweep`` namespace
(never as top-level ``formats``/``kernels``), every package directory must be
listed in pyproject.toml (setuptools does not find subpackages of a mapped
package by itself), and ``import raysweep`` / ``raysweep --help`` must import
neither torch nor ray.
"""

import subprocess
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

ROOT = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_directory_is_listed():
    tool = _pyproject()["tool"]["setuptools"]
    listed = set(tool["packages"])
    mapping = tool["package-dir"]
    assert mapping == {"raysweep.formats": "formats", "raysweep.kernels": "kernels"}
    found = set()
    for top, name in (("raysweep", "raysweep"), ("formats", "raysweep.formats"),
                      ("kernels", "raysweep.kernels")):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / top).parts
            found.add(".".join((name, *rel)))
    assert found == listed, f"unlisted: {found - listed}, stale: {listed - found}"


def test_installed_namespace_and_no_top_level_modules():
    import raysweep.formats
    import raysweep.kernels

    assert Path(raysweep.formats.__file__).parent == ROOT / "formats"
    assert Path(raysweep.kernels.__file__).parent == ROOT / "kernels"
    code = "import importlib.util as u; print(u.find_spec('formats'), u.find_spec('kernels'))"
    out = subprocess.run([sys.executable, "-c", code], cwd="/", capture_output=True,
                         text=True, check=True).stdout.split()
    assert out == ["None", "None"]


def test_import_and_help_stay_light():
    code = ("import sys, raysweep, raysweep.cli\n"
            "try:\n    raysweep.cli.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'ray', 'optuna', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip().splitlines()[-1]
    assert out == "[]"
