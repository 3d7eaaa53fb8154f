"""API clients for one cluster: one factory for every command, one rate limit per run, and every
call bounded in time, classified into fleetscan's typed errors and retried by the one policy."""

from __future__ import annotations

import copy
import email.utils
import functools
import inspect
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.config.config_exception import ConfigException

from ..errors import KubeError, Unauthorized, UsageError
from ..retry import RetryPolicy
from .errors import classify
from .websocket import Endpoint

T = TypeVar("T")

DEFAULT_QPS = 50.0
DEFAULT_BURST = 100
DEFAULT_REQUEST_TIMEOUT = 30.0
DEFAULT_PAGE_SIZE = 500


@dataclass(frozen=True)
class ClientSettings:
    """Client-side limits, so a fleet scan cannot flood the API server nor hang on a stalled one.
    Exec streams count as requests too (as in client-go), so these also bound execs per second;
    kubectl's defaults are 50 and 300."""

    qps: float = DEFAULT_QPS
    burst: int = DEFAULT_BURST
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT  # seconds per REST call (connect and each read)
    page_size: int = DEFAULT_PAGE_SIZE  # items per LIST page (limit/continue)
    retry: RetryPolicy = field(default_factory=RetryPolicy)


class RateLimiter:
    """Token bucket shared by every client of one run: `qps` per second, bursts up to `burst`."""

    def __init__(self, qps: float, burst: int) -> None:
        if qps <= 0 or burst < 1:
            raise UsageError(f"rate limit qps={qps} burst={burst}: both must be positive")
        self._rate = qps
        self._capacity = float(burst)
        self._tokens = float(burst)
        self._stamp = time.monotonic()
        self._lock = threading.Lock()
        self.waited = 0.0  # seconds callers spent waiting, for progress reports and benchmarks

    def acquire(self) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._rate)
                self._stamp = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                delay = (1 - self._tokens) / self._rate
                self.waited += delay
            time.sleep(delay)


class LimitedApiClient(k8s.ApiClient):
    """An ApiClient whose every REST request first takes a token from the shared limiter."""

    def __init__(self, configuration: k8s.Configuration, limiter: RateLimiter) -> None:
        super().__init__(configuration)
        self.limiter = limiter

    def call_api(self, *args: Any, **kwargs: Any) -> Any:
        self.limiter.acquire()
        return super().call_api(*args, **kwargs)


_PARAMETERS: dict[tuple[str, str], list[str]] = {}


def _parameters(api_type: type, method: str) -> list[str]:
    key = (api_type.__name__, method)
    if key not in _PARAMETERS:
        _PARAMETERS[key] = list(inspect.signature(getattr(api_type, method)).parameters)[1:]  # without self
    return _PARAMETERS[key]


