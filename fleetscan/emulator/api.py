"""The REST side of the API server: authentication, faults, authorization, audit, CRUD and watch."""

from __future__ import annotations

import asyncio
import base64
import copy
import email.utils
import json
import logging
from collections.abc import Callable
from typing import Any

import yaml
from aiohttp import web
from aiohttp.typedefs import Handler

from . import discovery, events, protobuf
from .audit import AuditEntry
from .authn import ANONYMOUS, User, service_account_user
from .cluster import Cluster
from .errors import ApiError
from .exec_ws import handle_exec
from .patching import apply_patch
from .rbac import Attributes
from .requestinfo import RequestInfo, parse
from .resources import BY_KEY, ResourceType
from .selectors import make_filter
from .tables import table

log = logging.getLogger(__name__)
CLUSTER_KEY = web.AppKey("cluster", Cluster)
INFO_KEY = web.RequestKey("info", RequestInfo)
USER_KEY = web.RequestKey("user", User)
UNAUDITED = ("/_emu/",)
CORE_EVENTS = BY_KEY[("", "events")]
EVENTS_V1 = BY_KEY[("events.k8s.io", "events")]
Converter = Callable[[dict[str, Any]], dict[str, Any]]


async def date_from_clock(request: web.Request, response: web.StreamResponse) -> None:
    """The Date header tells the server's time, as a real API server's does: from the adjustable
    clock, so clients that judge expiry by the server's time (fleetscan gc) follow it."""
    response.headers["Date"] = email.utils.formatdate(request.app[CLUSTER_KEY].clock.now(), usegmt=True)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


def error_response(err: ApiError) -> web.Response:
    return json_response(err.status(), err.code, err.headers)


def forbidden_message(user: User, a: Attributes) -> str:
    if not a.is_resource:
        return f'forbidden: User "{user.name}" cannot {a.verb} path "{a.path}"'
    qualified = f"{a.resource}.{a.api_group}" if a.api_group else a.resource
    target = f'{qualified} "{a.name}"' if a.name else qualified
    full = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
    scope = f'in the namespace "{a.namespace}"' if a.namespace else "at the cluster scope"
    return (
        f'{target} is forbidden: User "{user.name}" cannot {a.verb} resource "{full}" in API group '
        f'"{a.api_group}" {scope}'
    )


def attributes(info: RequestInfo) -> Attributes:
    return Attributes(
        info.verb,
        info.namespace,
        info.api_group,
        info.resource,
        info.subresource,
        info.name,
        info.is_resource,
        info.path,
    )


def bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    return header[7:].strip() if header[:7].lower() == "bearer " else None


