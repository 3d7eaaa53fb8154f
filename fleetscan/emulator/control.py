"""The admin-only control API (/_emu/...): the clock, faults, audit log, users and scenarios."""

from __future__ import annotations

import json
from typing import Any

import yaml
from aiohttp import web

from .api import CLUSTER_KEY, json_response
from .cluster import PODS
from .errors import ApiError
from .pods import parse_quantity


async def _json(request: web.Request) -> Any:
    raw = await request.read()
    try:
        return json.loads(raw) if raw else {}
    except ValueError as exc:
        raise ApiError.bad_request(f"control API bodies are JSON: {exc}") from exc


async def advance_clock(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER_KEY]
    body = await _json(request)
    try:
        cluster.clock.advance(float(body.get("seconds", 0)))
    except (TypeError, ValueError) as exc:
        raise ApiError.bad_request(str(exc)) from exc
    return json_response({"now": cluster.clock.now()})


async def audit(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER_KEY]
    if request.method == "DELETE":
        cluster.audit.clear()
        return json_response({})
    try:
        entries = cluster.audit.query(**dict(request.query))
    except AttributeError as exc:
        raise ApiError.bad_request(f"unknown audit field: {exc}") from exc
    return json_response({"items": [e.to_dict() for e in entries]})


async def faults(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER_KEY]
    if request.method == "DELETE":
        cluster.faults.clear()
    else:
        try:
            cluster.faults.configure(await _json(request))
        except (KeyError, TypeError, ValueError) as exc:
            raise ApiError.bad_request(f"invalid fault spec: {exc}") from exc
    return json_response({})


async def delete_pod(request: web.Request) -> web.Response:
    """The node loses a pod: gone at once, no grace period, not replaced."""
    cluster = request.app[CLUSTER_KEY]
    body = await _json(request)
    obj = cluster.api_delete(PODS, body.get("namespace", ""), body.get("name", ""))
    return json_response(obj)


async def restart_container(request: web.Request) -> web.Response:
    """The container is killed (execs in flight with it) and started afresh, as after a crash."""
    cluster = request.app[CLUSTER_KEY]
    body = await _json(request)
    pod = cluster.restart_container(body.get("namespace", ""), body.get("name", ""), body.get("container", ""))
    return json_response(pod)


async def add_user(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER_KEY]
    body = await _json(request)
    if not body.get("name"):
        raise ApiError.bad_request("a user needs a name")
    token = cluster.authn.add_static_user(body["name"], list(body.get("groups") or []))
    return json_response({"token": token})


async def settings(request: web.Request) -> web.Response:
    cluster = request.app[CLUSTER_KEY]
    body = await _json(request)
    try:
        if "exec_requires_create" in body:
            cluster.exec_requires_create = bool(body["exec_requires_create"])
        if "default_memory_limit" in body:
            cluster.pods.default_memory_limit = parse_quantity(body["default_memory_limit"])
        if "bookmark_interval" in body:
            cluster.bookmark_interval = max(0.05, float(body["bookmark_interval"]))
    except (TypeError, ValueError) as exc:
        raise ApiError.bad_request(f"invalid settings: {exc}") from exc
    return json_response(
        {
            "exec_requires_create": cluster.exec_requires_create,
            "default_memory_limit": cluster.pods.default_memory_limit,
            "bookmark_interval": cluster.bookmark_interval,
            "memory_limits": cluster.pods.runtime.cgroups.memory_mode,
        }
    )


async def load_scenario(request: web.Request) -> web.Response:
    from .scenario import ScenarioError, apply_scenario, parse_scenario

    cluster = request.app[CLUSTER_KEY]
    text = (await request.read()).decode()
    try:
        scenario = parse_scenario(text, "<request>")
        summary = apply_scenario(cluster, scenario)
    except (ScenarioError, yaml.YAMLError) as exc:
        raise ApiError.bad_request(str(exc)) from exc
    return json_response(summary)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/_emu/clock/advance", advance_clock)
    app.router.add_route("GET", "/_emu/audit", audit)
    app.router.add_route("DELETE", "/_emu/audit", audit)
    app.router.add_route("PUT", "/_emu/faults", faults)
    app.router.add_route("DELETE", "/_emu/faults", faults)
    app.router.add_post("/_emu/pods/delete", delete_pod)
    app.router.add_post("/_emu/pods/restart", restart_container)
    app.router.add_post("/_emu/users", add_user)
    app.router.add_post("/_emu/settings", settings)
    app.router.add_post("/_emu/scenario", load_scenario)
