"""Kubernetes names are validated before they reach an API path, a manifest or a shell."""

from __future__ import annotations

import re

from ..errors import UsageError

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def check_label(value: str, what: str) -> str:
    """An RFC 1123 label: namespaces, container names, run ids."""
    if len(value) > 63 or not _LABEL.match(value):
        raise UsageError(
            f"{what} {value!r} is not a valid name (RFC 1123 label: lower case letters, digits and "
            "'-', at most 63 characters, starting and ending with a letter or digit)"
        )
    return value


def check_subdomain(value: str, what: str) -> str:
    """An RFC 1123 subdomain: pods, service accounts, roles and most other objects."""
    if len(value) > 253 or not _SUBDOMAIN.match(value):
        raise UsageError(
            f"{what} {value!r} is not a valid name (RFC 1123 subdomain: lower case letters, digits, "
            "'-' and '.', starting and ending with a letter or digit)"
        )
    return value
