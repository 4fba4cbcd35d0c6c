"""ToTTo (Parikh et al. 2020): a Wikipedia table with highlighted cells -> one sentence.

Official format: JSONL, one example per line, keys `table` (rows of cells `{value, is_header, column_span,
row_span}`), `table_page_title`, `table_section_title`, `highlighted_cells` ([row, index of the cell in that
row]), `example_id`, `sentence_annotations` ([{..., final_sentence}]).

Linearisation: the ToTTo paper's highlighted-subtable format (language/totto baseline preprocessing, with
headers), highlighted cells sorted by (row, cell index):

    <page_title> P </page_title> <section_title> S </section_title> <table> <cell> v <col_header> h
    </col_header> <row_header> r </row_header> </cell> ... </table>

Headers are found on the table's real grid: cells are placed as in HTML (respecting both column_span and
row_span), a cell's column headers are the header cells of earlier rows whose columns overlap its columns, and
its row headers are the header cells to its left on the same grid row. (The official heuristic ignores
row_span, which misaligns rows below a row-spanning cell; the grid fixes that.) Repeated header values are kept
once. `table_section_text` is not used (as in the paper's default).

`meta.table` (:func:`table_key`: page URL and section title) names the table, what a dev slice held out of
train keeps whole (`dev_group`).
References: every `final_sentence` (3 in dev, 1 in train); target = the first. The official test file has no
annotations and is rejected with a clear error (use the dev file as test).
Ids: `totto-<split>-<example_id>`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from iclpt.data.tasks.base import DownloadSpec, RemoteFile, Task, check_split, make_record, one_line
from iclpt.io import DataError, read_jsonl


def _grid(table: list[list[dict[str, Any]]], where: str) -> tuple[dict, dict]:
    """Place cells on the grid. Returns {(row, cell_index): (col_start, col_end)} and {(row, col): (r, i)}."""
    spans: dict[tuple[int, int], tuple[int, int]] = {}
    occupied: dict[tuple[int, int], tuple[int, int]] = {}
    for r, row in enumerate(table):
        c = 0
        for i, cell in enumerate(row):
            while (r, c) in occupied:
                c += 1
            try:
                cs = max(1, int(cell.get("column_span", 1) or 1))
                rs = max(1, int(cell.get("row_span", 1) or 1))
            except (TypeError, ValueError, AttributeError):
                raise DataError(f"{where}: malformed table cell at row {r}, cell {i}: {cell!r}") from None
            spans[(r, i)] = (c, c + cs)
            for dr in range(rs):
                for dc in range(cs):
                    occupied.setdefault((r + dr, c + dc), (r, i))
            c += cs
    return spans, occupied


def _dedupe(values: list[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for v in values:
        if v and v not in seen:
            seen.add(v)
            out.append(v)
    return out


def linearize(example: dict[str, Any], where: str = "<totto>") -> str:
    table = example.get("table")
    if not isinstance(table, list):
        raise DataError(f"{where}: `table` must be a list of rows")
    spans, occupied = _grid(table, where)
    parts = [
        f"<page_title> {one_line(example.get('table_page_title', ''))} </page_title>",
        f"<section_title> {one_line(example.get('table_section_title', ''))} </section_title>",
        "<table>",
    ]
    cells = example.get("highlighted_cells") or []
    for rc in sorted(tuple(x) for x in cells):
        if len(rc) != 2:
            raise DataError(f"{where}: malformed highlighted cell {list(rc)}")
        r, i = int(rc[0]), int(rc[1])
        if not (0 <= r < len(table) and 0 <= i < len(table[r])):
            raise DataError(f"{where}: highlighted cell [{r}, {i}] is outside the table")
        start, end = spans[(r, i)]
        col_headers = []
        for (hr, hi), (hs, he) in sorted(spans.items()):
            if hr >= r:
                break
            h = table[hr][hi]
            if h.get("is_header") and hs < end and he > start:
                col_headers.append(one_line(h.get("value")))
        row_headers = []
        prev = None
        for c in range(start):
            owner = occupied.get((r, c))
            if owner is None or owner == prev:
                continue
            prev = owner
            h = table[owner[0]][owner[1]]
            if h.get("is_header"):
                row_headers.append(one_line(h.get("value")))
        item = f"<cell> {one_line(table[r][i].get('value'))}"
        for h in _dedupe(col_headers):
            item += f" <col_header> {h} </col_header>"
        for h in _dedupe(row_headers):
            item += f" <row_header> {h} </row_header>"
        parts.append(item + " </cell>")
    parts.append("</table>")
    return " ".join(parts)


def table_key(example: dict[str, Any]) -> str:
    """The table an example annotates: its page (`table_webpage_url`, else `table_page_title`) and section
    (`table_section_title`). ToTTo has no table id; examples of one table share these, and two tables of one
    section share the key, which only makes a held-out group larger, never splits a table."""
    page = one_line(example.get("table_webpage_url")) or one_line(example.get("table_page_title"))
    return f"{page} | {one_line(example.get('table_section_title'))}"


class ToTTo(Task):
    name = "totto"
    version = "1"
    metrics = ["bleu"]
    max_new_tokens = 64
    input_label = "Table"
    output_label = "Sentence"
    description = "highlighted table cells (+ page and section title) -> one sentence"
    published_sizes = {"test": 7700}
    dev_group = "table"  # a dev slice held out of train takes whole tables (meta.table, see table_key)
    demo_files = {"train": "totto/train.jsonl", "dev": "totto/dev.jsonl", "test": "totto/test.jsonl"}
    download = DownloadSpec("totto", (
        RemoteFile("https://storage.googleapis.com/totto-public/totto_data.zip", "totto_data.zip", archive="zip"),
    ), note="official ToTTo release (CC BY-SA 3.0)")

    def load(self, split: str, path: Path, **ctx: Any) -> list[dict[str, Any]]:
        check_split(split)
        rows = read_jsonl(path, required=("table", "highlighted_cells", "example_id"))
        records = []
        with Path(path).open("rb") as fh:  # line numbers of the non-empty lines, for messages (as read_jsonl)
            linenos = [n for n, line in enumerate(fh, start=1) if line.strip()]
        for lineno, row in zip(linenos, rows):
            where = f"{path}:{lineno}"
            anns = row.get("sentence_annotations") or []
            if not isinstance(anns, list) or not all(isinstance(a, dict) for a in anns):
                raise DataError(f"{where}: `sentence_annotations` must be a list of objects")
            refs = [a.get("final_sentence", "") for a in anns]
            if not any(one_line(r) for r in refs):
                raise DataError(
                    f"{where}: ToTTo example {row['example_id']} has no final_sentence (the official test "
                    "file is unlabelled; use the dev file as the test split)"
                )
            rid = f"totto-{split}-{row['example_id']}"
            meta = {"example_id": str(row["example_id"]), "page_title": one_line(row.get("table_page_title")),
                    "table": table_key(row)}
            records.append(make_record("totto", split, rid, linearize(row, where), refs, meta, where=where))
        return records


TASK = ToTTo()
