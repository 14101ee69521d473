"""`?` -> `$n` for PostgreSQL: placeholders are numbered left to right, and a `?` inside a literal, a quoted
identifier, a dollar-quoted string or a comment is left as written."""

from __future__ import annotations

import pytest

from vlmserve.jobs.sqltext import numbered, sql


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("SELECT * FROM t WHERE a = ? AND b IN (?, ?)", "SELECT * FROM t WHERE a = $1 AND b IN ($2, $3)"),
        ("SELECT '?', ?", "SELECT '?', $1"),
        ("SELECT 'it''s ?', ?", "SELECT 'it''s ?', $1"),  # '' is one quote inside the literal
        ("SELECT '', ?, ''''", "SELECT '', $1, ''''"),  # empty literal; a literal of one quote
        ("SELECT 'a''', ?", "SELECT 'a''', $1"),  # the doubled quote right before the closing one
        ("SELECT ? -- why? 'not closed\n, ?", "SELECT $1 -- why? 'not closed\n, $2"),
        ("SELECT ? -- trailing comment?", "SELECT $1 -- trailing comment?"),
        ("SELECT 5 - ?, ?-1", "SELECT 5 - $1, $2-1"),  # one minus is not a comment
        ('SELECT "odd?col", "a""?" FROM t WHERE x = ?', 'SELECT "odd?col", "a""?" FROM t WHERE x = $1'),
        ("SELECT /* ? /* nested ? */ still ? */ ?", "SELECT /* ? /* nested ? */ still ? */ $1"),
        ("SELECT ? / ?", "SELECT $1 / $2"),
        ("SELECT E'\\'?', ?", "SELECT E'\\'?', $1"),  # E'' strings: backslash escapes the quote
        ("SELECT name = '\\' AND x = ?", "SELECT name = '\\' AND x = $1"),  # plain '' strings: it does not
        ("SELECT some_e'?', ?", "SELECT some_e'?', $1"),  # `e` ending an identifier is not an E prefix
        ("SELECT $$ ? $$, $tag$ it's ?$ $tag$, ?", "SELECT $$ ? $$, $tag$ it's ?$ $tag$, $1"),
        ("SELECT col$x, ?", "SELECT col$x, $1"),  # `$` inside an identifier opens nothing
        ("SELECT $1, '?'", "SELECT $1, '?'"),  # already numbered: left as it is
        ("SELECT 'ünï?côdé', ?", "SELECT 'ünï?côdé', $1"),
        ("", ""),
    ],
)
def test_numbered(text: str, expected: str) -> None:
    assert numbered(text) == expected


@pytest.mark.parametrize(
    "text", ["SELECT 'open ?", 'SELECT "open', "SELECT /* open /* */", "SELECT $q$ open", "SELECT E'\\'"]
)
def test_unterminated_text_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="unterminated"):
        numbered(text)


def test_mixed_placeholder_forms_are_refused() -> None:
    with pytest.raises(ValueError, match="mixes"):
        numbered("SELECT $1, ?")


def test_a_query_keeps_both_forms_and_its_argument_count() -> None:
    query = sql("SELECT * FROM t WHERE a = ? AND b = '?'")
    assert (query.sqlite, query.postgres, query.params) == (
        "SELECT * FROM t WHERE a = ? AND b = '?'",
        "SELECT * FROM t WHERE a = $1 AND b = '?'",
        1,
    )
    assert query.text("sqlite") == query.sqlite and query.text("postgres") == query.postgres


def test_a_postgres_variant_numbers_its_own_text_and_must_bind_the_same_arguments() -> None:
    query = sql("SELECT a FROM t LIMIT ?", postgres="SELECT a FROM t LIMIT ? FOR UPDATE SKIP LOCKED")
    assert query.postgres == "SELECT a FROM t LIMIT $1 FOR UPDATE SKIP LOCKED" and query.sqlite.endswith("?")
    with pytest.raises(ValueError, match="same arguments"):
        sql("SELECT ?", postgres="SELECT ?, ?")
