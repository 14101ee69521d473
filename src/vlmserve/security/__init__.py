"""API keys (hashed, scoped, with a model allowlist) and per-key rate limits."""
