"""Every SQL statement the server runs (the schema itself is in migrations.py), one named constant each, written
once with `?` placeholders and numbered for PostgreSQL here, at import (sqltext.py).

A statement with a variable part has its variants built here too, all of them: an `IN (...)` list of batch
statuses per length, a status's own timestamp column per status, the files listing per filter. Statuses are
bound as arguments, never written into the text, so the enums in model.py are the only place they are spelled.
"""

from __future__ import annotations

from vlmserve.jobs.model import BatchStatus
from vlmserve.jobs.sqltext import Query, sql

# ---- driver plumbing (db.py)
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=NORMAL",  # WAL + NORMAL: a committed row survives kill -9
    "PRAGMA busy_timeout=30000",
)
SQLITE_BEGIN = "BEGIN IMMEDIATE"  # take the write lock at once: two processes never deadlock on lock upgrades
SQLITE_COMMIT = "COMMIT"
SQLITE_ROLLBACK = "ROLLBACK"
PG_CREATE_SCHEMA = 'CREATE SCHEMA IF NOT EXISTS "{schema}"'  # an identifier: the caller checks the name first
MIGRATIONS_LOCK = sql("SELECT pg_advisory_xact_lock(7411002)")
MIGRATIONS_TABLE = sql(
    "CREATE TABLE IF NOT EXISTS vlm_migrations "
    "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
)
MIGRATIONS_DONE = sql("SELECT version FROM vlm_migrations")
MIGRATION_APPLIED = sql("INSERT INTO vlm_migrations (version, name, applied_at) VALUES (?, ?, ?)")