def describe(method: str, params: list[str], args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
    """'create_namespaced_role(ns, body)' -> 'create role "fleetscan-r1" in namespace "shop"'."""
    bound = dict(zip(params, args, strict=False)) | kwargs
    words = method.replace("_for_all_namespaces", "").replace("namespaced_", "").split("_")
    verb, noun = words[0], " ".join(words[1:])
    name = bound.get("name")
    if name is None and isinstance(bound.get("body"), dict):
        name = (bound["body"].get("metadata") or {}).get("name")
    text = f"{verb} {noun}" + (f' "{name}"' if name else "")
    if bound.get("namespace"):
        text += f' in namespace "{bound["namespace"]}"'
    return text


class Api:
    """One typed API of the official client (CoreV1Api, ...) whose every call is rate limited, bounded
    by the request timeout, classified into fleetscan's errors, re-authenticated once after a 401 and
    retried by the run's policy. Call sites need no try/except of their own."""

    def __init__(self, api: Any, kube: Kube) -> None:
        self._api = api
        self._kube = kube

    def __getattr__(self, method: str) -> Any:
        fn = getattr(self._api, method)
        if method.startswith("_") or not callable(fn):
            return fn
        params = _parameters(type(self._api), method)
        settings = self._kube.settings

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get("watch"):  # a watch reads for timeout_seconds; bound that, plus slack
                if "timeout_seconds" in kwargs:
                    kwargs.setdefault("_request_timeout", (settings.request_timeout, kwargs["timeout_seconds"] + 30))
            else:
                kwargs.setdefault("_request_timeout", settings.request_timeout)
            action = describe(method, params, args, kwargs)

            def once() -> Any:
                try:
                    return fn(*args, **kwargs)
                except Exception as exc:
                    raise classify(exc, action) from exc

            return settings.retry.run(lambda: self._kube.reauthenticating(once), what=action)

        return call


class Kube:
    """Clients for one cluster and identity: REST calls share one ApiClient; exec streams connect
    on their own (fleetscan.kube.websocket), authenticated by the same configuration."""

    def __init__(
        self,
        configuration: k8s.Configuration,
        settings: ClientSettings | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.settings = settings or ClientSettings()
        # urllib3 would retry 429 and 503 answers (and dropped connections) by itself, out of sight:
        # fleetscan's policy is the one layer that retries.
        configuration.retries = False
        self.configuration = configuration
        self.limiter = limiter or RateLimiter(self.settings.qps, self.settings.burst)
        self.api = LimitedApiClient(configuration, self.limiter)
        self._endpoint: Endpoint | None = None
        self._reauthenticate: Callable[[], object] | None = None

    @classmethod
    def from_kubeconfig(
        cls, path: str | None = None, context: str | None = None, settings: ClientSettings | None = None
    ) -> Kube:
        cfg = k8s.Configuration()
        try:
            k8s_config.load_kube_config(
                config_file=path, context=context, client_configuration=cfg, persist_config=False
            )
        except (ConfigException, OSError, TypeError, ValueError, AttributeError, yaml.YAMLError) as exc:
            where = path or os.environ.get("KUBECONFIG") or "the default kubeconfig (~/.kube/config)"
            hint = f" (context {context!r})" if context else ""
            detail = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise UsageError(f"cannot load {where}{hint}: {detail}") from exc
        return cls(cfg, settings)

    @classmethod
    def in_cluster(cls, settings: ClientSettings | None = None) -> Kube:
        cfg = k8s.Configuration()
        try:
            k8s_config.load_incluster_config(client_configuration=cfg)
        except ConfigException as exc:
            raise UsageError(f"not running in a pod with a service account: {exc}") from exc
        return cls(cfg, settings)

    def with_token(self, token: Callable[[], str], refresh: Callable[[], object] | None = None) -> Kube:
        """The same cluster as another identity: `token()` is asked for the bearer token before every
        request, so a refreshed token is used at once; `refresh()` gets a new one after a 401.
        Shares this client's rate limit."""
        cfg = copy.copy(self.configuration)
        cfg.api_key = {}
        cfg.api_key_prefix = {}
        cfg.username = cfg.password = None
        cfg.cert_file = cfg.key_file = None

        def use_current(c: k8s.Configuration) -> None:
            c.api_key["BearerToken"] = f"Bearer {token()}"

        cfg.refresh_api_key_hook = use_current
        use_current(cfg)
        other = Kube(cfg, self.settings, self.limiter)
        other._reauthenticate = refresh
        return other

    def with_retry(self, retry: RetryPolicy) -> Kube:
        """The same identity and rate limit with another retry policy (e.g. none, for the emulator
        probes of tests)."""
        other = Kube(self.configuration, replace(self.settings, retry=retry), self.limiter)
        other._reauthenticate = self._reauthenticate
        return other

    def reauthenticating(self, call: Callable[[], T]) -> T:
        """Run `call`; after a 401 get a new token (if this identity can) and run it once more."""
        try:
            return call()
        except Unauthorized:
            if self._reauthenticate is None:
                raise
            self._reauthenticate()
            return call()

    # -- typed APIs -------------------------------------------------------------------------------
    @property
    def core(self) -> Any:
        return Api(k8s.CoreV1Api(self.api), self)

    @property
    def apps(self) -> Any:
        return Api(k8s.AppsV1Api(self.api), self)

    @property
    def batch(self) -> Any:
        return Api(k8s.BatchV1Api(self.api), self)

    @property
    def rbac(self) -> Any:
        return Api(k8s.RbacAuthorizationV1Api(self.api), self)

    @property
    def custom(self) -> Any:
        return Api(k8s.CustomObjectsApi(self.api), self)

    def endpoint(self) -> Endpoint:
        """Where this identity's execs connect (fleetscan.kube.websocket), worked out once."""
        if self._endpoint is None:
            self._endpoint = Endpoint.of(self.configuration)
        return self._endpoint

    def list_all(self, lister: Callable[..., Any], *args: Any, **kwargs: Any) -> list[Any]:
        """Every item of a LIST, fetched in pages of `page_size` (limit/continue), so one namespace
        with thousands of pods neither times out nor lands in one huge response."""
        return self.list_versioned(lister, *args, **kwargs)[0]

    def list_versioned(self, lister: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[list[Any], str]:
        """list_all, and the resourceVersion of the list (to watch from)."""
        items: list[Any] = []
        token: str | None = None
        while True:
            page = lister(*args, limit=self.settings.page_size, _continue=token, **kwargs)
            items.extend(page.items or [])
            meta = page.metadata
            token = getattr(meta, "var_continue", None) or getattr(meta, "_continue", None)
            if not token:
                return items, str(getattr(meta, "resource_version", "") or "")

    @property
    def server(self) -> str:
        return str(self.configuration.host)

    def server_time(self) -> datetime:
        """The API server's clock (its Date header), so expiry is judged as the cluster sees it."""
        response = self.core.get_api_resources_with_http_info()
        headers = response[2] if isinstance(response, tuple) else response.headers  # (data, status, headers)
        stamp = (headers or {}).get("Date") or (headers or {}).get("date")
        try:
            return email.utils.parsedate_to_datetime(stamp) if stamp else datetime.now(UTC)
        except (TypeError, ValueError):
            return datetime.now(UTC)


def connect(kubeconfig: str | None = None, context: str | None = None, settings: ClientSettings | None = None) -> Kube:
    """The one client factory of every command: an explicit --kubeconfig/--context, else $KUBECONFIG
    or ~/.kube/config, else the in-cluster service account when running in a pod."""
    explicit = kubeconfig is not None or context is not None or bool(os.environ.get("KUBECONFIG"))
    in_pod = bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    if not explicit and in_pod and not os.path.exists(os.path.expanduser("~/.kube/config")):
        return Kube.in_cluster(settings)
    return Kube.from_kubeconfig(kubeconfig, context, settings)


def is_status(err: BaseException, *codes: int) -> bool:
    return isinstance(err, KubeError) and err.status in codes
