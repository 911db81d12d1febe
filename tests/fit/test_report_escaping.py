"""Names from the table are text in the report: a representation named ``a|b<script>``
neither breaks report.md's tables nor puts raw HTML into report.md or report.html."""

import re

import pytest

from raysweep.fit.report import _html, _markdown, make_report, markdown_table
from raysweep.fit.synthetic import synthetic_table

EVIL = "a|b<script>"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    table = synthetic_table(families=("int",), roles=("w", "a"), sizes=(1e7, 4e7, 1.6e8),
                            tokens_per_param=(50, 200), noise=0.003, seed=2, dense_seeds=2)
    table["format"] = table["format"].replace({"int4|bf16": EVIL})
    d = tmp_path_factory.mktemp("evil")
    table.to_csv(d / "results.csv", index=False)
    (d / "study.yaml").write_text("name: 'demo <img src=x onerror=alert(1)> & co'\n")
    make_report(d, bootstrap=0)
    return d


def test_report_md_escapes_names_from_the_table(study):
    md = (study / "report.md").read_text()
    assert "<script>" not in md and "<img" not in md
    assert "a\\|b&lt;script&gt;" in md  # in a table cell: | and < > escaped
    assert "# raysweep report: demo &lt;img src=x onerror=alert(1)&gt; &amp; co" in md
    rows = [line for line in md.splitlines() if "script" in line]
    assert rows and all("&lt;script&gt;" in line for line in rows)
    cells = [line for line in rows if line.startswith("| ")]
    assert cells and all("a\\|b" in line and "a|b" not in line for line in cells)


def test_report_md_tables_keep_their_columns(study):
    md = (study / "report.md").read_text()
    lines = md.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|---"):
            n = line.count("|") - 1
            j = i + 1
            while j < len(lines) and lines[j].startswith("| "):
                cells = re.split(r"(?<!\\)\|", lines[j])[1:-1]
                assert len(cells) == n, lines[j]
                j += 1


def test_report_html_escapes_names_from_the_table(study):
    page = (study / "report.html").read_text()
    assert "<script>" not in page and "<img src=x" not in page
    assert "a|b&lt;script&gt;" in page
    assert "demo &lt;img src=x onerror=alert(1)&gt; &amp; co" in page


def test_markdown_table_escapes_pipe_and_html():
    lines = markdown_table(["format", "x"], [[EVIL, "1 & 2"], ["line\nbreak", "<b>"]])
    assert lines[2] == "| a\\|b&lt;script&gt; | 1 &amp; 2 |"
    assert lines[3] == "| line break | &lt;b&gt; |"


def test_markdown_and_html_blocks_escape_every_text():
    blocks = [("h", 1, "r: <x>"), ("p", f"format {EVIL}: **ok**"), ("ul", [f"flag {EVIL}"]),
              ("table", ["format"], [[EVIL]])]
    md = _markdown(blocks, study_dir=None)
    assert "<" not in md.replace("&lt;", "")
    assert "**ok**" in md and "r: &lt;x&gt;" in md
    page = _html(blocks)
    body = page.split("<body>", 1)[1]
    assert "<script>" not in body and "<x>" not in body
    assert "<b>ok</b>" in body  # the report's own bold marker still renders


def test_html_bold_marker_from_a_name_stays_balanced():
    page = _html([("p", "format a**b: status **ok**")])
    body = page.split("<body>", 1)[1]
    assert body.count("<b>") == body.count("</b>") == 1
