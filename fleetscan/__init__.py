"""fleetscan: Prefect-orchestrated compliance scanning inside running containers on Kubernetes."""

__version__ = "0.1.0"
