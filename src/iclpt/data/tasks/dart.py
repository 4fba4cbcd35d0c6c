"""DART (Nan et al. 2021): an RDF triple set -> text.

Official formats, both read:
- JSON (`dart-v1.1.1-full-*.json`): a list of `{"tripleset": [[s, p, o], ...], "subtree_was_extended": bool,
  "annotations": [{"source", "text"}, ...]}`.
- XML (`dart-v1.1.1-full-test.xml`, WebNLG style): `<entry eid=...>` with `<modifiedtripleset><mtriple>s | p | o
  </mtriple>...` and one or more `<lex comment=source lid=...>text</lex>`.
The format is chosen by the file suffix (`.xml` -> XML, anything else -> JSON).

Linearisation: each triple as `subject | predicate | object`, triples joined with ` ; ` in file order, e.g.
`Everything Man | TIME | 3:16 ; Everything Man | ARTIST | Fair to Midland`.

Records: in `train`, one record per annotation (several training pairs of one entry share `meta.group`, the
entry id `dart-train-<entry index>`; record ids `dart-train-<entry index>-<annotation index>`); in `dev` /
`test`, one record per entry (`dart-<split>-<entry index>`) with ALL annotation texts as references and the
first as target. Empty annotation texts (e.g. `<lex ... />`; one of the 1,269 `<lex>` of the offline
test.xml sample) are dropped and counted in `meta.empty_references`; an entry with none is skipped in train
(listed in prepare.json's `excluded`) and is an error in dev/test. `meta.eid` keeps the XML entry id.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from iclpt.data.tasks.base import (
    DownloadSpec,
    RemoteFile,
    Task,
    check_split,
    make_id,
    make_record,
    one_line,
    require_file,
)
from iclpt.io import DataError, read_json

_DART_URL = "https://raw.githubusercontent.com/Yale-LILY/dart/master/data/v1.1.1/"


def linearize(triples: list[list[str]]) -> str:
    return " ; ".join(" | ".join(one_line(x) for x in t) for t in triples)


def _read_json_entries(path: Path) -> list[dict[str, Any]]:
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of DART entries, got {type(data).__name__}")
    entries = []
    for n, e in enumerate(data):
        where = f"{path}: entry {n}"
        if not isinstance(e, dict) or "tripleset" not in e or "annotations" not in e:
            raise DataError(f"{where}: expected an object with `tripleset` and `annotations`")
        triples = e["tripleset"]
        if not isinstance(triples, list) or not all(isinstance(t, list) and len(t) == 3
                                                    and all(isinstance(x, str) for x in t) for t in triples):
            raise DataError(f"{where}: `tripleset` must be a list of [subject, predicate, object] strings")
        anns = e["annotations"]
        if isinstance(anns, dict):  # HF parquet layout {source: [...], text: [...]}
            anns = [{"source": s, "text": t} for s, t in zip(anns.get("source", []), anns.get("text", []))]
        if not isinstance(anns, list) or not all(isinstance(a, dict) for a in anns):
            raise DataError(f"{where}: `annotations` must be a list of {{source, text}} objects")
        texts = [a.get("text", "") for a in anns]
        sources = [a.get("source", "") for a in anns]
        entries.append({"triples": triples, "texts": texts, "sources": sources, "eid": None, "where": where})
    return entries


def _read_xml_entries(path: Path) -> list[dict[str, Any]]:
    require_file(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        line = exc.position[0] if exc.position else "?"
        raise DataError(f"{path}:{line}: malformed XML ({exc})") from None
    entries = []
    for n, entry in enumerate(root.iter("entry")):
        eid = entry.get("eid")
        where = f"{path}: entry {n} (eid {eid})"
        triples = []
        for mt in entry.iter("mtriple"):
            parts = [p.strip() for p in (mt.text or "").split(" | ", 2)]
            if len(parts) != 3:
                parts = [p.strip() for p in (mt.text or "").split("|", 2)]
            if len(parts) != 3:
                raise DataError(f"{where}: <mtriple> is not 'subject | predicate | object': {mt.text!r}")
            triples.append(parts)
        lexes = entry.findall("lex")
        texts = ["".join(lx.itertext()) for lx in lexes]
        sources = [lx.get("comment", "") for lx in lexes]
        entries.append({"triples": triples, "texts": texts, "sources": sources, "eid": eid, "where": where})
    return entries


class DART(Task):
    name = "dart"
    version = "1"
    metrics = ["bleu"]
    max_new_tokens = 64
    input_label = "Triples"
    output_label = "Text"
    description = "RDF triple set -> text"
    published_sizes = {"test": 5097}
    demo_files = {"train": "dart/train.json", "dev": "dart/dev.json", "test": "dart/test.xml"}
    download = DownloadSpec("dart", tuple(
        RemoteFile(_DART_URL + n, n) for n in (
            "dart-v1.1.1-full-train.json", "dart-v1.1.1-full-dev.json",
            "dart-v1.1.1-full-test.json", "dart-v1.1.1-full-test.xml")
    ), note="Yale-LILY/dart v1.1.1 (MIT)")

    def load(self, split: str, path: Path, **ctx: Any) -> list[dict[str, Any]]:
        check_split(split)
        path = Path(path)
        entries = _read_xml_entries(path) if path.suffix.lower() == ".xml" else _read_json_entries(path)
        records = []
        for n, e in enumerate(entries):
            if not e["triples"]:
                raise DataError(f"{e['where']}: empty triple set")
            inp = linearize(e["triples"])
            group = make_id("dart", split, n)
            texts = [(t, s) for t, s in zip(e["texts"], e["sources"]) if one_line(t)]
            base_meta = {"group": group} | ({"eid": e["eid"]} if e["eid"] is not None else {})
            if len(texts) < len(e["texts"]):
                base_meta["empty_references"] = len(e["texts"]) - len(texts)
            if split == "train":
                if not texts and ctx.get("excluded") is not None:
                    ctx["excluded"].append({"id": group, "reason": f"{e['where']}: no annotation text"})
                for k, (text, source) in enumerate(texts):
                    meta = base_meta | {"source": source}
                    records.append(make_record("dart", split, f"{group}-{k}", inp, [text], meta, where=e["where"]))
            else:
                if not texts:
                    raise DataError(f"{e['where']}: DART {split} entry has no annotation text")
                meta = base_meta | {"sources": [s for _, s in texts]}
                records.append(make_record("dart", split, group, inp, [t for t, _ in texts], meta, where=e["where"]))
        return records


TASK = DART()
