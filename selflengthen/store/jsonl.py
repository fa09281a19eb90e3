"""The one JSONL reader of the project: every file of one JSON object a line (the user's
seeds, benchmark files, AgentWrite inputs and general chats, and our own artifacts) is read
here. A UTF-8 byte-order mark and CRLF line ends are accepted, blank lines skipped. A line
that is not UTF-8, not JSON or not an object raises BadLine with its 1-based number, and
each caller words it for its file (what it is for, and the fix); our own files may end in a
torn line (a crash mid-write), which `torn_tail_ok` skips."""
from __future__ import annotations

import codecs
import json
from pathlib import Path
from typing import Iterator

from selflengthen.core.errors import UserError


class BadLine(ValueError):
    """One line that is not a JSON object: `kind` is "utf8" (`byte`: the offset of the bad
    byte in the file), "json" (`msg`, `column`: the decoder's) or "object" (`found`: the
    JSON type's name)."""

    def __init__(self, line: int, kind: str, *, byte: int = 0, msg: str = "", column: int = 0, found: str = ""):
        self.line, self.kind, self.byte, self.msg, self.column, self.found = line, kind, byte, msg, column, found
        detail = {"utf8": f"not UTF-8 text (byte {byte})", "json": f"not valid JSON ({msg}, column {column})",
                  "object": f"a JSON {found}, not an object"}[kind]
        super().__init__(f"line {line}: {detail}")


def rows(path: Path, *, torn_tail_ok: bool = False) -> Iterator[tuple[int, dict]]:
    """(1-based line number, object) of each non-blank line. The file is read whole first,
    so a missing file or a folder raises (FileNotFoundError, IsADirectoryError) before any row."""
    raw = Path(path).read_bytes()
    start = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0
    lines = raw[start:].split(b"\n")
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    offset = start
    for i, line in enumerate(lines):
        here, offset = offset, offset + len(line) + 1
        line = line.removesuffix(b"\r")
        if not line.strip():
            continue
        try:
            row = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as err:
            if torn_tail_ok and i == last:
                return
            raise BadLine(i + 1, "utf8", byte=here + err.start) from err
        except json.JSONDecodeError as err:
            if torn_tail_ok and i == last:
                return
            raise BadLine(i + 1, "json", msg=err.msg, column=err.colno) from err
        if not isinstance(row, dict):
            raise BadLine(i + 1, "object", found=type(row).__name__)
        yield i + 1, row


def user_rows(path: Path, where: str, expected: str) -> list[tuple[int, dict]]:
    """rows(path), with a bad line reported as one UserError line naming `where`, the line
    and its fix (`expected` says what a row must be, e.g. 'an object with "messages"')."""
    try:
        return list(rows(path))
    except BadLine as err:
        at = f"{where} line {err.line}"
        if err.kind == "utf8":
            raise UserError(f"{at}: not UTF-8 text; save the file as UTF-8") from err
        if err.kind == "json":
            raise UserError(f"{at}: not JSON ({err.msg}); fix that line") from err
        raise UserError(f"{at}: expected {expected}") from err
