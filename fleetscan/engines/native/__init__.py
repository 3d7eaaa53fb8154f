"""The native engine: one POSIX sh script gathers every fact a profile needs; Python evaluates."""
