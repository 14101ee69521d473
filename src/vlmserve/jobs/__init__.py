"""Durable batch work: OpenAI Files + Batches and async single jobs.

`db.py` (SQLite / PostgreSQL drivers, one SQL dialect switch), `migrations.py` (numbered schema),
`store.py` (every query; files, batches, batch items with leases, jobs), `validate.py` (batch input lines),
`worker.py` (claims work with leases, runs it through an injected executor, finalizes batches).
Nothing here imports the API or the services: `api/batch_runtime.py` wires them in.
"""