def impersonate(cluster: Cluster, request: web.Request, user: User) -> User:
    """`kubectl --as/--as-group`: act as another identity if allowed to `impersonate` it."""
    name = request.headers.get("Impersonate-User")
    groups = request.headers.getall("Impersonate-Group", [])
    if not name and not groups:
        return user
    if not name:
        raise ApiError.bad_request("requested impersonation of groups without a user")
    checks: list[Attributes] = []
    if name.startswith("system:serviceaccount:") and name.count(":") == 3:
        _, _, ns, sa = name.split(":")
        checks.append(Attributes("impersonate", ns, "", "serviceaccounts", name=sa))
        target = service_account_user(ns, sa)
        if groups:
            target = User(name, (*groups, "system:authenticated"))
    else:
        checks.append(Attributes("impersonate", "", "", "users", name=name))
        target = User(name, (*groups, "system:authenticated"))
    checks += [Attributes("impersonate", "", "", "groups", name=g) for g in groups]
    for attrs in checks:
        if not cluster.authz.allowed(user, attrs):
            raise ApiError.forbidden(forbidden_message(user, attrs))
    return target


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    cluster = request.app[CLUSTER_KEY]
    info = parse(request.method, request.path, request.query)
    user = cluster.authn.authenticate(bearer(request))
    allowed, code = False, 500
    arrived = cluster.clock.now()
    try:
        if user is None:
            raise ApiError.unauthorized()
        user = impersonate(cluster, request, user)
        request[INFO_KEY], request[USER_KEY] = info, user
        if request.path.startswith("/_emu/"):
            if not user.is_master:
                raise ApiError.forbidden(f'forbidden: User "{user.name}" cannot use the emulator control API')
            return await handler(request)
        delay = cluster.faults.delay_for(request.method, request.path)
        if delay:
            await asyncio.sleep(delay)
        injected = cluster.faults.error_for(request.method, request.path)
        if injected:
            reason = {403: "Forbidden", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable"}[
                injected.code
            ]
            headers = {"Retry-After": str(injected.retry_after)} if injected.code in (429, 503) else {}
            raise ApiError(
                injected.code, reason, f"injected fault: {reason}", {"retryAfterSeconds": injected.retry_after}, headers
            )
        attrs = attributes(info)
        # exec authorizes itself: it needs two verbs
        if info.subresource != "exec" and not cluster.authz.allowed(user, attrs):
            if user is ANONYMOUS:
                raise ApiError.unauthorized()
            rt = cluster.resources.get((info.api_group, info.resource))
            raise ApiError.forbidden(forbidden_message(user, attrs), rt, info.name)
        allowed = True
        response = await handler(request)
        code = response.status
        allowed = code != 403
        return response
    except ApiError as err:
        code = err.code
        return error_response(err)
    except web.HTTPException:
        raise
    except Exception:  # an emulator bug must still answer like an API server
        log.exception("internal error on %s %s", request.method, request.path)
        code = 500
        return error_response(
            ApiError(500, "InternalError", "an error on the server has prevented the request from succeeding")
        )
    finally:
        if not request.path.startswith(UNAUDITED):
            who = user or User("<invalid token>", ())
            cluster.audit.add(
                AuditEntry(
                    cluster.clock.now(),
                    who.name,
                    who.groups,
                    request.method,
                    request.path,
                    info.verb,
                    info.api_group,
                    info.resource,
                    info.subresource,
                    info.namespace,
                    info.name,
                    allowed and code not in (401, 403),
                    code,
                    arrived,
                )
            )


# -- non-resource endpoints -----------------------------------------------------------------------
async def version(request: web.Request) -> web.Response:
    return json_response(discovery.VERSION)


async def health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def api_root(request: web.Request) -> web.Response:
    return json_response(discovery.api_versions(f"{request.host}"))


async def apis_root(request: web.Request) -> web.Response:
    return json_response(discovery.api_group_list(request.app[CLUSTER_KEY].resources))


# -- resources ------------------------------------------------------------------------------------
async def _body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw:
        return {}
    try:
        if request.content_type == protobuf.CONTENT_TYPE:
            return protobuf.decode_request(raw)
        if "yaml" in request.content_type:
            return yaml.safe_load(raw)
        return json.loads(raw)
    except (ValueError, yaml.YAMLError) as exc:
        raise ApiError.bad_request(f"the request body could not be decoded: {exc}") from exc


def _resolve(cluster: Cluster, info: RequestInfo) -> ResourceType:
    rt = cluster.resources.lookup(info.api_group, info.api_version, info.resource)
    if rt is None:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    if info.subresource and rt.subresource(info.subresource) is None:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    return rt


def _list_kind(rt: ResourceType) -> str:
    return f"{rt.kind}List"


