"""Durable batch work: OpenAI Files + Batches and async single jobs.

`db.py` (SQLite / PostgreSQL drivers, one SQL dialect switch), `migrations.py` (numbered schema),
`queries.py` (every SQL statement, named; `?` numbered for PostgreSQL by `sqltext.py`), `store.py` (one store
per aggregate: `files_store.py`, `batch_store.py` for batches and their lines, `job_store.py` for async jobs and
leases; `responses_store.py`), `validate.py` (batch input lines),
`worker.py` (claims work with leases, runs it through an injected executor, finalizes batches).
Nothing here imports the API or the services: `api/batch_runtime.py` wires them in.
"""
