"""The browser playground (GET /ui) and status page (GET /ui/status): static files, no build step."""