async def resource_handler(request: web.Request) -> web.StreamResponse:
    cluster = request.app[CLUSTER_KEY]
    info: RequestInfo = request[INFO_KEY]
    user: User = request[USER_KEY]
    if not info.is_resource:  # /api/v1, /apis/g, /apis/g/v
        parts = [p for p in request.path.split("/") if p]
        registry = cluster.resources
        doc = (
            discovery.resource_list(registry, "", parts[1])
            if parts[0] == "api" and len(parts) == 2
            else discovery.api_group(registry, parts[1])
            if len(parts) == 2
            else discovery.resource_list(registry, parts[1], parts[2])
            if len(parts) == 3
            else None
        )
        if doc is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return json_response(doc)
    view = _resolve(cluster, info)
    rt, present, stored = _storage(view)
    ns = info.namespace if rt.namespaced else ""
    if rt is BY_KEY[("", "namespaces")]:
        ns = ""
    if info.subresource == "exec":
        return await handle_exec(request, cluster, info, user)
    if info.subresource == "log":
        return _log(request, cluster, info)
    if rt.virtual:
        if info.verb != "create":
            raise ApiError.method_not_allowed()
        return json_response(cluster.review(rt, info.namespace, await _body(request), user), 201)
    if info.subresource == "token":
        if info.verb != "create":
            raise ApiError.method_not_allowed()
        return json_response(cluster.token_request(info.namespace, info.name, await _body(request)), 201)
    if info.subresource == "scale":
        return await _scale(request, cluster, rt, info, user)
    verb = info.verb
    if verb in ("list", "watch", "deletecollection"):
        accept = make_filter(request.query.get("labelSelector"), request.query.get("fieldSelector"))
        if verb == "watch":
            return await _watch(request, cluster, rt, ns, accept, present)
        items = cluster.store.list(rt, ns, accept)
        if verb == "deletecollection":
            for item in items:
                cluster.api_delete(rt, item["metadata"].get("namespace", ""), item["metadata"]["name"])
            body = {"kind": _list_kind(view), "apiVersion": view.api_version, "metadata": {}}
            return json_response(body | {"items": [present(o) for o in items]})
        return _list_response(request, cluster, view, [present(o) for o in items])
    name = info.name
    if verb == "get":
        obj = cluster.store.get(rt, ns, name)
        return _object_response(request, cluster, view, present(obj))
    if verb == "create":
        body = stored(await _body(request))
        _admit_event(view, rt, body, info.namespace)
        return json_response(present(cluster.api_create(rt, info.namespace, body, user)), 201)
    if verb == "update":
        body = stored(await _body(request))
        _admit_event(view, rt, body, ns)
        return json_response(present(cluster.api_update(rt, ns, name, body, user, info.subresource)))
    if verb == "patch":
        current = present(copy.deepcopy(cluster.store.get(rt, ns, name)))
        body = await _body(request)
        patched = stored(apply_patch(request.content_type, current, body))
        _admit_event(view, rt, patched, ns)
        # Only a patch that names a resourceVersion asks for optimistic concurrency.
        has_rv = isinstance(body, dict) and "resourceVersion" in (body.get("metadata") or {})
        updated = cluster.api_update(rt, ns, name, patched, user, info.subresource, check_rv=has_rv)
        return json_response(present(updated))
    if verb == "delete":
        return json_response(present(cluster.api_delete(rt, ns, name)))
    raise ApiError.method_not_allowed()


def _same(obj: dict[str, Any]) -> dict[str, Any]:
    return obj


def _storage(view: ResourceType) -> tuple[ResourceType, Converter, Converter]:
    """The resource that stores `view`'s objects, and the conversions to and from it: events.k8s.io/v1
    events are core/v1 events seen through another schema."""
    if view is EVENTS_V1:
        return CORE_EVENTS, events.to_events_v1, lambda o: events.to_core(o) if isinstance(o, dict) else o
    return view, _same, _same


def _admit_event(view: ResourceType, rt: ResourceType, body: Any, namespace: str) -> None:
    if rt is CORE_EVENTS and isinstance(body, dict):
        body.setdefault("metadata", {}).setdefault("namespace", namespace)
        if causes := events.validate(body, from_events_api=view is EVENTS_V1):
            raise ApiError.invalid(view, body["metadata"].get("name", ""), causes)


def _columns(cluster: Cluster, rt: ResourceType) -> tuple[dict[str, Any], ...]:
    """A custom resource's printer columns (its CRD's additionalPrinterColumns)."""
    custom = cluster.resources.custom(rt)
    return custom.columns if custom is not None else ()


def _wants_table(request: web.Request) -> bool:
    return "as=Table" in request.headers.get("Accept", "")


def _object_response(request: web.Request, cluster: Cluster, rt: ResourceType, obj: dict[str, Any]) -> web.Response:
    if _wants_table(request):
        return json_response(
            table(
                rt.kind,
                [obj],
                cluster.clock,
                {"resourceVersion": obj["metadata"]["resourceVersion"]},
                request.query.get("includeObject", "Metadata"),
                _columns(cluster, rt),
            )
        )
    return json_response(obj)


