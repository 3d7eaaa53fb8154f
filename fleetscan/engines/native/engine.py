"""The native engine: gather every fact in one script run through the transport, then evaluate.

`exec_mode="batched"` (default) runs one script per container; `"per-check"` runs one per check,
the way InSpec's Kubernetes transport pays one exec per command, so benchmarks compare honestly.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...access.transport import Transport
from ...errors import ApproachUnavailable, FleetscanError, Interrupted, TransportError
from ...kube.targets import Target
from ...results import hdf
from .. import Access
from . import script
from .facts import Fact
from .profile import Profile
from .resources import REGISTRY, Check, Env, Outcome
from .resources.os_release import OsReleaseFact, parse_os_release


@dataclass
class ScanStats:
    exec_calls: int = 0
    gather_seconds: float = 0.0
    evaluate_seconds: float = 0.0  # CPU time spent evaluating, not waiting


@dataclass
class NativeScan:
    document: dict[str, Any]
    stats: ScanStats


def _facts_of(checks: list[Check]) -> list[Fact]:
    facts: dict[str, Fact] = {}
    for check in checks:
        for fact in REGISTRY[check.resource].facts(check):
            facts.setdefault(fact.key(), fact)
    return list(facts.values())


DEADLINE_SLACK = 2.0


class ScanIncomplete(TransportError):
    """The script ended early (killed, out of memory, a hostile shell): every result is unknown."""


def _reap(transport: Transport, kill_token: str) -> None:
    """A second exec that kills what a cut, timed-out or flooding scan left running; best effort,
    bounded, and done even while the run is stopping."""
    with contextlib.suppress(FleetscanError):
        transport.run(["sh", "-c", script.reap_script(kill_token)], timeout=REAP_SECONDS, urgent=True)


REAP_SECONDS = 10.0


def _lookup(sections: dict[str, script.Section]) -> Callable[[Fact], script.Section | None]:
    return lambda fact: sections.get(fact.key())


class NativeEngine:
    name = "native"
    approaches: tuple[str, ...] = ("exec", "sidecar", "debug")

    def __init__(
        self,
        profile: Profile,
        *,
        exec_mode: str = "batched",
        script_timeout: float = 300.0,
        inputs: dict[str, Any] | None = None,
    ) -> None:
        if exec_mode not in ("batched", "per-check"):
            raise FleetscanError(f"exec_mode {exec_mode!r}: use batched or per-check")
        self.profile = profile
        self.exec_mode = exec_mode
        self.timeout = script_timeout
        self.inputs = {**profile.inputs, **(inputs or {})}

    @property
    def profile_id(self) -> str:
        return f"{self.profile.name} {self.profile.version} sha256:{self.profile.sha256[:16]}"

    def scan(self, target: Target, access: Access) -> dict[str, Any]:
        return self.examine(access.transport, target, failures_as_results=False).document

    def _gather(self, transport: Transport, facts: list[Fact], stats: ScanStats) -> dict[str, script.Section]:
        if not facts:
            return {}
        token, kill = script.new_token(), script.new_token()
        text = script.build(facts, transport.root, token, timeout=self.timeout, kill_token=kill)
        started = time.monotonic()
        try:
            # The script's own watchdog ends it at `timeout`; the stream's deadline is a little later.
            result = transport.run(
                script.command(kill),
                stdin=text.encode(),
                timeout=self.timeout + DEADLINE_SLACK,
                max_output=script.output_limit(facts),
            )
        except (TransportError, Interrupted):
            # Nothing the script started may keep running in the container: a second exec kills
            # it, once the container's record is written (so the record keeps to the deadline).
            transport.defer(lambda: _reap(transport, kill))
            raise
        finally:
            stats.exec_calls += 1
            stats.gather_seconds += time.monotonic() - started
        if script.no_root(result.stdout, token):
            raise ApproachUnavailable(
                f"the scan may not read the target's files at {transport.root} "
                "(it needs SYS_PTRACE or the target's uid)"
            )
        if result.exit_code != 0 or not script.complete(result.stdout, token):
            transport.defer(lambda: _reap(transport, kill))
            raise ScanIncomplete(
                f"the scan script did not complete (exit code {result.exit_code}"
                f"{', and it was cut short' if not script.complete(result.stdout, token) else ''}): "
                "no verdict is given on a partial scan"
            )
        sections = script.mark_truncation(script.split(result.stdout, token, len(facts)), facts)
        return {facts[i].key(): s for i, s in sections.items()}

    def examine(
        self, transport: Transport, target: Target | None = None, *, failures_as_results: bool = True
    ) -> NativeScan:
        """Scan one container. When it cannot be examined at all, every control gets an `error`
        result (`failures_as_results`), or the error is raised for the caller."""
        stats = ScanStats()
        started_at, started = hdf.now_iso(), time.monotonic()
        active = [c for c in self.profile.controls if not c.only_if or self.inputs.get(c.only_if)]
        gathered: dict[str, script.Section] = {}
        per_check: dict[int, dict[str, script.Section]] = {}  # per-check mode: each check's own facts
        failure: str | None = None
        try:
            if self.exec_mode == "batched":
                everything: dict[str, Fact] = {OsReleaseFact().key(): OsReleaseFact()}
                everything.update({f.key(): f for f in _facts_of([k for c in active for k in c.checks])})
                gathered = self._gather(transport, list(everything.values()), stats)
            else:
                gathered = self._gather(transport, [OsReleaseFact()], stats)
                for check in (k for c in active for k in c.checks):
                    per_check[id(check)] = self._gather(transport, _facts_of([check]), stats)
        except FleetscanError as exc:  # the container could not be examined at all
            if not failures_as_results:
                raise
            failure = str(exc)
        cpu = time.process_time()
        controls = []
        for control in self.profile.controls:
            outcomes: list[Outcome] = []
            impact = control.impact
            if control.only_if and not self.inputs.get(control.only_if):
                impact = 0.0  # does not apply to this run: Not Applicable (as InSpec's only_if), not Not Reviewed
                outcomes = [Outcome("skipped", control.title, f"only_if {control.only_if} is false in this run")]
            elif failure:
                outcomes = [Outcome("error", control.title, f"the container could not be examined: {failure}")]
            else:
                for check in control.checks:
                    env = Env(_lookup(per_check.get(id(check), gathered)), transport.root, target)
                    outcomes += REGISTRY[check.resource].evaluate(check, env)
            controls.append(
                hdf.Control(
                    id=control.id,
                    title=control.title,
                    desc=control.desc,
                    impact=impact,
                    tags=control.tags,
                    refs=list(control.refs),
                    code=control.code,
                    source_ref=self.profile.source,
                    source_line=control.line,
                    results=[
                        hdf.Result(o.status, o.code_desc, started_at, 0.0, o.message, o.resource) for o in outcomes
                    ],
                )
            )
        stats.evaluate_seconds = time.process_time() - cpu
        release = ""
        os_section = gathered.get(OsReleaseFact().key())
        if os_section is not None:
            values = parse_os_release(os_section.payload) or {}
            release = " ".join(v for v in (values.get("ID", ""), values.get("VERSION_ID", "")) if v)
        target_id = f"k8s-container://{target.namespace}/{target.pod}/{target.container}" if target else "local"
        info = hdf.ProfileInfo(
            self.profile.name,
            self.profile.title,
            self.profile.version,
            self.profile.sha256,
            self.profile.maintainer,
            self.profile.summary,
            self.profile.license,
            list(self.profile.supports),
            self.inputs,
            self.profile.source,
        )
        doc = hdf.document(
            info,
            controls,
            target_id=target_id,
            platform_name="k8s-container",
            platform_release=release or "unknown",
            duration=time.monotonic() - started,
        )
        return NativeScan(doc, stats)
