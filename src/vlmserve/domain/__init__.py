"""Plain typed data: requests, messages, parts, usage, model specs."""
