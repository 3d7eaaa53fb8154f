"""Scanning engines: turn a profile and a way into a container into HDF results."""
