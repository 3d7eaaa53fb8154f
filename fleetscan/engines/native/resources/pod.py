"""pod: the securityContext the container runs with and the pod's volumes, read from the API."""

from __future__ import annotations

from typing import Any

from ....kube.targets import Target
from . import Check, Env, Missing, Outcome, Resource, listing, ok


def _desc(target: Target, key: str, want: Any) -> str:
    return f"container {target.container} securityContext {key} is expected to be {str(bool(want)).lower()}"


class PodResource(Resource):
    name = "pod"

    def state(self, check: Check, env: Env) -> Any:
        if env.target is None:
            why = "no pod spec: scanned without the Kubernetes API"
            return Missing([Outcome("skipped", "the pod spec is examined", why, "pod")])
        return env.target

    def _flag(self, t: Target, key: str, have: bool, shown: str, want: Any) -> Outcome:
        return ok(have == bool(want), _desc(t, key, want), shown, "pod")

    def expect_run_as_non_root(self, t: Target, want: Any, check: Check) -> Outcome:
        sec = t.security
        have = sec.run_as_non_root or (sec.run_as_user not in (None, 0))
        return self._flag(
            t, "run_as_non_root", have, f"runAsNonRoot={sec.run_as_non_root}, runAsUser={sec.run_as_user}", want
        )

    def expect_run_as_root(self, t: Target, want: Any, check: Check) -> Outcome:
        """Whether it may run as root: runAsUser 0, or no runAsUser and no runAsNonRoot (the image's
        user decides, which may be root)."""
        sec = t.security
        have = sec.run_as_user == 0 or (sec.run_as_user is None and not sec.run_as_non_root)
        return self._flag(
            t, "run_as_root", have, f"runAsNonRoot={sec.run_as_non_root}, runAsUser={sec.run_as_user}", want
        )

    def expect_privileged(self, t: Target, want: Any, check: Check) -> Outcome:
        return self._flag(t, "privileged", t.security.privileged, f"privileged={t.security.privileged}", want)

    def expect_allow_privilege_escalation(self, t: Target, want: Any, check: Check) -> Outcome:
        value = t.security.allow_privilege_escalation
        return self._flag(
            t, "allow_privilege_escalation", value is not False, f"allowPrivilegeEscalation={value}", want
        )

    def expect_read_only_root_filesystem(self, t: Target, want: Any, check: Check) -> Outcome:
        value = t.security.read_only_root_filesystem
        return self._flag(t, "read_only_root_filesystem", value, f"readOnlyRootFilesystem={value}", want)

    def expect_host_path(self, t: Target, want: Any, check: Check) -> Outcome:
        volumes = list(t.host_path_volumes)
        return self._flag(t, "host_path", bool(volumes), f"hostPath volumes: {listing(volumes)}", want)

    def expect_capabilities_added_only(self, t: Target, want: Any, check: Check) -> Outcome:
        extra = [c for c in t.security.added_capabilities if c not in want]
        return ok(
            not extra,
            f"container {t.container} securityContext capabilities_added_only: only "
            f"{listing(list(want)) or 'no'} capabilities may be added",
            f"added: {listing(extra)}",
            "pod",
        )

    def expect_capabilities_dropped_include(self, t: Target, want: Any, check: Check) -> Outcome:
        missing = [c for c in want if c not in t.security.dropped_capabilities]
        return ok(
            not missing,
            f"container {t.container} securityContext capabilities_dropped_include: capabilities "
            f"{listing(list(want))} are expected to be dropped",
            f"not dropped: {listing(missing)}",
            "pod",
        )
