"""A Python handle on a running emulator's control API (works for in-process and separate emulators)."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import Any


class EmulatorControlError(RuntimeError):
    pass


class EmulatorClient:
    def __init__(self, url: str, ca_pem: bytes, admin_token: str) -> None:
        self.url = url.rstrip("/")
        self._token = admin_token
        self._ctx = ssl.create_default_context(cadata=ca_pem.decode())

    def _call(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> Any:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, context=self._ctx, timeout=600) as resp:
                payload = resp.read()
        except urllib.error.HTTPError as exc:
            raise EmulatorControlError(f"{method} {path}: {exc.code} {exc.read().decode(errors='replace')}") from exc
        return json.loads(payload) if payload else None

    def advance_clock(self, seconds: float) -> float:
        return float(self._call("POST", "/_emu/clock/advance", {"seconds": seconds})["now"])

    def audit(self, **filters: str) -> list[dict[str, Any]]:
        query = urllib.parse.urlencode({k: v for k, v in filters.items() if v is not None})
        return list(self._call("GET", "/_emu/audit" + (f"?{query}" if query else ""))["items"])

    def clear_audit(self) -> None:
        self._call("DELETE", "/_emu/audit")

    def set_faults(
        self,
        *,
        latency: list[dict[str, Any]] | None = None,
        errors: list[dict[str, Any]] | None = None,
        exec_drop_after_bytes: int | None = None,
        exec_drop_count: int = -1,
        exec_stall: list[dict[str, Any]] | None = None,
        node_latency: list[dict[str, Any]] | None = None,
        exec_kill: list[dict[str, Any]] | None = None,
        seed: int | None = None,
    ) -> None:
        """latency: [{"path": regex, "seconds": s, "method": "GET"}]; errors: [{"path": regex,
        "code": 403|429|500|503, "rate": 0..1, "retry_after": s, "count": n}]; exec_drop_after_bytes:
        cut exec streams after N bytes (the next `exec_drop_count` of them; -1 = all); exec_stall:
        [{"path": regex, "seconds": s}] keeps matching exec streams open and silent for s seconds;
        node_latency: [{"node": regex, "seconds": s}] delays every exec into pods on matching nodes;
        exec_kill: [{"path": regex, "after": s, "action": "restart"|"delete", "count": n}] restarts the
        container (or deletes the pod) of a matching exec once it has run s seconds."""
        spec: dict[str, Any] = {
            "latency": latency or [],
            "errors": errors or [],
            "exec_drop_after_bytes": exec_drop_after_bytes,
            "exec_drop_count": exec_drop_count,
            "exec_stall": exec_stall or [],
            "node_latency": node_latency or [],
            "exec_kill": exec_kill or [],
        }
        if seed is not None:
            spec["seed"] = seed
        self._call("PUT", "/_emu/faults", spec)

    def clear_faults(self) -> None:
        self._call("DELETE", "/_emu/faults")

    def delete_pod(self, namespace: str, name: str) -> None:
        self._call("POST", "/_emu/pods/delete", {"namespace": namespace, "name": name})

    def restart_container(self, namespace: str, name: str, container: str) -> dict[str, Any]:
        """Kill the container's processes (execs in flight too) and start it afresh; the new pod."""
        return dict(
            self._call("POST", "/_emu/pods/restart", {"namespace": namespace, "name": name, "container": container})
        )

    def add_user(self, name: str, groups: list[str] | None = None) -> str:
        """A bearer token for a static identity (bind RBAC to the User `name` or its groups)."""
        return str(self._call("POST", "/_emu/users", {"name": name, "groups": groups or []})["token"])

    def settings(
        self,
        *,
        exec_requires_create: bool | None = None,
        default_memory_limit: str | None = None,
        bookmark_interval: float | None = None,
    ) -> dict[str, Any]:
        """Pre-1.35 exec authorization; the memory limit of containers created from now on whose spec
        sets none (a quantity, "0" for none); seconds between watch bookmarks."""
        body = {
            k: v
            for k, v in {
                "exec_requires_create": exec_requires_create,
                "default_memory_limit": default_memory_limit,
                "bookmark_interval": bookmark_interval,
            }.items()
            if v is not None
        }
        return dict(self._call("POST", "/_emu/settings", body))

    def load_scenario(self, text: str) -> dict[str, int]:
        return dict(self._call("POST", "/_emu/scenario", raw=text.encode()))
