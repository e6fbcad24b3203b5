"""convscope HTTP API: parses, validates, dispatches and serialises. Never imports torch."""
