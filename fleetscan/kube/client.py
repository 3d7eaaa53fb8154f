"""API clients for one cluster: built from a kubeconfig or in-cluster config, sharing one rate limit."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.config.config_exception import ConfigException

from ..errors import KubeError, UsageError

T = TypeVar("T")


@dataclass(frozen=True)
class ClientSettings:
    """Client-side limits, so a fleet scan cannot flood the API server. Exec streams count as requests
    too (as in client-go), so these bound execs per second; kubectl's defaults are 50 and 300."""

    qps: float = 50.0
    burst: int = 100
    request_timeout: float = 30.0


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


class Kube:
    """Clients for one cluster and identity.

    REST calls share one ApiClient. Exec streams get an ApiClient per thread, because the official
    client's `stream()` temporarily swaps a method on the ApiClient it is given.
    """

    def __init__(
        self,
        configuration: k8s.Configuration,
        settings: ClientSettings | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.settings = settings or ClientSettings()
        self.configuration = configuration
        self.limiter = limiter or RateLimiter(self.settings.qps, self.settings.burst)
        self.api = LimitedApiClient(configuration, self.limiter)
        self._local = threading.local()
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
        except (ConfigException, OSError, TypeError, ValueError) as exc:
            where = path or "the default kubeconfig"
            hint = f" (context {context!r})" if context else ""
            raise UsageError(f"cannot load {where}{hint}: {exc}") from exc
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

    def retry_unauthorized(self, call: Callable[[], T]) -> T:
        """Run `call`; after a 401 get a new token (if this identity can) and run it once more."""
        try:
            return call()
        except KubeError as err:
            if err.status != 401 or self._reauthenticate is None:
                raise
            self._reauthenticate()
            return call()

    # -- typed APIs -------------------------------------------------------------------------------
    @property
    def core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(self.api)

    @property
    def apps(self) -> k8s.AppsV1Api:
        return k8s.AppsV1Api(self.api)

    @property
    def batch(self) -> k8s.BatchV1Api:
        return k8s.BatchV1Api(self.api)

    @property
    def rbac(self) -> k8s.RbacAuthorizationV1Api:
        return k8s.RbacAuthorizationV1Api(self.api)

    def exec_api(self) -> k8s.CoreV1Api:
        """A CoreV1Api on this thread's own ApiClient, for `stream()`."""
        api = getattr(self._local, "api", None)
        if api is None:
            api = LimitedApiClient(self.configuration, self.limiter)
            self._local.api = api
        return k8s.CoreV1Api(api)

    @property
    def server(self) -> str:
        return str(self.configuration.host)
