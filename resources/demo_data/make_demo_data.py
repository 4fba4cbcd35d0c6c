"""Regenerate the demo data files (official formats, invented content) in this folder.

    python resources/demo_data/make_demo_data.py      # deterministic: same bytes every run

Every example is made from small templates over invented tables / triples / utterances, so that inputs and
targets are consistent with each other and learnable by tiny models. Nothing is copied from the real datasets.
The Spider SQLite database is made by spider/make_db.py (run it after this script).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
N = {"train": 32, "dev": 20, "test": 20}


def dump_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def dump_json(path: Path, obj, indent: int = 2) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=indent) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------- MTOP
CITIES = ["Lisbon", "Denver", "Osaka", "Nairobi", "Bergen", "Quito", "Perth", "Toledo", "Dundee", "Austin"]
DATES = ["today", "tomorrow", "this weekend", "on Friday", "next week", "tonight"]
NAMES = ["Maria", "Tom", "Aisha", "Ken", "Lucia", "Omar", "Greta", "Ravi", "Nina", "Paul"]
TIMES = ["6 am", "7 30 am", "noon", "5 pm", "9 pm", "10 15 pm"]
MSGS = ["I am running late", "see you soon", "call me back", "dinner is ready", "the meeting moved"]
TODOS = ["buy milk", "water the plants", "pay rent", "pick up the kids", "renew my passport"]


def _mtop_example(rng: random.Random) -> tuple[str, str, str, str, list[tuple[str, str]]]:
    """(utterance, logical form, domain, intent, [(slot, value)])."""
    kind = rng.randrange(5)
    if kind == 0:
        c, d = rng.choice(CITIES), rng.choice(DATES)
        q = rng.choice(["what is the weather in {c} {d}", "weather forecast for {c} {d}", "will it rain in {c} {d}"])
        q = q.format(c=c, d=d)
        return q, f"[IN:GET_WEATHER [SL:LOCATION {c} ] [SL:DATE_TIME {d} ] ]", "weather", "IN:GET_WEATHER", [("SL:LOCATION", c), ("SL:DATE_TIME", d)]
    if kind == 1:
        t = "for " + rng.choice(TIMES)
        q = rng.choice(["set an alarm {t}", "wake me up {t}", "create an alarm {t}"]).format(t=t)
        return q, f"[IN:CREATE_ALARM [SL:DATE_TIME {t} ] ]", "alarm", "IN:CREATE_ALARM", [("SL:DATE_TIME", t)]
    if kind == 2:
        n = rng.choice(NAMES)
        q = rng.choice(["call {n}", "phone {n} please", "start a call with {n}"]).format(n=n)
        return q, f"[IN:CREATE_CALL [SL:CONTACT {n} ] ]", "calling", "IN:CREATE_CALL", [("SL:CONTACT", n)]
    if kind == 3:
        n, m = rng.choice(NAMES), rng.choice(MSGS)
        q = rng.choice(["text {n} that {m}", "send a message to {n} saying {m}", "tell {n} {m}"]).format(n=n, m=m)
        return q, f"[IN:SEND_MESSAGE [SL:RECIPIENT {n} ] [SL:CONTENT_EXACT {m} ] ]", "messaging", "IN:SEND_MESSAGE", [("SL:RECIPIENT", n), ("SL:CONTENT_EXACT", m)]
    t, d = rng.choice(TODOS), rng.choice(DATES)
    q = rng.choice(["remind me to {t} {d}", "set a reminder to {t} {d}"]).format(t=t, d=d)
    return q, f"[IN:CREATE_REMINDER [SL:PERSON_REMINDED me ] [SL:TODO {t} ] [SL:DATE_TIME {d} ] ]", "reminder", "IN:CREATE_REMINDER", [("SL:PERSON_REMINDED", "me"), ("SL:TODO", t), ("SL:DATE_TIME", d)]


def make_mtop() -> None:
    rng = random.Random(1)
    out = HERE / "mtop"
    for split in ("train", "dev", "test"):
        rows = []
        for i in range(N[split]):
            q, lf, domain, intent, slots = _mtop_example(rng)
            if split != "test":
                rows.append({"question": q, "logical_form": lf})
                continue
            spans = []
            for slot, value in slots:
                start = q.find(value)
                if start >= 0:
                    spans.append(f"{start}:{start + len(value)}:{slot}")
            toks, pos = [], 0
            for tok in q.split(" "):
                toks.append({"start": pos, "length": len(tok)})
                pos += len(tok) + 1
            rows.append({
                "idx": str(3100000000 + i).encode().hex(), "intent": intent, "spans": ",".join(spans),
                "question": q, "domain": domain, "lang": "en_XX", "logical_form": lf,
                "tokenized_question": json.dumps({"tokens": q.split(" "), "tokenSpans": toks}) + "\n",
            })
        if split == "train":  # the same utterance twice (as MTOP has): both rows share one group
            rows.insert(5, dict(rows[2]))
        dump_jsonl(out / f"{split}.json", rows)


# ---------------------------------------------------------------------------------------------- DART
RESTAURANTS = ["The Golden Fork", "Blue Lantern", "Copper Pot", "The Olive Tree", "Red Door Cafe", "Saffron House",
               "The Rusty Anchor", "Green Leaf", "Moonlight Diner", "The Old Mill"]
FOODS = ["Italian", "Indian", "Chinese", "French", "Japanese", "Mexican"]
AREAS = ["city centre", "riverside"]
PRICES = ["cheap", "moderate", "high"]
RIVERS = [("Avon River", "Bristol", "120"), ("Clear Creek", "Golden", "66"), ("Lark River", "Mildenhall", "42"),
          ("Stone River", "Ashford", "87"), ("Wren River", "Hollis", "55")]


def _dart_entry(rng: random.Random) -> tuple[list[list[str]], list[str]]:
    if rng.random() < 0.75:
        r, f, a, p = rng.choice(RESTAURANTS), rng.choice(FOODS), rng.choice(AREAS), rng.choice(PRICES)
        n = rng.randrange(1, 4)
        triples = [[r, "food", f], [r, "area", a], [r, "priceRange", p]][:n]
        if n == 1:
            texts = [f"{r} serves {f} food.", f"{r} is an {f} restaurant." if f[0] in "AEIOU" else f"{r} is a {f} restaurant."]
        elif n == 2:
            texts = [f"{r} serves {f} food in the {a}.", f"In the {a} there is {r}, which serves {f} food."]
        else:
            texts = [f"{r} serves {f} food in the {a} at {p} prices.",
                     f"{r} is a {p} {f} restaurant in the {a}.",
                     f"For {p} {f} food, go to {r} in the {a}."]
        k = rng.randrange(1, len(texts) + 1)
        return triples, texts[:k]
    river, town, length = rng.choice(RIVERS)
    triples = [[river, "LOCATION", town], [river, "LENGTH_(KM)", length]]
    return triples, [f"The {river} runs through {town} and is {length} km long.", f"{town} lies on the {river}, which is {length} km long."][: rng.randrange(1, 3)]


def make_dart() -> None:
    rng = random.Random(2)
    out = HERE / "dart"
    for split in ("train", "dev"):
        entries = []
        for _ in range(N[split]):
            triples, texts = _dart_entry(rng)
            src = "e2e" if triples[0][1] == "food" else "WikiTableQuestions_mturk"
            entries.append({"tripleset": triples, "subtree_was_extended": False,
                            "annotations": [{"source": src, "text": t} for t in texts]})
        dump_json(out / f"{split}.json", entries)
    lines = ["<?xml version='1.0' encoding='utf-8'?>", "<benchmark>", "  <entries>"]
    for i in range(N["test"]):
        triples, texts = _dart_entry(rng)
        src = "e2e" if triples[0][1] == "food" else "WikiTableQuestions_mturk"
        lines.append(f'    <entry category="MISC" eid="Id{i + 1}" size="{len(triples)}">')
        lines.append("      <modifiedtripleset>")
        lines += [f"        <mtriple>{s} | {p} | {o}</mtriple>" for s, p, o in triples]
        lines.append("      </modifiedtripleset>")
        lines += [f'      <lex comment="{src}" lid="Id{k + 1}">{t}</lex>' for k, t in enumerate(texts)]
        lines.append("    </entry>")
    lines += ["  </entries>", "</benchmark>", ""]
    (out / "test.xml").write_text("\r\n".join(lines), encoding="utf-8")


# ---------------------------------------------------------------------------------------------- ToTTo
PLAYERS = ["Ada Moreno", "Ben Okafor", "Cleo Hart", "Dev Patel", "Elin Berg", "Femi Adeyemi", "Gus Lindqvist",
           "Hana Sato", "Ivo Kral", "Jude Amari", "Kira Novak", "Leo Brandt"]
CLUBS = ["Harbor City", "Northfield", "Eastvale", "Pine Ridge", "Westbrook", "Silver Lake"]


def _cell(v, header=False, cs=1, rs=1):
    return {"value": str(v), "is_header": header, "column_span": cs, "row_span": rs}


def _totto_example(rng: random.Random, i: int, split: str) -> dict:
    player = PLAYERS[i % len(PLAYERS)] if split == "train" else rng.choice(PLAYERS)
    years = sorted(rng.sample(range(2008, 2022), 3))
    clubs = [rng.choice(CLUBS) for _ in years]
    apps = [rng.randrange(10, 40) for _ in years]
    goals = [rng.randrange(0, 20) for _ in years]
    table = [[_cell("Season", True), _cell("Club", True), _cell("League", True, cs=2)],
             [_cell(""), _cell(""), _cell("Apps", True), _cell("Goals", True)]]
    for y, c, a, g in zip(years, clubs, apps, goals):
        table.append([_cell(y), _cell(c), _cell(a), _cell(g)])
    if rng.random() < 0.5:  # a row-spanning club cell: the next row has one cell fewer
        y2 = years[-1] + 1
        table[-1][1]["row_span"] = 2
        table.append([_cell(y2), _cell(apps[-1] + 3), _cell(goals[-1] + 1)])
    r = rng.randrange(2, 2 + len(years))
    y, c, a, g = years[r - 2], clubs[r - 2], apps[r - 2], goals[r - 2]
    kind = rng.randrange(3)
    if kind == 0:
        cells = [[r, 0], [r, 1], [r, 3]]
        sents = [f"In {y}, {player} scored {g} goals for {c}.", f"{player} scored {g} goals for {c} in {y}.",
                 f"{player} netted {g} goals for {c} in the {y} season."]
    elif kind == 1:
        cells = [[r, 0], [r, 2]]
        sents = [f"In {y}, {player} made {a} appearances.", f"{player} made {a} league appearances in {y}.",
                 f"{player} played {a} games in {y}."]
    else:
        cells = [[r, 0], [r, 1], [r, 2], [r, 3]]
        sents = [f"In {y}, {player} played {a} games and scored {g} goals for {c}.",
                 f"{player} scored {g} goals in {a} games for {c} in {y}.",
                 f"With {c} in {y}, {player} scored {g} goals in {a} appearances."]
    k = 1 if split == "train" else 3
    anns = [{"original_sentence": s.replace(player, "He", 1) if s.startswith(player) else s,
             "sentence_after_deletion": s, "sentence_after_ambiguity": s, "final_sentence": s} for s in sents[:k]]
    row = {"table": table, "table_webpage_url": "http://en.wikipedia.org/wiki/" + player.replace(" ", "_"),
           "table_page_title": player, "table_section_title": "Club career", "table_section_text": "",
           "highlighted_cells": cells, "example_id": rng.randrange(-2**62, 2**62),
           "sentence_annotations": anns}
    if split != "train":
        row["overlap_subset"] = bool(rng.random() < 0.5)
    return row


def make_totto() -> None:
    rng = random.Random(3)
    for split in ("train", "dev", "test"):
        dump_jsonl(HERE / "totto" / f"{split}.jsonl", [_totto_example(rng, i, split) for i in range(N[split])])


# ---------------------------------------------------------------------------------------------- Logic2Text
TEAMS = ["harbor city", "northfield", "eastvale", "pine ridge", "westbrook", "silver lake", "stone bay", "red hill"]
COUNTRIES = ["canada", "norway", "kenya", "chile"]


def _l2t_table(rng: random.Random, n: int) -> tuple[str, list[str], list[list[str]]]:
    year = rng.randrange(1990, 2020)
    topic = f"{year} {rng.choice(['regional', 'national', 'coastal'])} {rng.choice(['cup', 'league', 'open'])}"
    teams = rng.sample(TEAMS, 5)
    rows = [[t, rng.choice(COUNTRIES), str(rng.randrange(1, 30)), str(p)] for t, p in zip(teams, rng.sample(range(10, 60), 5))]
    return topic, ["team", "country", "wins", "points"], rows


def _l2t_sentence(rng: random.Random, topic: str, header: list[str], rows: list[list[str]]) -> tuple[str, str, str]:
    kind = rng.randrange(3)
    if kind == 0:
        best = max(rows, key=lambda r: int(r[3]))
        return ("superlative", f"eq {{ hop {{ argmax {{ all_rows ; points }} ; team }} ; {best[0]} }} = true",
                f"{best[0]} scored the most points in the {topic} .")
    if kind == 1:
        c = rng.choice(rows)[1]
        n = sum(r[1] == c for r in rows)
        return ("count", f"eq {{ count {{ filter_eq {{ all_rows ; country ; {c} }} }} ; {n} }} = true",
                f"{n} of the teams in the {topic} were from {c} .")
    a, b = rng.sample(rows, 2)
    word = "more" if int(a[3]) > int(b[3]) else "fewer"
    fn = "greater" if word == "more" else "less"
    return ("comparative",
            f"{fn} {{ hop {{ filter_eq {{ all_rows ; team ; {a[0]} }} ; points }} ; hop {{ filter_eq {{ all_rows ; team ; {b[0]} }} ; points }} }} = true",
            f"{a[0]} scored {word} points than {b[0]} in the {topic} .")


def make_logic2text() -> None:
    rng = random.Random(4)
    out = HERE / "logic2text"
    lm: dict[str, list] = {}
    en, sql = [], []
    for t in range(N["train"] // 2):
        topic, header, rows = _l2t_table(rng, 5)
        table_id = f"2-{1000 + t}-1.html.csv"
        for _ in range(2):
            _, logic, sent = _l2t_sentence(rng, topic, header, rows)
            lm.setdefault(table_id, []).append([sent, [0, 3], topic, "None"])
            en.append(sent)
            sql.append(logic)
    dump_json(out / "train_lm.json", lm)
    (out / "train.en").write_text("".join(s + "\n" for s in en), encoding="utf-8")
    (out / "train.sql").write_text("".join(s + "\n" for s in sql), encoding="utf-8")
    for split, fname in (("dev", "valid.json"), ("test", "test.json")):
        recs = []
        for i in range(N[split]):
            topic, header, rows = _l2t_table(rng, 5)
            action, logic, sent = _l2t_sentence(rng, topic, header, rows)
            recs.append({
                "topic": topic, "wiki": "https://en.wikipedia.org/wiki/" + topic.replace(" ", "_"),
                "action": action, "sent": sent, "annotation": "{}", "logic": "{}", "logic_str": logic,
                "interpret": "", "num_func": str(logic.count("{")), "nid": str(i), "g_ids": "{}",
                "g_ids_features": "{}", "g_adj": "{}", "table_header": str(header), "table_cont": str(rows),
            })
        out.mkdir(parents=True, exist_ok=True)
        (out / fname).write_text(json.dumps(recs, ensure_ascii=False), encoding="utf-8")


# ---------------------------------------------------------------------------------------------- Spider
LIB_TITLES = ["River Song", "The Quiet Hill", "Night Train", "Paper Moons", "Salt and Stone", "The Last Map",
              "Winter Bees", "Glass Garden"]
LIB_AUTHORS = [("Ana Ruiz", "Spain"), ("Bo Chen", "China"), ("Cara Doyle", "Ireland"), ("Dan Weiss", "Germany"),
               ("Eva Lind", "Sweden")]
SPIDER_DBS = {
    "school_library": {
        "book": [("book_id", "number"), ("title", "text"), ("author_id", "number"), ("year", "number"), ("pages", "number")],
        "author": [("author_id", "number"), ("name", "text"), ("country", "text")],
        "loan": [("loan_id", "number"), ("book_id", "number"), ("member_name", "text"), ("loan_date", "time")],
    },
    "city_zoo": {
        "animal": [("animal_id", "number"), ("name", "text"), ("species", "text"), ("age", "number"), ("enclosure_id", "number")],
        "enclosure": [("enclosure_id", "number"), ("zone", "text"), ("area", "number")],
    },
}
SPIDER_FKS = {"school_library": [("book", "author_id", "author", "author_id"), ("loan", "book_id", "book", "book_id")],
              "city_zoo": [("animal", "enclosure_id", "enclosure", "enclosure_id")]}


def _tables_json() -> list[dict]:
    out = []
    for db_id, tables in SPIDER_DBS.items():
        names = list(tables)
        cols = [[-1, "*"]] + [[t, c] for t, name in enumerate(names) for c, _ in tables[name]]
        types = ["text"] + [ty for name in names for _, ty in tables[name]]
        index = {(names[t], c): k for k, (t, c) in enumerate(cols) if t >= 0}
        out.append({
            "column_names": [[t, c.replace("_", " ")] for t, c in cols], "column_names_original": cols,
            "column_types": types, "db_id": db_id,
            "foreign_keys": [[index[(a, b)], index[(c, d)]] for a, b, c, d in SPIDER_FKS[db_id]],
            "primary_keys": [index[(name, tables[name][0][0])] for name in names],
            "table_names": [n.replace("_", " ") for n in names], "table_names_original": names,
        })
    return out


def _spider_example(rng: random.Random, db_id: str) -> tuple[str, str]:
    if db_id == "city_zoo":
        kind = rng.randrange(3)
        if kind == 0:
            s = rng.choice(["lion", "zebra", "otter", "parrot"])
            return f"How many {s}s live in the zoo?", f"SELECT count(*) FROM animal WHERE species = '{s}'"
        if kind == 1:
            a = rng.randrange(2, 12)
            return f"List the names of animals older than {a}.", f"SELECT name FROM animal WHERE age > {a}"
        z = rng.choice(["north", "south", "tropical"])
        return (f"What are the names of animals in the {z} zone?",
                f"SELECT T1.name FROM animal AS T1 JOIN enclosure AS T2 ON T1.enclosure_id = T2.enclosure_id WHERE T2.zone = '{z}'")
    kind = rng.randrange(6)
    if kind == 0:
        return "How many books are there?", "SELECT count(*) FROM book"
    if kind == 1:
        y = rng.randrange(1990, 2020)
        return f"List the titles of books published after {y}.", f"SELECT title FROM book WHERE year > {y}"
    if kind == 2:
        t = rng.choice(LIB_TITLES)
        return (f"Who wrote the book titled {t}?",
                f"SELECT T2.name FROM book AS T1 JOIN author AS T2 ON T1.author_id = T2.author_id WHERE T1.title = '{t}'")
    if kind == 3:
        c = rng.choice(LIB_AUTHORS)[1]
        return f"How many authors are from {c}?", f"SELECT count(*) FROM author WHERE country = '{c}'"
    if kind == 4:
        n = rng.choice(LIB_AUTHORS)[0]
        return (f"What is the average number of pages of books by {n}?",
                f"SELECT avg(T1.pages) FROM book AS T1 JOIN author AS T2 ON T1.author_id = T2.author_id WHERE T2.name = '{n}'")
    return "Which member borrowed the most books?", "SELECT member_name FROM loan GROUP BY member_name ORDER BY count(*) DESC LIMIT 1"


def _toks(s: str) -> list[str]:
    return s.replace("?", " ?").replace(".", " .").replace("(", " ( ").replace(")", " ) ").replace(",", " , ").split()


def make_spider() -> None:
    rng = random.Random(5)
    out = HERE / "spider"
    dump_json(out / "tables.json", _tables_json(), indent=3)
    train = []
    for i in range(N["train"]):
        db = "school_library" if i % 3 else "city_zoo"
        q, sql = _spider_example(rng, db)
        train.append({"question": q, "query": sql, "db_id": db})
    dump_json(out / "train_spider.json", train)
    dev = []
    for i in range(N["dev"]):
        q, sql = _spider_example(rng, "school_library")
        dev.append({"db_id": "school_library", "query": sql, "query_toks": _toks(sql),
                    "query_toks_no_value": [t.lower() for t in _toks(sql)], "question": q, "question_toks": _toks(q)})
    dump_json(out / "dev.json", dev, indent=4)


if __name__ == "__main__":
    make_mtop()
    make_dart()
    make_totto()
    make_logic2text()
    make_spider()
    print("demo data written under", HERE)
