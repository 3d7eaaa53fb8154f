"""Prefect flows: compose the tasks; no Kubernetes or file-format logic here."""
