"""Build the demo Spider database database/school_library/school_library.sqlite (invented content).

    python resources/demo_data/spider/make_db.py

The schema matches the `school_library` entry of tables.json here (table and column names, types, keys); every
gold query of dev.json and of the school_library rows of train_spider.json executes on it (checked at the end).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

HERE = Path(__file__).resolve().parent
DB = HERE / "database" / "school_library" / "school_library.sqlite"

SCHEMA = """
CREATE TABLE author (
    author_id INTEGER PRIMARY KEY,
    name TEXT,
    country TEXT
);
CREATE TABLE book (
    book_id INTEGER PRIMARY KEY,
    title TEXT,
    author_id INTEGER,
    year INTEGER,
    pages INTEGER,
    FOREIGN KEY (author_id) REFERENCES author(author_id)
);
CREATE TABLE loan (
    loan_id INTEGER PRIMARY KEY,
    book_id INTEGER,
    member_name TEXT,
    loan_date TEXT,
    FOREIGN KEY (book_id) REFERENCES book(book_id)
);
"""

AUTHORS = [(1, "Ana Ruiz", "Spain"), (2, "Bo Chen", "China"), (3, "Cara Doyle", "Ireland"),
           (4, "Dan Weiss", "Germany"), (5, "Eva Lind", "Sweden"), (6, "Finn Walsh", "Ireland")]
BOOKS = [(1, "River Song", 1, 1995, 320), (2, "The Quiet Hill", 2, 2003, 210), (3, "Night Train", 3, 2011, 412),
         (4, "Paper Moons", 1, 2018, 188), (5, "Salt and Stone", 4, 1999, 275), (6, "The Last Map", 5, 2007, 350),
         (7, "Winter Bees", 3, 2015, 240), (8, "Glass Garden", 2, 1992, 300), (9, "Harbor Lights", 6, 2020, 198)]
LOANS = [(1, 3, "Mia", "2023-01-04"), (2, 1, "Noah", "2023-01-09"), (3, 3, "Liam", "2023-02-11"),
         (4, 6, "Mia", "2023-02-20"), (5, 2, "Mia", "2023-03-02"), (6, 7, "Zoe", "2023-03-15"),
         (7, 4, "Noah", "2023-04-01")]


def build(path: Path = DB) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        path.unlink()
    con = sqlite3.connect(path)
    try:
        con.executescript(SCHEMA)
        con.executemany("INSERT INTO author VALUES (?, ?, ?)", AUTHORS)
        con.executemany("INSERT INTO book VALUES (?, ?, ?, ?, ?)", BOOKS)
        con.executemany("INSERT INTO loan VALUES (?, ?, ?, ?)", LOANS)
        con.commit()
    finally:
        con.close()
    return path


def check(path: Path = DB) -> int:
    """Execute every school_library gold query of dev.json and train_spider.json; return how many ran."""
    rows = json.loads((HERE / "dev.json").read_text()) + json.loads((HERE / "train_spider.json").read_text())
    con = sqlite3.connect(path)
    n = 0
    try:
        for r in rows:
            if r["db_id"] == "school_library":
                con.execute(r["query"]).fetchall()
                n += 1
    finally:
        con.close()
    return n


if __name__ == "__main__":
    print(build(), check(), "gold queries executed")
