"""Nothing lost, nothing trained twice: the study directory's lock, the registry as the
source of truth, and everything validated before Ray starts or a file is written.

These run without Ray: a study whose trials are all done never starts one, and every
refusal happens before it would.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
import warnings

import pytest
import yaml

from raysweep.cli import main
from raysweep.errors import RaysweepError
from raysweep.results import read_table, write_table
from raysweep.sweep.registry import Registry, RegistryWarning, StudyLock, reconcile
from raysweep.sweep.run import run_study, status_summary
from raysweep.sweep.runners import run_trial
from raysweep.sweep.study import parse_study
from raysweep.sweep.trials import expand

BASE = {"version": 1, "name": "safe", "backend": "simulated", "sizes": ["2x32", "2x48"],
        "tokens_per_param": [10, 20], "representations": [{"name": "dense"},
                                                         {"name": "w4", "weights": "int4"}]}


def study_file(tmp_path, **over) -> str:
    p = tmp_path / "study.yaml"
    p.write_text(yaml.safe_dump({**BASE, **over}))
    return str(p)


def finished_rows(study) -> list[dict]:
    return [run_trial(t) for t in expand(study)]


# ---------------------------------------------------------------- one writer


HOLDER = textwrap.dedent("""
    import sys, time
    from raysweep.sweep.registry import StudyLock
    with StudyLock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(60)
