"""One SQL statement for both drivers: written once with `?` placeholders (SQLite's form), numbered `$1, $2, ...`
for PostgreSQL (asyncpg's form) once, when the statement is built, never per call.

`numbered` is a small tokenizer, not a regex: a `?` inside a string literal ('it''s?', E'\\'?'), a quoted
identifier ("a?b"), a dollar-quoted string ($tag$ ? $tag$), a -- line comment or a /* nested */ block comment
stays as written; a text that already uses `$n` parameters as well is refused. PostgreSQL's jsonb operators
`?`, `?|`, `?&` cannot be used in such a statement (SQLite would read them as placeholders too).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Query:
    """A statement in each driver's placeholder form; `params` is how many arguments it binds."""

    sqlite: str
    postgres: str
    params: int

    def text(self, dialect: str) -> str:
        return self.postgres if dialect == "postgres" else self.sqlite


def sql(text: str, *, postgres: str | None = None) -> Query:
    """The statement `text`; `postgres` when PostgreSQL runs a different text (e.g. with FOR UPDATE SKIP LOCKED),
    written with `?` as well and binding the same arguments."""
    pg, count = _number(text if postgres is None else postgres)
    if postgres is not None and _number(text)[1] != count:
        raise ValueError("the SQLite and PostgreSQL texts of a statement must bind the same arguments")
    return Query(text, pg, count)


def numbered(text: str) -> str:
    """`text` with each `?` placeholder outside literals, quoted identifiers and comments as `$1`, `$2`, ..."""
    return _number(text)[0]


def _number(text: str) -> tuple[str, int]:
    out: list[str] = []
    count, dollar_params = 0, False
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "?":
            count += 1
            out.append(f"${count}")
            i += 1
            continue
        end = _skip(text, i)
        dollar_params = dollar_params or (c == "$" and text[i + 1 : i + 2].isdigit())
        out.append(text[i:end])
        i = end
    if count and dollar_params:
        raise ValueError(f"SQL mixes ? and $n placeholders: {text!r}")
    return "".join(out), count


def _skip(text: str, i: int) -> int:
    """The end of the token at `i`: a whole literal / identifier / comment, or a single character."""
    c, nxt = text[i], text[i + 1 : i + 2]
    if c == "'":
        backslash = i > 0 and text[i - 1] in "eE" and not _ident_char(text[i - 2 : i - 1])
        return _quoted(text, i, "'", backslash)
    if c == '"':
        return _quoted(text, i, '"', False)
    if c == "-" and nxt == "-":
        end = text.find("\n", i)
        return len(text) if end < 0 else end
    if c == "/" and nxt == "*":
        return _block_comment(text, i)
    if c == "$" and not _ident_char(text[i - 1 : i] if i else ""):
        return _dollar_quoted(text, i)
    return i + 1


def _ident_char(c: str) -> bool:
    return c.isalnum() or c == "_"


def _quoted(text: str, i: int, quote: str, backslash: bool) -> int:
    """Past the closing quote of the literal opening at `i` (a doubled quote is one quote of its text)."""
    j = i + 1
    while j < len(text):
        if backslash and text[j] == "\\":
            j += 2
        elif text[j] == quote:
            if text[j + 1 : j + 2] == quote:
                j += 2
            else:
                return j + 1
        else:
            j += 1
    raise ValueError(f"unterminated {quote}...{quote} in SQL: {text!r}")


def _block_comment(text: str, i: int) -> int:
    depth, j = 0, i
    while j < len(text):
        pair = text[j : j + 2]
        if pair == "/*":
            depth, j = depth + 1, j + 2
        elif pair == "*/":
            depth, j = depth - 1, j + 2
            if depth == 0:
                return j
        else:
            j += 1
    raise ValueError(f"unterminated /* comment in SQL: {text!r}")


def _dollar_quoted(text: str, i: int) -> int:
    """$tag$ ... $tag$ (tag empty or an identifier not starting with a digit); a lone `$` or `$1` is one char."""
    j = i + 1
    while j < len(text) and _ident_char(text[j]):
        j += 1
    tag = text[i + 1 : j]
    if j >= len(text) or text[j] != "$" or (tag and tag[0].isdigit()):
        return i + 1
    delimiter = text[i : j + 1]
    end = text.find(delimiter, j + 1)
    if end < 0:
        raise ValueError(f"unterminated {delimiter} string in SQL: {text!r}")
    return end + len(delimiter)
