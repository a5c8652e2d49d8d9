"""python -m speechmerge compare-reports: cells, intervals and verdicts of two runs, hand-made."""

import pytest

from speechmerge.__main__ import main
from speechmerge.report.compare import compare_claims, compare_reports, compare_tables

HEADER = "row,model,group,wer:de,wer:de:ci_lo,wer:de:ci_hi,wer:de:p_vs_baseline,np\n"
CLAIMS = "id,verdict,effect\n"


def _report(root, table_rows, claims):
    exp = root / "multilingual"
    exp.mkdir(parents=True)
    (exp / "table.csv").write_text(HEADER + "".join(table_rows))
    (exp / "claims.csv").write_text(CLAIMS + "".join(claims))
    return root


@pytest.fixture
def two_runs(tmp_path):
    a = _report(
        tmp_path / "a",
        ["Zero-shot,zs,baseline,50.0,40.0,60.0,0.001,10.0\n", "TIES,ties,merge,30.0,25.0,35.0,0.01,40.0\n"],
        ["c1,reproduced,2.5\n", "c2,inconclusive,-1.0\n"],
    )
    b = _report(
        tmp_path / "b",
        ["Zero-shot,zs,baseline,50.0,40.0,60.0,0.001,10.0\n", "TIES,ties,merge,36.0,31.0,41.0,0.02,38.5\n"],
        ["c1,reproduced,2.0\n", "c2,contradicted,-3.0\n"],
    )
    return a, b


def test_cells_and_intervals(two_runs):
    a, b = two_runs
    t = compare_tables("multilingual", a / "multilingual/table.csv", b / "multilingual/table.csv")
    # wer:de and np of two rows; CI and p columns are not cells
    assert t.cells == 4 and t.identical == 2
    assert t.max_abs_diff == pytest.approx(6.0)
    # zero-shot: identical, inside; TIES: 36 is outside A's [25, 35] -> not within
    assert (t.with_interval, t.within) == (2, 1)
    assert t.largest[0][1:3] == ("TIES", "wer:de")


def test_verdicts_side_by_side(two_runs):
    a, b = two_runs
    rows = compare_claims(a / "multilingual/claims.csv", b / "multilingual/claims.csv")
    assert [(r["id"], r["same"]) for r in rows] == [("c1", True), ("c2", False)]
    text = compare_reports(a, b)
    assert "contradicted (changed)" in text
    assert "1 of 2 claim verdicts agree (changed: c2)." in text


def test_command_line_and_errors(two_runs, tmp_path, capsys):
    a, b = two_runs
    out = tmp_path / "cmp.md"
    assert main(["compare-reports", str(a), str(b), "--out", str(out)]) == 0
    assert "## multilingual" in out.read_text()
    assert main(["compare-reports", str(a), str(b), "--top", "0", "--labels", "fp32", "bf16", "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# bf16 (B) against fp32 (A)") and str(a) not in text
    with pytest.raises(FileNotFoundError, match="not a report folder"):
        compare_reports(a, tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no experiment with a table.csv in common"):
        compare_reports(a, tmp_path / "empty")