def _list_response(
    request: web.Request, cluster: Cluster, rt: ResourceType, items: list[dict[str, Any]]
) -> web.Response:
    """A list, paged by `limit`/`continue` as the API server does: the token names the list's
    resourceVersion and the last key served, so objects added or removed between pages neither
    repeat nor push others out; a token older than the retained history is 410 Expired."""
    rv = cluster.store.resource_version
    meta: dict[str, Any] = {"resourceVersion": str(rv)}
    token = request.query.get("continue")
    if token:
        try:
            decoded = json.loads(base64.urlsafe_b64decode(token))
            list_rv, after = int(decoded["rv"]), tuple(decoded["after"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ApiError.bad_request(f"continue key is not valid: {exc}") from exc
        if cluster.store.expired(list_rv):
            raise ApiError(
                410,
                "Expired",
                "The provided continue parameter is too old to display a consistent list result. You can start "
                "a new list without the continue parameter, or use the continue token in this response to "
                "retrieve the remainder of the results.",
            )
        meta["resourceVersion"] = str(list_rv)
        items = [o for o in items if _list_key(o) > after]
    try:
        limit = int(request.query.get("limit") or 0)
    except ValueError as exc:
        raise ApiError.bad_request(f"invalid limit: {exc}") from exc
    if 0 < limit < len(items):
        last = _list_key(items[limit - 1])
        payload = json.dumps({"rv": int(meta["resourceVersion"]), "after": list(last)}).encode()
        meta["continue"] = base64.urlsafe_b64encode(payload).decode()
        meta["remainingItemCount"] = len(items) - limit
        items = items[:limit]
    if _wants_table(request):
        include = request.query.get("includeObject", "Metadata")
        return json_response(table(rt.kind, items, cluster.clock, meta, include, _columns(cluster, rt)))
    return json_response({"kind": _list_kind(rt), "apiVersion": rt.api_version, "metadata": meta, "items": items})


def _list_key(obj: dict[str, Any]) -> tuple[str, str]:
    """The order the store lists objects in (namespace, then name), which continue tokens follow."""
    return (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])


async def _watch(
    request: web.Request, cluster: Cluster, rt: ResourceType, ns: str, accept: Any, present: Converter
) -> web.StreamResponse:
    """Events as JSON lines. A resourceVersion older than the retained history gets 410 Gone, as etcd
    compaction does on a real cluster, so clients must re-list."""
    store = cluster.store
    queue = store.subscribe(rt)
    try:
        rv_param = request.query.get("resourceVersion", "")
        backlog: list[dict[str, Any]] = []
        if rv_param and rv_param != "0":
            try:
                since = int(rv_param)
            except ValueError as exc:
                raise ApiError.bad_request(f"invalid resourceVersion {rv_param!r}") from exc
            if store.expired(since):
                gone = ApiError(410, "Expired", f"too old resource version: {since} ({store.oldest_rv() - 1})")
                backlog.append({"type": "ERROR", "object": gone.status()})
            else:
                backlog.extend(
                    {"type": e.type, "object": present(e.obj)}
                    for e in store.events_since(rt, since)
                    if _in_scope(e.obj, ns) and accept(e.obj)
                )
        else:
            backlog.extend({"type": "ADDED", "object": present(o)} for o in store.list(rt, ns, accept))
        response = web.StreamResponse(headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
        await response.prepare(request)
        for line in backlog:
            await response.write(json.dumps(line).encode() + b"\n")
        if backlog and backlog[0]["type"] == "ERROR":
            return response
        timeout = float(request.query.get("timeoutSeconds") or 1800)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # allowWatchBookmarks: a BOOKMARK with the current resourceVersion every interval and once
        # just before the timeout, so a client resumes from it instead of an expired version.
        interval = cluster.bookmark_interval if request.query.get("allowWatchBookmarks") in ("true", "1") else 0.0
        next_bookmark = min(loop.time() + interval, deadline - 0.5) if interval else float("inf")
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                event = await asyncio.wait_for(queue.get(), min(remaining, max(0.0, next_bookmark - loop.time())))
            except TimeoutError:
                now = loop.time()
                if now < next_bookmark:
                    break  # the watch's timeout
                skeleton = {"kind": rt.kind, "apiVersion": rt.api_version}
                bookmark = present(skeleton | {"metadata": {"resourceVersion": str(store.resource_version)}})
                await response.write(json.dumps({"type": "BOOKMARK", "object": bookmark}).encode() + b"\n")
                final = deadline - now <= 0.5
                next_bookmark = float("inf") if final else min(now + interval, deadline - 0.5)
                continue
            if event is None:
                break
            if _in_scope(event.obj, ns) and accept(event.obj):
                await response.write(json.dumps({"type": event.type, "object": present(event.obj)}).encode() + b"\n")
        return response
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    finally:
        store.unsubscribe(rt, queue)


def _in_scope(obj: dict[str, Any], ns: str) -> bool:
    return not ns or obj["metadata"].get("namespace") == ns


def _log(request: web.Request, cluster: Cluster, info: RequestInfo) -> web.Response:
    """What the container's main process wrote (`kubectl logs`), optionally only the last lines."""
    pod = cluster.store.get(BY_KEY[("", "pods")], info.namespace, info.name)
    names = [c["name"] for c in pod["spec"]["containers"]]
    name = request.query.get("container") or (names[0] if len(names) == 1 else "")
    if not name:
        raise ApiError.bad_request(
            f"a container name must be specified for pod {info.name}, choose one of: [{' '.join(names)}]"
        )
    ctr = cluster.pods.container(pod, name)
    if ctr is None:
        raise ApiError.bad_request(f'container "{name}" in pod "{info.name}" is waiting to start')
    lines = cluster.pods.runtime.log_tail(ctr, limit=10 * 1024 * 1024).splitlines()
    tail = request.query.get("tailLines", "")
    if tail.isdigit():
        lines = lines[len(lines) - int(tail) :] if int(tail) else []
    return web.Response(text="".join(f"{line}\n" for line in lines), content_type="text/plain")


async def _scale(
    request: web.Request, cluster: Cluster, rt: ResourceType, info: RequestInfo, user: User
) -> web.Response:
    obj = cluster.store.get(rt, info.namespace, info.name)
    if info.verb in ("update", "patch"):
        body = await _body(request)
        current = _scale_of(obj)
        wanted = apply_patch(request.content_type, current, body) if info.verb == "patch" else body
        replicas = int((wanted.get("spec") or {}).get("replicas", current["spec"]["replicas"]))
        new = copy.deepcopy(obj)
        new["spec"]["replicas"] = replicas
        obj = cluster.api_update(rt, info.namespace, info.name, new, user, check_rv=False)
    return json_response(_scale_of(obj))


def _scale_of(obj: dict[str, Any]) -> dict[str, Any]:
    labels = (obj["spec"].get("selector") or {}).get("matchLabels") or {}
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: obj["metadata"][k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
        },
        "spec": {"replicas": obj["spec"].get("replicas", 1)},
        "status": {
            "replicas": (obj.get("status") or {}).get("replicas", 0),
            "selector": ",".join(f"{k}={v}" for k, v in labels.items()),
        },
    }


async def openapi_v3(request: web.Request) -> web.Response:
    registry = request.app[CLUSTER_KEY].resources
    tail = request.match_info.get("tail", "").strip("/")
    if not tail:
        return json_response(discovery.openapi_index(registry))
    parts = tail.split("/")
    doc = None
    if parts[0] == "api" and len(parts) == 2:
        doc = discovery.openapi_group_version(registry, "", parts[1])
    elif parts[0] == "apis" and len(parts) == 3:
        doc = discovery.openapi_group_version(registry, parts[1], parts[2])
    if doc is None:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    return json_response(doc)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/openapi/v3", openapi_v3)
    app.router.add_get("/openapi/v3/{tail:.*}", openapi_v3)
    app.router.add_get("/version", version)
    app.router.add_get("/version/", version)
    for path in ("/healthz", "/livez", "/readyz"):
        app.router.add_get(path, health)
    app.router.add_get("/api", api_root)
    app.router.add_get("/api/", api_root)
    app.router.add_get("/apis", apis_root)
    app.router.add_get("/apis/", apis_root)
    app.router.add_route("*", "/api/{tail:.*}", resource_handler)
    app.router.add_route("*", "/apis/{tail:.*}", resource_handler)
