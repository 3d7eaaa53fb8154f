"""In-memory object store: resourceVersions, uids, and a bounded event history for watches."""

from __future__ import annotations

import asyncio
import builtins
import copy
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from .clock import Clock
from .errors import ApiError
from .resources import BY_KEY, ResourceType

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, name); namespace "" for cluster-scoped objects


@dataclass(frozen=True)
class Event:
    rv: int
    resource: tuple[str, str]
    type: str  # ADDED, MODIFIED, DELETED
    obj: Obj


class Store:
    """Not thread-safe: every mutation happens on the emulator's event loop."""

    def __init__(self, clock: Clock, history: int = 10_000) -> None:
        self.clock = clock
        self._objects: dict[tuple[str, str], dict[Key, Obj]] = {key: {} for key in BY_KEY}
        self._rv = 1
        self.history: deque[Event] = deque(maxlen=history)
        self._watchers: dict[tuple[str, str], set[asyncio.Queue[Event | None]]] = {}

    def _table(self, rt: ResourceType) -> dict[Key, Obj]:
        return self._objects.setdefault(rt.key, {})  # custom resources appear with their CRD

    @property
    def resource_version(self) -> int:
        return self._rv

    def oldest_rv(self) -> int:
        return self.history[0].rv if self.history else self._rv + 1

    def expired(self, rv: int) -> bool:
        """Whether changes since `rv` have left the retained history (etcd compaction: 410 Gone)."""
        return rv < self.oldest_rv() - 1 and rv < self._rv

    # -- reads -----------------------------------------------------------------------------
    def get(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        obj = self._table(rt).get((namespace if rt.namespaced else "", name))
        if obj is None:
            raise ApiError.not_found(rt, name)
        return obj

    def find(self, rt: ResourceType, namespace: str, name: str) -> Obj | None:
        return self._table(rt).get((namespace if rt.namespaced else "", name))

    def list(
        self, rt: ResourceType, namespace: str = "", accept: Callable[[Obj], bool] | None = None
    ) -> builtins.list[Obj]:
        items: Iterator[Obj] = iter(self._table(rt).values())
        if namespace and rt.namespaced:
            items = (o for o in items if o["metadata"]["namespace"] == namespace)
        out = [o for o in items if accept is None or accept(o)]
        out.sort(key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))
        return out

    # -- writes ----------------------------------------------------------------------------
    def _next_rv(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _emit(self, rt: ResourceType, type_: str, obj: Obj) -> None:
        event = Event(self._rv, rt.key, type_, obj)
        self.history.append(event)
        for queue in self._watchers.get(rt.key, ()):
            queue.put_nowait(event)

    def create(self, rt: ResourceType, obj: Obj) -> Obj:
        meta = obj.setdefault("metadata", {})
        key = (meta.get("namespace", "") if rt.namespaced else "", meta["name"])
        if key in self._table(rt):
            raise ApiError.already_exists(rt, meta["name"])
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", self.clock.iso())
        meta.setdefault("generation", 1)
        meta["resourceVersion"] = self._next_rv()
        self._table(rt)[key] = obj
        self._emit(rt, "ADDED", obj)
        return obj

    def replace(self, rt: ResourceType, obj: Obj, *, bump_generation: bool = False) -> Obj:
        """Store a new version of an existing object (optimistic concurrency is the caller's)."""
        meta = obj["metadata"]
        key = (meta.get("namespace", "") if rt.namespaced else "", meta["name"])
        old = self._table(rt).get(key)
        if old is None:
            raise ApiError.not_found(rt, meta["name"])
        for field in ("uid", "creationTimestamp"):
            meta[field] = old["metadata"][field]
        meta["generation"] = old["metadata"].get("generation", 1) + (1 if bump_generation else 0)
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
        meta["resourceVersion"] = self._next_rv()
        self._table(rt)[key] = obj
        self._emit(rt, "MODIFIED", obj)
        return obj

    def delete(self, rt: ResourceType, namespace: str, name: str) -> Obj:
        key = (namespace if rt.namespaced else "", name)
        obj = self._table(rt).pop(key, None)
        if obj is None:
            raise ApiError.not_found(rt, name)
        obj = copy.copy(obj)
        obj["metadata"] = dict(obj["metadata"], resourceVersion=self._next_rv())
        self._emit(rt, "DELETED", obj)
        return obj

    # -- watches ---------------------------------------------------------------------------
    def subscribe(self, rt: ResourceType) -> asyncio.Queue[Event | None]:
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self._watchers.setdefault(rt.key, set()).add(queue)
        return queue

    def unsubscribe(self, rt: ResourceType, queue: asyncio.Queue[Event | None]) -> None:
        self._watchers.get(rt.key, set()).discard(queue)

    def close_watches(self) -> None:
        for queues in self._watchers.values():
            for queue in queues:
                queue.put_nowait(None)

    def events_since(self, rt: ResourceType, rv: int) -> builtins.list[Event]:
        return [e for e in self.history if e.rv > rv and e.resource == rt.key]
