"""API errors carried as exceptions and rendered as the exact `Status` bodies of the API server."""

from __future__ import annotations

from typing import Any

from .resources import ResourceType


class ApiError(Exception):
    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details:
            body["details"] = self.details
        return body

    @staticmethod
    def _qualified(rt: ResourceType) -> str:
        return f"{rt.resource}.{rt.group}" if rt.group else rt.resource

    @classmethod
    def not_found(cls, rt: ResourceType, name: str) -> ApiError:
        return cls(
            404,
            "NotFound",
            f'{cls._qualified(rt)} "{name}" not found',
            {"name": name, "group": rt.group, "kind": rt.resource},
        )

    @classmethod
    def already_exists(cls, rt: ResourceType, name: str) -> ApiError:
        return cls(
            409,
            "AlreadyExists",
            f'{cls._qualified(rt)} "{name}" already exists',
            {"name": name, "group": rt.group, "kind": rt.resource},
        )

    @classmethod
    def conflict(cls, rt: ResourceType, name: str, why: str) -> ApiError:
        return cls(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {cls._qualified(rt)} "{name}": {why}',
            {"name": name, "group": rt.group, "kind": rt.resource},
        )

    @classmethod
    def invalid(cls, rt: ResourceType, name: str, causes: list[tuple[str, str]]) -> ApiError:
        text = ", ".join(f"{field}: {msg}" for field, msg in causes)
        return cls(
            422,
            "Invalid",
            f'{rt.kind} "{name}" is invalid: {text}',
            {
                "name": name,
                "group": rt.group,
                "kind": rt.kind,
                "causes": [{"reason": "FieldValueInvalid", "message": msg, "field": field} for field, msg in causes],
            },
        )

    @classmethod
    def bad_request(cls, message: str) -> ApiError:
        return cls(400, "BadRequest", message)

    @classmethod
    def unauthorized(cls) -> ApiError:
        return cls(401, "Unauthorized", "Unauthorized")

    @classmethod
    def forbidden(cls, message: str, rt: ResourceType | None = None, name: str = "") -> ApiError:
        details = {"name": name, "group": rt.group, "kind": rt.resource} if rt else None
        return cls(403, "Forbidden", message, details)

    @classmethod
    def method_not_allowed(cls) -> ApiError:
        return cls(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
