"""Numbered schema migrations, applied in order once per database (table `vlm_migrations`).

`{blob}` becomes BLOB (SQLite) or BYTEA (PostgreSQL). Times are DOUBLE PRECISION epoch seconds. Never edit an
applied migration: add the next number.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (
        1,
        "files, batches, batch items, jobs",
        [
            """CREATE TABLE vlm_files (
                id TEXT PRIMARY KEY, purpose TEXT NOT NULL, filename TEXT NOT NULL, bytes BIGINT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION, line_count BIGINT)""",
            "CREATE INDEX vlm_files_purpose ON vlm_files (purpose, id)",
            """CREATE TABLE vlm_file_chunks (
                file_id TEXT NOT NULL, seq INTEGER NOT NULL, data {blob} NOT NULL, PRIMARY KEY (file_id, seq))""",
            """CREATE TABLE vlm_batches (
                id TEXT PRIMARY KEY, endpoint TEXT NOT NULL, input_file_id TEXT NOT NULL,
                completion_window TEXT NOT NULL, status TEXT NOT NULL, metadata TEXT, errors TEXT,
                output_file_id TEXT, error_file_id TEXT, created_at DOUBLE PRECISION NOT NULL,
                in_progress_at DOUBLE PRECISION, expires_at DOUBLE PRECISION NOT NULL,
                finalizing_at DOUBLE PRECISION, completed_at DOUBLE PRECISION, failed_at DOUBLE PRECISION,
                expired_at DOUBLE PRECISION, cancelling_at DOUBLE PRECISION, cancelled_at DOUBLE PRECISION,
                lease_owner TEXT, lease_until DOUBLE PRECISION)""",
            "CREATE INDEX vlm_batches_status ON vlm_batches (status)",
            """CREATE TABLE vlm_batch_items (
                batch_id TEXT NOT NULL, line_no INTEGER NOT NULL, custom_id TEXT NOT NULL, model TEXT NOT NULL,
                body TEXT NOT NULL, state TEXT NOT NULL, owner TEXT, lease_until DOUBLE PRECISION,
                attempts INTEGER NOT NULL DEFAULT 0, status_code INTEGER, request_id TEXT, response TEXT,
                error TEXT, prompt_tokens BIGINT NOT NULL DEFAULT 0, completion_tokens BIGINT NOT NULL DEFAULT 0,
                finished_at DOUBLE PRECISION,
                PRIMARY KEY (batch_id, line_no), UNIQUE (batch_id, custom_id))""",
            "CREATE INDEX vlm_batch_items_claim ON vlm_batch_items (batch_id, state, model, line_no)",
            """CREATE TABLE vlm_jobs (
                id TEXT PRIMARY KEY, kind TEXT NOT NULL, status TEXT NOT NULL, body TEXT NOT NULL, result TEXT,
                error TEXT, owner TEXT, lease_until DOUBLE PRECISION, attempts INTEGER NOT NULL DEFAULT 0,
                created_at DOUBLE PRECISION NOT NULL, completed_at DOUBLE PRECISION)""",
            "CREATE INDEX vlm_jobs_status ON vlm_jobs (status, created_at)",
        ],
    ),
    (
        2,
        "API keys (hashed secrets, scopes, model allowlist, per-key limits)",
        [
            """CREATE TABLE vlm_api_keys (
                id TEXT PRIMARY KEY, name TEXT NOT NULL, hash TEXT NOT NULL UNIQUE, prefix TEXT NOT NULL,
                scopes TEXT NOT NULL, models TEXT, rpm BIGINT, tpm BIGINT, concurrency BIGINT,
                created_at DOUBLE PRECISION NOT NULL, revoked_at DOUBLE PRECISION)""",
        ],
    ),
    (
        3,
        "the creating API key's model allowlist on each batch (JSON list; NULL: every model)",
        ["ALTER TABLE vlm_batches ADD COLUMN models TEXT"],
    ),
    (
        4,
        "the id of the API key that submitted each async job (NULL: submitted with no key)",
        ["ALTER TABLE vlm_jobs ADD COLUMN key_id TEXT"],
    ),
    (
        5,
        "stored responses of the Responses API (jobs/responses_store.py)",
        [
            """CREATE TABLE vlm_responses (
                id TEXT PRIMARY KEY, key_id TEXT, previous_id TEXT, status TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL,
                input_items TEXT NOT NULL, response TEXT NOT NULL)""",
        ],
    ),
]