""")


def test_second_run_on_a_study_dir_exits_2_naming_the_holder(tmp_path, capsys):
    path = study_file(tmp_path)
    sdir = tmp_path / "out" / "safe"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(sdir)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        rc = main(["run", path, "--out", str(tmp_path / "out"), "--no-report"])
        err = capsys.readouterr().err
        assert rc == 2 and f"pid {holder.pid}" in err and err.count("\n") == 1
        assert not (sdir / "registry.jsonl").exists() and not (sdir / "study.yaml").exists()
        # readers never take the lock
        assert main(["status", path, "--out", str(tmp_path / "out"), "--json"]) == 0
        assert main(["plan", path, "--json"]) == 0
    finally:
        holder.kill()
        holder.wait()
    with StudyLock(sdir):  # the kernel dropped the dead holder's lock
        pass


def test_lock_is_reentrant_in_one_process_and_exclusive_across(tmp_path):
    with StudyLock(tmp_path), StudyLock(tmp_path):
        code = ("import sys\nfrom raysweep.sweep.registry import StudyLock\n"
                "try:\n    StudyLock(sys.argv[1]).__enter__()\nexcept Exception as e:\n"
                "    print(type(e).__name__, e)\n")
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                             text=True).stdout
        assert out.startswith("RaysweepError") and f"pid {os.getpid()}" in out


# ---------------------------------------------------------------- the registry is the truth


def test_a_table_without_its_registry_is_imported_not_overwritten(tmp_path):
    study = parse_study(BASE, "<safe>")
    sdir = tmp_path / "safe"
    write_table(sdir, finished_rows(study))  # 8 rows, and no registry.jsonl
    with pytest.warns(RegistryWarning, match="imported 8 rows"):
        res = run_study(study, tmp_path, stream=sys.stderr)  # all done: no Ray needed
    assert res["already_done"] == 8 and res["finished"] == 0
    assert len(read_table(sdir / "results.parquet")) == 8
    assert len(Registry(sdir).done_rows()) == 8
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second run imports nothing
        assert reconcile(sdir) == 0


def test_an_unreadable_table_stops_the_run_before_anything_is_rewritten(tmp_path):
    study = parse_study(BASE, "<safe>")
    sdir = tmp_path / "safe"
    sdir.mkdir()
    (sdir / "results.parquet").write_bytes(b"not parquet")
    with pytest.raises(RaysweepError, match="so as not to overwrite it"):
        run_study(study, tmp_path, stream=sys.stderr)
    assert (sdir / "results.parquet").read_bytes() == b"not parquet"
    assert not (sdir / "study.yaml").exists()


def _write_registry(sdir, lines: list[bytes]) -> None:
    sdir.mkdir(parents=True, exist_ok=True)
    (sdir / "registry.jsonl").write_bytes(b"".join(lines))


def test_invalid_records_are_skipped_with_a_warning_naming_the_line(tmp_path):
    good = json.dumps({"run_id": "a", "status": "ok", "row": {"run_id": "a", "loss": 2.0}})
    _write_registry(tmp_path, [
        good.encode() + b"\n",
        json.dumps({"run_id": "b", "status": "ok", "row": None}).encode() + b"\n",
        b'{"run_id": "c", "status": "ok", "row": {"loss": 1.0, "x": "\xff"}}\n',
        json.dumps(["not", "a", "record"]).encode() + b"\n",
        json.dumps({"run_id": "d", "status": "failed", "error": "boom", "row": None}).encode()
        + b"\n",
    ])
    with pytest.warns(RegistryWarning) as got:
        state = Registry(tmp_path).state()
    assert sorted(state) == ["a", "d"]
    lines = sorted(str(w.message).split(":")[1] for w in got)
    assert lines == ["2", "3", "4"]  # the null row, the non-UTF-8 byte, the list
    with pytest.warns(RegistryWarning):
        assert Registry(tmp_path).done_rows() == {"a": {"run_id": "a", "loss": 2.0}}


def test_a_symlinked_or_directory_registry_is_refused_in_one_line(tmp_path):
    target = tmp_path / "elsewhere.jsonl"
    target.write_text("")
    sdir = tmp_path / "s"
    sdir.mkdir()
    (sdir / "registry.jsonl").symlink_to(target)
    reg = Registry(sdir)
    with pytest.raises(RaysweepError, match="symbolic link"):
        reg.append("x", "ok", {"run_id": "x"})
    with pytest.raises(RaysweepError, match="symbolic link"):
        reg.records()
    assert target.read_text() == ""  # nothing written through the link
    (sdir / "registry.jsonl").unlink()
    (sdir / "registry.jsonl").mkdir()
    with pytest.raises(RaysweepError, match="is a directory"):
        reg.records()


def test_status_counts_rows_not_csv_lines(tmp_path):
    study = parse_study(BASE, "<safe>")
    rows = finished_rows(study)
    rows[0]["error"] = "line one\nline two"  # a quoted newline: one row, two csv lines
    sdir = tmp_path / "safe"
    for r in rows:
        Registry(sdir).append(r["run_id"], "ok", r)
    write_table(sdir, rows)
    assert status_summary(study, tmp_path)["rows_in_table"] == 8


def test_renamed_representations_are_new_trials_and_old_rows_count_as_extra(tmp_path):
    study = parse_study(BASE, "<safe>")  # record its rows, then rename a representation
    sdir = tmp_path / "safe"
    for r in finished_rows(study):
        Registry(sdir).append(r["run_id"], "ok", r)
    renamed = parse_study({**BASE, "representations": [{"name": "dense"},
                                                       {"name": "int4-w", "weights": "int4"}]},
                          "<safe>")
    old = {t["run_id"] for t in expand(study)}
    new = {t["run_id"] for t in expand(renamed)}
    assert len(old - new) == 4  # the label is part of the run id: the renamed trials are new
    s = status_summary(renamed, tmp_path)
    assert s["extra_in_registry"] == 4 and s["pending"] == 4


# ---------------------------------------------------------------- validated before anything


@pytest.mark.parametrize("over,needle", [
    ({"search": {"strategy": "active", "batch": 0}}, r"search\.batch: got 0"),
    ({"search": {"strategy": "active", "budget_fraction": 2}}, r"search\.budget_fraction"),
    ({"representations": [{"name": "w4", "weights": "int4", "estimator": "bogus"}]},
     r"representations\[0\]\.estimator: got 'bogus'"),
    ({"seeds": [2**64]}, r"seeds\[0\]: got 18446744073709551616: out of range"),
    ({"simulated": {"noise": 1e6}}, r"simulated\.noise: got 1000000\.0: out of range"),
    ({"version": True}, r"version: got True"),
    ({"tokens_per_param": None, "tokens": [1e300]}, r"tokens\[0\]: got 1e\+300: out of range"),
    ({"representations": [{"grid": {"weights": "int{}", "b": [4]}}]}, r"placeholder \{\}"),
    ({"representations": [{"grid": {"weights": "int}", "b": [4]}}]}, r"not a template"),
    ({"name": "x" * 300}, r"name: got 'x"),
])
def test_bad_studies_fail_at_load_in_plan_and_run_alike(tmp_path, capsys, over, needle):
    path = study_file(tmp_path, **over)
    out = tmp_path / "out"
    for cmd in (["plan", path], ["run", path, "--out", str(out)]):
        assert main(cmd) == 2, cmd
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and re.search(needle, err), (cmd, err)
    assert not out.exists()  # nothing written


def test_scientific_notation_is_a_number_in_every_field(tmp_path):
    text = (yaml.safe_dump({**BASE, "tokens_per_param": None}) +
            "tokens: [2e4, 4E+4]\nsearch: {strategy: active, budget_flops: 1e18}\n"
            "simulated: {noise: 1e-2}\n")
    p = tmp_path / "s.yaml"
    p.write_text(text)
    from raysweep.sweep.study import load_study

    s = load_study(p)
    assert s.tokens == (20000, 40000) and s.search["budget_flops"] == 1e18
    assert s.simulated.noise == 0.01


@pytest.mark.parametrize("key,value", [("cpu", (os.cpu_count() or 1) + 1), ("gpu", 64)])
def test_a_request_above_the_machine_is_refused_before_ray(tmp_path, capsys, key, value):
    path = study_file(tmp_path, resources={key: value})
    assert main(["run", path, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"resources.{key}" in err and "this machine has" in err
    assert not (tmp_path / "out").exists()
    assert main(["plan", path, "--json"]) == 0  # plan says the same, and still plans
    assert f"resources.{key}" in json.loads(capsys.readouterr().out)["local_problem"]


def test_alias_bombs_and_non_utf8_studies_are_one_line_errors(tmp_path, capsys):
    bomb = "".join(f"{c}: &{c} [{', '.join(['*' + p] * 9) if p else ', '.join('x' * 9)}]\n"
                   for p, c in zip([None, *"abcdefgh"], "abcdefghi"))
    (tmp_path / "bomb.yaml").write_text(bomb + "description: *i\n")
    t0 = time.monotonic()
    assert main(["plan", str(tmp_path / "bomb.yaml")]) == 2
    assert "alias" in capsys.readouterr().err and time.monotonic() - t0 < 10
    (tmp_path / "bad.yaml").write_bytes(b"version: 1\nname: caf\xe9\n")
    assert main(["plan", str(tmp_path / "bad.yaml")]) == 2
    assert "not UTF-8" in capsys.readouterr().err


def test_bad_run_options_are_one_line_errors(tmp_path, capsys):
    path = study_file(tmp_path)
    (tmp_path / "afile").write_text("")
    assert main(["run", path, "--out", str(tmp_path / "afile")]) == 2
    assert "--out" in capsys.readouterr().err
    assert main(["run", path, "--out", str(tmp_path / "o"), "--max-concurrent", "0"]) == 2
    assert "--max-concurrent" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_status_into_a_closed_pipe_is_quiet(tmp_path):
    """`raysweep status | head -1`: the reader is gone before the first write (deterministic:
    the pipe's read end is closed before the command starts)."""
    path = study_file(tmp_path)
    r, w = os.pipe()
    os.close(r)
    try:
        res = subprocess.run([sys.executable, "-m", "raysweep", "status", path, "--out",
                              str(tmp_path)], stdout=w, stderr=subprocess.PIPE, text=True)
    finally:
        os.close(w)
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr and "BrokenPipe" not in res.stderr


def test_plan_of_a_huge_grid_is_refused_quickly(tmp_path, capsys):
    path = study_file(tmp_path, tokens_per_param=list(range(1, 501)), seeds=list(range(200)))
    t0 = time.monotonic()
    assert main(["plan", path]) == 2
    assert "RAYSWEEP_MAX_TRIALS" in capsys.readouterr().err and time.monotonic() - t0 < 10


def test_a_missing_corpus_is_refused_before_anything_starts(tmp_path, capsys):
    path = study_file(tmp_path, backend="train", data=str(tmp_path / "nowhere"))
    assert main(["run", path, "--out", str(tmp_path / "out")]) == 2
    assert "data: got" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_dashboard_without_the_extra_names_it(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "aiohttp" else real(name, *a))
    path = study_file(tmp_path)
    assert main(["run", path, "--out", str(tmp_path / "out"), "--dashboard"]) == 2
    err = capsys.readouterr().err
    assert "[dashboard]" in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_a_full_disk_is_one_line_and_publishes_nothing_half_written(tmp_path, capsys,
                                                                     monkeypatch):
    import errno

    import raysweep.atomic as atomic

    def full(path, write):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(atomic, "atomic_write", full)
    from raysweep.fit.synthetic import synthetic_table

    table = tmp_path / "t.csv"
    synthetic_table(families=("int",)).to_csv(table, index=False)
    assert main(["fit", str(table), "--law", "chinchilla", "--json",
                 str(tmp_path / "fit.json")]) == 2
    err = capsys.readouterr().err
    assert "no space left" in err and err.count("\n") == 1
    assert not (tmp_path / "fit.json").exists()


def test_absurd_model_sizes_are_refused_by_raysweep_train(capsys):
    assert main(["train", "--size", "100000x64", "--tokens", "100"]) == 2
    assert "n_layers <= 512" in capsys.readouterr().err
    assert main(["train", "--size", "2x32", "--set", "batch_size=1000000000"]) == 2
    assert "batch_size" in capsys.readouterr().err
