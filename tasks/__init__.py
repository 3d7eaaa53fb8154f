"""Prefect tasks: one pipeline step each, thin wrappers over `fleetscan` adding retries, timeouts and tags."""
