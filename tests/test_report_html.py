"""The report's Markdown rendered to HTML for snakemake --report (speechmerge.report.html)."""

import pytest

from speechmerge.report.html import inline, markdown_to_html, write_html_tables

MD = """# Report: x

**x: main table**

| Method | WER↓ | BLEU↑ |
|---|---:|:---:|
| Zero-shot | **10.00** | 1.0 |
|  |  |  |
| TIES <b> | 9.50† | – |

* Bold: best in column; `table.csv` has
  the intervals.
- second item

A paragraph
over two lines.
"""


def test_tables_lists_and_paragraphs():
    page = markdown_to_html(MD, "x: README")
    assert page.startswith("<!DOCTYPE html>") and "<title>x: README</title>" in page
    assert "<h1>Report: x</h1>" in page
    assert "<p><strong>x: main table</strong></p>" in page
    assert '<th>Method</th>\n<th class="r">WER↓</th>\n<th class="c">BLEU↑</th>' in page
    assert '<td class="r"><strong>10.00</strong></td>' in page
    assert '<tr class="sep"><td colspan="3"></td></tr>' in page  # the group separator row
    assert "<td>TIES &lt;b&gt;</td>" in page  # escaped, never raw HTML
    assert page.count("<tr>") == 3  # header + two data rows
    assert (
        "<ul><li>Bold: best in column; <code>table.csv</code> has the intervals.</li><li>second item</li></ul>"
    ) in page
    assert "<p>A paragraph over two lines.</p>" in page


def test_inline():
    assert inline("a `x*y*` **b** *c* 2*3*4") == "a <code>x*y*</code> <strong>b</strong> <em>c</em> 2*3*4"
    assert inline("<&>") == "&lt;&amp;&gt;"


def test_write_html_tables(tmp_path):
    src = tmp_path / "report" / "exp"
    src.mkdir(parents=True)
    (src / "table.md").write_text(MD)
    (src / "README.md").write_text("# R\n")
    (src / "table.csv").write_text("a,b\n")
    out = tmp_path / "html" / "exp"
    pages = write_html_tables(src, out)
    assert sorted(p.name for p in pages) == ["README.html", "table.html"]
    assert sorted(p.name for p in out.iterdir()) == ["README.html", "table.html"]
    with pytest.raises(FileNotFoundError, match="no Markdown files"):
        write_html_tables(tmp_path / "html", tmp_path / "none")
    assert not (tmp_path / "none").exists()


def test_claims_page_shows_the_verdict_next_to_the_claim():
    """The claim column wraps (it would push the verdict off screen); the verdict follows it."""
    from speechmerge.report.claims import ClaimResult, to_markdown

    result = ClaimResult(
        id="x",
        paper="P",
        arxiv="1",
        claim="A long claim of a paper, stated in this repository's words, that takes a whole line or more.",
        comparison="A vs B",
        metric="WER points",
        test="superiority",
        effect=1.5,
        ci_lo=0.5,
        ci_hi=2.5,
        p_value=0.01,
        n=10,
        n_unit="utterances",
        verdict="reproduced",
    )
    md = to_markdown([result], "x: claims", n_boot=10, seed=0)
    header = next(line for line in md.splitlines() if line.startswith("| Claim"))
    assert [c.strip() for c in header.strip("|").split("|")][:2] == ["Claim", "Verdict"]
    page = markdown_to_html(md, "x: claims")
    row = next(line for line in page.splitlines() if "A long claim" in line)
    assert row.startswith('<tr><td class="w">A long claim') and "<strong>reproduced</strong>" in row.split("</td>")[1]
