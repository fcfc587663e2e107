"""The layout's rules that no linter states: SQL text lives only in bot/storage/, and every
module of bot/ and cogs/ says what it is for.

(The import boundary, Discord and SQLite modules only where they belong, is ruff's TID251:
see pyproject.toml.)
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
STORAGE = REPO_ROOT / "bot" / "storage"

SQL_START = re.compile(
    r"""\s*(?:
        SELECT\s.*?\bFROM\b
      | SELECT\s+[a-z_]+\(\)
      | INSERT\s+(?:OR\s+[A-Z]+\s+)?INTO\b
      | REPLACE\s+INTO\b
      | UPDATE\s+\w+\s+SET\b
      | DELETE\s+FROM\b
      | (?:CREATE|DROP)\s+(?:UNIQUE\s+)?(?:TABLE|INDEX|VIEW|TRIGGER)\b
      | ALTER\s+TABLE\b
      | WITH\s+(?:RECURSIVE\s+)?\w+(?:\s*\([^)]*\))?\s+AS\s*\(
      | PRAGMA\s+\w+
      | (?:BEGIN(?:\s+(?:DEFERRED|IMMEDIATE|EXCLUSIVE))?|COMMIT|ROLLBACK)
        (?:\s+TRANSACTION)?\s*;?\s*$
    )""",
    re.VERBOSE | re.DOTALL,
)
"""What SQL text starts with: the statement keyword in upper case (the project's style), followed
by what that statement needs, so that prose which merely opens with "SELECT" does not match."""


def sql_literals(source: str) -> list[tuple[int, str]]:
    """(line, opening text) of every string literal in `source` that starts like SQL.

    An f-string is read with `{}` for each placeholder (`f"SELECT {cols} FROM t"`); implicit
    concatenation is one literal to `ast`, so a statement split over lines is seen whole."""
    found = []
    parts_of_fstrings: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.JoinedStr):
            parts_of_fstrings.update(id(part) for part in ast.walk(node) if part is not node)
            text = "".join(
                part.value if isinstance(part, ast.Constant) else "{}" for part in node.values
            )
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in parts_of_fstrings
        ):
            text = node.value
        else:
            continue
        if SQL_START.match(text):
            found.append((node.lineno, " ".join(text.split())[:60]))
    return found


def product_modules() -> list[Path]:
    """Every module of bot/ and cogs/."""
    return sorted(
        path for package in ("bot", "cogs") for path in (REPO_ROOT / package).rglob("*.py")
    )


def sql_outside_storage() -> list[str]:
    """`path:line: text` for every SQL literal in bot/ or cogs/ outside bot/storage/."""
    offences = []
    for path in product_modules():
        if path.is_relative_to(STORAGE):
            continue
        for line, text in sql_literals(path.read_text(encoding="utf-8")):
            offences.append(f"{path.relative_to(REPO_ROOT)}:{line}: {text!r}")
    return offences


def test_no_sql_outside_storage() -> None:
    offences = sql_outside_storage()
    assert not offences, "SQL belongs in bot/storage/ (add a storage function):\n" + "\n".join(
        offences
    )


def test_the_check_recognises_sql_in_every_form_the_code_writes_it() -> None:
    source = '''
a = "SELECT id FROM jobs WHERE id = ?"
b = f"""
    UPDATE jobs SET {column} = ? WHERE id = ?
"""
c = ("INSERT OR IGNORE INTO ledger (job_id) "
     "VALUES (?)")
d = "DELETE FROM bans WHERE user_id = ?"
e = "CREATE UNIQUE INDEX IF NOT EXISTS x ON ledger (job_id, kind)"
f = "BEGIN IMMEDIATE"
i = "SELECT changes()"
g = "WITH recent AS (SELECT 1) SELECT * FROM recent"
h = f"SELECT {', '.join(columns)} FROM guild_settings"
'''
    assert [line for line, _ in sql_literals(source)] == [2, 3, 6, 8, 9, 10, 11, 12, 13]


def test_the_check_leaves_prose_alone() -> None:
    source = '''
"""SELECT the prompt text, then UPDATE it: the Vary form."""
a = "Select a period"
b = "DELETE this result?"
c = "Update: your credits were refunded."
d = "Begin again"
e = "created table of confusables"
f = "SELECT a channel from the list"
'''
    assert sql_literals(source) == []


def test_the_check_sees_the_sql_that_storage_writes() -> None:
    """Every storage module that talks to SQLite is recognised, so the check is not blind to
    the way this project writes its statements."""
    quiet = [
        path.name
        for path in sorted(STORAGE.glob("*.py"))
        if "execute" in path.read_text(encoding="utf-8")
        and not sql_literals(path.read_text(encoding="utf-8"))
    ]
    assert quiet == []


def test_every_module_opens_with_its_purpose() -> None:
    """A newcomer opening any module reads first what it is for."""
    silent = [
        str(path.relative_to(REPO_ROOT))
        for path in product_modules()
        if not (ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or "").strip()
    ]
    assert silent == [], "add a one-line docstring saying what the module is for"
