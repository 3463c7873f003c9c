"""HTML pages of the result tables and the claims report, for ``snakemake --report``.

Snakemake's HTML report shows images, PDFs and HTML pages inline and offers every other file
only as a download. The win-rate table, the paired comparisons and the claims report are
therefore also rendered here as small self-contained HTML pages (inline CSS, no scripts, no
external resources) that the report embeds. The pages are views: every number in them comes
from the Markdown/CSV outputs they are rendered from.
"""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd
from markdown_it import MarkdownIt

from .io import write_text

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; font-size: 14px; color: #1f2933;
       margin: 1.5em; max-width: 80em; line-height: 1.45; }
h1 { font-size: 1.35em; margin-top: 0; }
p.note { color: #52606d; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #cbd2d9; padding: 0.3em 0.6em; vertical-align: top; }
th { background: #f0f4f8; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr:nth-child(even) td { background: #fafbfc; }
code { background: #f0f4f8; padding: 0 0.2em; }
"""

COMPARISONS_NOTE = (
    "Each variant's win rate against the SFT model minus its baseline's (figure 4's panels), at each run's final "
    "judged step and at its best one, with a hierarchical bootstrap interval over seeds and prompts (seeds paired "
    "where both runs have them) and its minimum detectable effect (mde). The verdict is 'better' or 'worse' when "
    "the interval excludes 0, 'no difference' when it lies within +-mde, else 'inconclusive'."
)

COPO_NOTE = (
    "Each Coordinated-PO run (a run with a controller): its cost (controller time as a fraction of its training "
    "time, and the number of G measurements), the weights it ended with, and its final win rate minus its "
    "baseline's and minus the best fixed variant's of its panel, with the same paired intervals, mde and verdicts "
    "as the paired comparisons."
)


def page(title: str, body_html: str) -> str:
    """A complete HTML document with the shared inline style."""
    head = f'<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n<style>{STYLE}</style>'
    return f'<!DOCTYPE html>\n<html lang="en">\n<head>\n{head}\n</head>\n<body>\n{body_html}\n</body>\n</html>\n'


def markdown_to_html(text: str) -> str:
    """CommonMark with GitHub-style tables (the format of ``winrates.md`` and ``claims.md``)."""
    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)


def frame_to_html(frame: pd.DataFrame, digits: int = 3) -> str:
    """A table with numbers right-aligned and floats rounded to ``digits`` decimals."""
    header = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for record in frame.itertuples(index=False):
        cells = []
        for value in record:
            if isinstance(value, (float, np.floating)):
                cells.append(f'<td class="num">{"" if pd.isna(value) else f"{value:.{digits}f}"}</td>')
            elif isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
                cells.append(f'<td class="num">{value}</td>')
            else:
                cells.append(f"<td>{html.escape(str(value))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table>\n<thead><tr>{header}</tr></thead>\n<tbody>\n" + "\n".join(rows) + "\n</tbody>\n</table>"


def markdown_page(markdown_file: Path, title: str, note: str = "") -> str:
    """A Markdown output as an HTML page, headed by ``title`` unless it has a heading; ``note`` is shown above it."""
    text = Path(markdown_file).read_text()
    heading = "" if text.lstrip().startswith("# ") else f"<h1>{html.escape(title)}</h1>\n"
    intro = f'<p class="note">{html.escape(note)}</p>\n' if note else ""
    return page(title, heading + intro + markdown_to_html(text))


def csv_page(csv_file: Path, title: str, note: str = "", empty: str = "") -> str:
    """A CSV output as an HTML page with a heading and an explanatory note; ``empty`` says why it has no rows."""
    frame = pd.read_csv(csv_file)
    body = f"<h1>{html.escape(title)}</h1>\n"
    if note:
        body += f'<p class="note">{html.escape(note)}</p>\n'
    body += frame_to_html(frame) if not frame.empty else f"<p>No rows: {html.escape(empty)}</p>"
    return page(title, body)


def write_report_pages(*, winrates: Path, comparisons: Path, copo: Path, claims: Path, out: Path) -> None:
    """``winrates.html``, ``comparisons.html``, ``copo.html`` and ``claims.html`` in ``out``, from the win-rate
    table (``tables/winrates.md``), the paired comparisons (``tables/comparisons.csv``), Coordinated PO's table
    (``tables/copo.csv``) and ``claims.md``."""
    out_dir = Path(out)
    winrates_note = (
        "Final and best judged step of every run: win rate against the SFT model (mean over seeds), the "
        "t-interval across seeds (empty with one seed) and the bootstrap interval over prompts."
    )
    write_text(out_dir / "winrates.html", markdown_page(winrates, "Win rates against SFT", winrates_note))
    no_pairs = "none of figure 4's panels has both its baseline and a variant."
    comparisons_page = csv_page(comparisons, "Paired comparisons with the baselines", COMPARISONS_NOTE, no_pairs)
    write_text(out_dir / "comparisons.html", comparisons_page)
    no_controller = "no run of this experiment has a controller (runs.<name>.controller)."
    write_text(out_dir / "copo.html", csv_page(copo, "Coordinated PO", COPO_NOTE, no_controller))
    write_text(out_dir / "claims.html", markdown_page(claims, "Paper claims"))