# ---- files (files_store.py)
FILE_INSERT = sql(
    "INSERT INTO vlm_files (id, purpose, filename, bytes, created_at, expires_at, line_count) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
FILE_CHUNK_INSERT = sql("INSERT INTO vlm_file_chunks (file_id, seq, data) VALUES (?, ?, ?)")
FILE_GET = sql("SELECT * FROM vlm_files WHERE id = ? AND (expires_at IS NULL OR expires_at > ?)")
FILE_CHUNKS = sql("SELECT data FROM vlm_file_chunks WHERE file_id = ? ORDER BY seq")
FILE_DELETE = sql("DELETE FROM vlm_files WHERE id = ?")
FILE_CHUNKS_DELETE = sql("DELETE FROM vlm_file_chunks WHERE file_id = ?")
FILES_EXPIRED = sql("SELECT id FROM vlm_files WHERE expires_at IS NOT NULL AND expires_at <= ?")


def _files_page(purpose: bool, after: bool, desc: bool) -> Query:
    text = "SELECT * FROM vlm_files WHERE (expires_at IS NULL OR expires_at > ?)"
    if purpose:
        text += " AND purpose = ?"
    if after:
        text += " AND id < ?" if desc else " AND id > ?"
    return sql(text + f" ORDER BY id {'DESC' if desc else 'ASC'} LIMIT ?")


# (filter by purpose, start after an id, newest first) -> the page query; arguments: now, [purpose], [after], limit
FILES_PAGE = {(p, a, d): _files_page(p, a, d) for p in (False, True) for a in (False, True) for d in (False, True)}

# ---- batches (batch_store.py)
BATCH_INSERT = sql(
    "INSERT INTO vlm_batches (id, endpoint, input_file_id, completion_window, status, metadata, created_at, "
    "expires_at, models) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
BATCH_GET = sql("SELECT * FROM vlm_batches WHERE id = ?")
BATCHES_PAGE = sql("SELECT * FROM vlm_batches ORDER BY id DESC LIMIT ?")
BATCHES_PAGE_AFTER = sql("SELECT * FROM vlm_batches WHERE id < ? ORDER BY id DESC LIMIT ?")
BATCH_CANCEL = sql("UPDATE vlm_batches SET status = ?, cancelling_at = ? WHERE id = ? AND status IN (?, ?)")
BATCH_START = sql(
    "UPDATE vlm_batches SET status = ?, in_progress_at = ?, lease_owner = NULL, lease_until = NULL "
    "WHERE id = ? AND status = ? AND lease_owner = ?"
)
BATCH_FAIL = sql(
    "UPDATE vlm_batches SET status = ?, failed_at = ?, errors = ?, lease_owner = NULL, lease_until = NULL "
    "WHERE id = ? AND status = ? AND lease_owner = ?"
)


def _marks(n: int) -> str:
    return ", ".join("?" for _ in range(n))


# n -> the query for n statuses (1 up to every status)
BATCHES_IN = {
    n: sql(f"SELECT * FROM vlm_batches WHERE status IN ({_marks(n)}) ORDER BY id")
    for n in range(1, len(BatchStatus) + 1)
}
BATCH_CLAIM = {
    n: sql(
        f"UPDATE vlm_batches SET lease_owner = ?, lease_until = ? WHERE id = ? AND status IN ({_marks(n)}) "
        "AND (lease_until IS NULL OR lease_until < ? OR lease_owner = ?)"
    )
    for n in range(1, len(BatchStatus) + 1)
}
_STAMPED: list[BatchStatus] = [
    s for s in BatchStatus if s is not BatchStatus.VALIDATING
]  # each has a `<status>_at` column
# status -> the closing update that stamps `<status>_at`
BATCH_CLOSE = {
    s: sql(
        f"UPDATE vlm_batches SET status = ?, {s.value}_at = ?, output_file_id = ?, error_file_id = ?, "
        "lease_owner = NULL, lease_until = NULL WHERE id = ? AND lease_owner = ?"
    )
    for s in _STAMPED
}
# status -> the update that sets it and stamps `<status>_at` the first time
BATCH_SET_STATUS = {
    s: sql(
        f"UPDATE vlm_batches SET status = ?, {s.value}_at = COALESCE({s.value}_at, ?) WHERE id = ? AND lease_owner = ?"
    )
    for s in _STAMPED
}

# ---- batch items (batch_store.py)
ITEMS_DELETE = sql("DELETE FROM vlm_batch_items WHERE batch_id = ?")
ITEM_INSERT = sql(
    "INSERT INTO vlm_batch_items (batch_id, line_no, custom_id, model, body, state) VALUES (?, ?, ?, ?, ?, ?)"
)
ITEM_COUNTS = sql(
    "SELECT state, COUNT(*) AS n, CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT) AS pt, "
    "CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT) AS ct FROM vlm_batch_items "
    "WHERE batch_id = ? GROUP BY state"
)
ITEM_STATES = sql("SELECT state, COUNT(*) AS n FROM vlm_batch_items GROUP BY state")  # every batch: /metrics
# The pick is a CTE: PostgreSQL runs it exactly once (an `IN (SELECT ... LIMIT n SKIP LOCKED)` subquery may be
# re-run by the planner and then claim more than n lines).
_ITEMS_CLAIM = (
    "WITH picked AS (SELECT line_no FROM vlm_batch_items WHERE batch_id = ? "
    "AND (state = ? OR (state = ? AND lease_until < ?)) "
    "AND EXISTS (SELECT 1 FROM vlm_batches b WHERE b.id = ? AND b.status = ? AND b.expires_at > ?) "
    "ORDER BY model, line_no LIMIT ?{lock}) "
    "UPDATE vlm_batch_items SET state = ?, owner = ?, lease_until = ?, attempts = attempts + 1 "
    "WHERE batch_id = ? AND line_no IN (SELECT line_no FROM picked) "
    "RETURNING line_no, custom_id, model, body, attempts"
)
ITEMS_CLAIM = sql(_ITEMS_CLAIM.format(lock=""), postgres=_ITEMS_CLAIM.format(lock=" FOR UPDATE SKIP LOCKED"))
ITEM_FINISH = sql(
    "UPDATE vlm_batch_items SET state = ?, status_code = ?, request_id = ?, response = ?, error = ?, "
    "prompt_tokens = ?, completion_tokens = ?, finished_at = ?, owner = NULL, lease_until = NULL "
    "WHERE batch_id = ? AND line_no = ? AND state = ? AND owner = ?"
)
ITEMS_LIVE = sql("SELECT COUNT(*) AS n FROM vlm_batch_items WHERE batch_id = ? AND state = ? AND lease_until >= ?")
ITEMS_IN_STATES = sql("SELECT COUNT(*) AS n FROM vlm_batch_items WHERE batch_id = ? AND state IN (?, ?)")
ITEMS_CLOSE_OUT = sql(
    "UPDATE vlm_batch_items SET state = ?, owner = NULL, lease_until = NULL, finished_at = ? "
    "WHERE batch_id = ? AND (state = ? OR (state = ? AND lease_until < ?))"
)
ITEMS_PAGE = sql(
    "SELECT line_no, custom_id, state, status_code, request_id, response, error FROM vlm_batch_items "
    "WHERE batch_id = ? AND line_no > ? ORDER BY line_no LIMIT ?"
)

# ---- async single jobs (job_store.py)
JOB_INSERT = sql("INSERT INTO vlm_jobs (id, kind, status, body, created_at, key_id) VALUES (?, ?, ?, ?, ?, ?)")
JOB_GET = sql(
    "SELECT id, kind, status, result, error, attempts, created_at, completed_at, key_id FROM vlm_jobs WHERE id = ?"
)
_JOBS_CLAIM = (
    "WITH picked AS (SELECT id FROM vlm_jobs WHERE status = ? "
    "OR (status = ? AND lease_until < ?) ORDER BY created_at LIMIT ?{lock}) "
    "UPDATE vlm_jobs SET status = ?, owner = ?, lease_until = ?, attempts = attempts + 1 "
    "WHERE id IN (SELECT id FROM picked) RETURNING id, kind, body, attempts"
)
JOBS_CLAIM = sql(_JOBS_CLAIM.format(lock=""), postgres=_JOBS_CLAIM.format(lock=" FOR UPDATE SKIP LOCKED"))
JOB_FINISH = sql(
    "UPDATE vlm_jobs SET status = ?, result = ?, error = ?, completed_at = ?, owner = NULL, "
    "lease_until = NULL WHERE id = ? AND owner = ? AND status = ?"
)

# ---- leases of one owner across items, jobs and batches (job_store.py)
ITEMS_RENEW = sql("UPDATE vlm_batch_items SET lease_until = ? WHERE owner = ? AND state = ?")
JOBS_RENEW = sql("UPDATE vlm_jobs SET lease_until = ? WHERE owner = ? AND status = ?")
BATCHES_RENEW = sql("UPDATE vlm_batches SET lease_until = ? WHERE lease_owner = ?")
ITEMS_RELEASE = sql(
    "UPDATE vlm_batch_items SET state = ?, owner = NULL, lease_until = NULL WHERE owner = ? AND state = ?"
)
JOBS_RELEASE = sql("UPDATE vlm_jobs SET status = ?, owner = NULL, lease_until = NULL WHERE owner = ? AND status = ?")
BATCHES_RELEASE = sql("UPDATE vlm_batches SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = ?")

# ---- API keys (security/keys.py)
KEY_INSERT = sql(
    "INSERT INTO vlm_api_keys (id, name, hash, prefix, scopes, models, rpm, tpm, concurrency, created_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
KEYS_ALL = sql("SELECT * FROM vlm_api_keys")
KEYS_LIST = sql("SELECT * FROM vlm_api_keys ORDER BY created_at")
KEYS_LIST_ACTIVE = sql("SELECT * FROM vlm_api_keys WHERE revoked_at IS NULL ORDER BY created_at")
KEY_REVOKE = sql("UPDATE vlm_api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
KEYS_DELETE = sql("DELETE FROM vlm_api_keys")

# ---- stored responses of the Responses API (responses_store.py)
RESPONSE_SAVE = sql(
    "INSERT INTO vlm_responses (id, key_id, previous_id, status, created_at, updated_at, input_items, response) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET status = excluded.status, updated_at = excluded.updated_at, "
    "response = excluded.response"
)
RESPONSE_GET = sql(
    "SELECT id, key_id, previous_id, status, created_at, updated_at, input_items, response "
    "FROM vlm_responses WHERE id = ?"
)
RESPONSE_LINK = sql("SELECT id, key_id, previous_id, input_items, response FROM vlm_responses WHERE id = ?")
RESPONSE_DELETE = sql("DELETE FROM vlm_responses WHERE id = ?")
