"""The `fleetscan` command line.

Exit codes: 0 every container met its threshold, 1 some failed it, 2 some could not be scanned or
the run itself failed (one line says what, and where the log is), 64 bad usage, reported before
any cluster call. The scan options are derived from ScanParams, the one source of their defaults.
"""

from __future__ import annotations

import inspect
import logging
import os
import signal
import sys
import tempfile
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, get_args, get_origin

import typer

from . import __version__
from .heap import lean_allocators

if TYPE_CHECKING:
    from flows.ephemeral import TemporaryServer

EX_USAGE = 64
EX_ERROR = 2

app = typer.Typer(
    help="Compliance scanning inside running containers, fleet-wide, on Kubernetes.",
    no_args_is_help=True,
    add_completion=False,
)
emulator_app = typer.Typer(help="The embedded Kubernetes emulator (demo, tests, benchmarks).", no_args_is_help=True)
app.add_typer(emulator_app, name="emulator")
log = logging.getLogger("fleetscan")


def _fail(message: str, code: int = EX_USAGE) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@app.command()
def version() -> None:
    """Print fleetscan's version."""
    typer.echo(__version__)


def _client(kubeconfig: str | None, context: str | None) -> Any:
    """The one client factory (in-cluster, $KUBECONFIG, --kubeconfig, --context); a kubeconfig that
    cannot be read is bad usage."""
    from .errors import UsageError
    from .kube.client import connect

    try:
        return connect(kubeconfig, context)
    except UsageError as exc:
        _fail(str(exc))


KubeconfigOpt = Annotated[
    str | None,
    typer.Option("--kubeconfig", help="Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster)."),
]
ContextOpt = Annotated[str | None, typer.Option("--context", help="Kubeconfig context.")]


@app.command()
def gc(
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    namespaces: Annotated[
        str, typer.Option(help="Sweep only these namespaces (an orchestrator with namespaced RBAC).")
    ] = "",
) -> None:
    """Delete scan credentials left by killed runs once their expiry has passed."""
    from .errors import FleetscanError
    from .kube.credentials import collect_garbage, sweep_kubeconfigs

    for folder in sweep_kubeconfigs():
        typer.echo(f"deleted the kubeconfig of a killed run: {folder}")
    kube = _client(kubeconfig, context)
    try:
        deleted = collect_garbage(kube, namespaces=_split(namespaces) or None)
    except FleetscanError as exc:
        _fail(str(exc), EX_ERROR)
        return
    for item in deleted:
        typer.echo(f"deleted {item}")
    typer.echo(f"{len(deleted)} expired object(s) removed", err=True)


@app.command()
def rbac(
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="Namespace of the pods.")] = "",
    pods: Annotated[str, typer.Option(help="Comma-separated pods to scan.")] = "",
    debug: Annotated[str, typer.Option(help="Comma-separated pods reached by a debug container.")] = "",
    run_id: Annotated[str, typer.Option("--run-id", help="Run id in the objects' labels.")] = "example",
    token_seconds: Annotated[int, typer.Option(help="Token lifetime in seconds (at least 600).")] = 900,
    orchestrator: Annotated[
        bool, typer.Option("--orchestrator", help="Print the orchestrator's own RBAC instead of a run's.")
    ] = False,
    namespaces: Annotated[
        str, typer.Option(help="With --orchestrator: Roles in only these namespaces, instead of a ClusterRole.")
    ] = "",
    service_account: Annotated[
        str, typer.Option(help="With --orchestrator: the orchestrator's ServiceAccount, NAMESPACE/NAME.")
    ] = "fleetscan/fleetscan",
) -> None:
    """Print the ServiceAccount, Role and RoleBinding a run creates in a namespace, or (--orchestrator)
    the orchestrator's own ClusterRole or per-namespace Roles."""
    import yaml

    from .access import REGISTRY
    from .errors import UsageError
    from .kube.credentials import CredentialSettings, manifests
    from .kube.rbac import orchestrator_manifests

    try:
        if orchestrator:
            ns, _, name = service_account.partition("/")
            docs = orchestrator_manifests(_split(namespaces) or None, (ns, name or "fleetscan"))
        else:
            if not namespace or not pods:
                _fail("give --namespace and --pods (or --orchestrator)")
            scanned, debugged = _split(pods), _split(debug)
            rules = REGISTRY["exec"].rules(scanned) + (REGISTRY["debug"].rules(debugged) if debugged else [])
            docs = manifests(namespace, run_id, rules, CredentialSettings(token_seconds=token_seconds))
    except UsageError as exc:
        _fail(str(exc))
        return
    typer.echo(yaml.safe_dump_all(docs, sort_keys=False), nl=False)


@app.command()
def validate(
    input_: Annotated[Path, typer.Option("--input", "-i", help="HDF (InSpec exec-json) results file.")],
    threshold: Annotated[Path | None, typer.Option("--threshold", "-T", help="SAF threshold YAML file.")] = None,
    threshold_inline: Annotated[
        str | None, typer.Option("--threshold-inline", "-I", help='Inline thresholds, e.g. "{compliance.min: 80}".')
    ] = None,
    lint_: Annotated[bool, typer.Option("--lint", help="Warn about rules SAF silently ignores.")] = False,
    saf_check: Annotated[bool, typer.Option("--saf", help="Also run the real SAF CLI and compare verdicts.")] = False,
) -> None:
    """Check results against a SAF threshold exactly as `saf validate threshold` does.

    Prints SAF's message byte for byte; exits 0 pass, 1 violation, 2 error (unreadable or invalid
    input or threshold, which SAF itself would let pass)."""
    from .errors import FleetscanError, ResultsError
    from .results.hdf import load_hdf
    from .results.lint import lint
    from .results.saf import SafCli
    from .results.threshold import evaluate, load_threshold, parse_inline
    from .tools import SAF_HINT

    if (threshold is None) == (threshold_inline is None):
        _fail("give exactly one of --threshold FILE or --threshold-inline TEXT")
    try:
        hdf = load_hdf(input_)
        rules = load_threshold(threshold) if threshold is not None else parse_inline(threshold_inline or "")
        if lint_:
            source = threshold.read_text() if threshold is not None else None
            for warning in lint(rules, flattened_source=source):
                typer.echo(f"warning: {warning}", err=True)
        verdict = evaluate(hdf, rules)
    except ResultsError as exc:
        _fail(str(exc), EX_ERROR)
        return
    sys.stdout.write(verdict.stdout)
    sys.stderr.write(verdict.stderr)
    if saf_check:
        cli = SafCli.find()
        if cli is None:
            _fail(f"--saf: {SAF_HINT}", EX_ERROR)
            return
        try:
            real = cli.validate(input_, threshold_file=threshold, inline=threshold_inline)
        except FleetscanError as exc:
            _fail(str(exc), EX_ERROR)
            return
        if (real.stdout, real.stderr) != (verdict.stdout, verdict.stderr):
            _fail(f"the SAF CLI disagrees: stdout {real.stdout!r}, stderr {real.stderr!r}", EX_ERROR)
    raise typer.Exit(0 if verdict.passed else 1)


# -- scan: options derived from ScanParams ---------------------------------------------------------------
# Where a flag is not the field's name with dashes (the README's spellings stay).
_FLAGS = {"allow_debug": "--debug/--no-debug", "inputs": "--input", "run_id": "--run-id"}
_NOT_ON_CLI = {"aggregate"}  # set by a dispatching run for its shards


def _split(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _inputs(pairs: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            _fail(f"--input {pair!r}: write NAME=VALUE")
        out[key] = {"true": True, "false": False}.get(value.lower(), int(value) if value.isdigit() else value)
    return out


def _bounds(metadata: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in metadata:
        for attr, key in (("ge", "min"), ("le", "max")):
            if getattr(item, attr, None) is not None:
                out[key] = getattr(item, attr)
    return out


def scan_options() -> list[inspect.Parameter]:
    """One CLI option per ScanParams field: name, default, help, limits and choices come from it."""
    from .settings import ScanParams

    params = []
    for name, field in ScanParams.model_fields.items():
        if name in _NOT_ON_CLI:
            continue
        annotation: Any = field.annotation
        default = field.get_default(call_default_factory=True)
        flag = _FLAGS.get(name, "--" + name.replace("_", "-"))
        help_ = (field.description or "").rstrip(".")
        help_ += "" if help_.endswith("?") else "."
        if get_origin(annotation) is list:
            annotation, default, help_ = str, ",".join(default), help_.rstrip(".") + " (comma-separated)."
        elif get_origin(annotation) is dict:
            annotation, default, help_ = list[str] | None, None, "Profile input NAME=VALUE (repeatable)."
        elif get_origin(annotation) is Literal:
            help_ = help_.rstrip(".") + f": {', '.join(get_args(annotation))}."
        option = typer.Option(*flag.split(" "), help=help_, **_bounds(field.metadata))
        params.append(
            inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[annotation, option]
            )
        )
    cli_only: list[tuple[str, Any, Any]] = [
        (
            "output",
            "text",
            Annotated[Literal["text", "json"], typer.Option(help="The closing summary on stdout: text or json.")],
        ),
        ("quiet", False, Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, no table.")]),
        ("verbose", False, Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's logs.")]),
    ]
    params += [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d, annotation=a) for n, d, a in cli_only]
    return params


def scan(**options: Any) -> None:
    """Scan the fleet once (or one workload: --workload KIND/NAME --namespaces NS). Exit 0: every
    container met its threshold; 1: some failed it; 2: some could not be scanned; 64: bad usage."""
    from pydantic import ValidationError

    from .console import closing_summary
    from .settings import ScanParams

    output, quiet, verbose = options.pop("output"), options.pop("quiet"), options.pop("verbose")
    for name, field in ScanParams.model_fields.items():
        if get_origin(field.annotation) is list and name in options:
            options[name] = _split(options[name])
    options["inputs"] = _inputs(options.get("inputs") or [])
    try:
        params = ScanParams(**options).resolved()
    except ValidationError as exc:
        _fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
        return
    result = run_scan(params, show_progress=not quiet and output == "text", verbose=verbose)
    closing_summary(result, as_json=output == "json", quiet=quiet)
    raise typer.Exit(result.exit_code)


scan.__signature__ = inspect.Signature(scan_options())  # type: ignore[attr-defined]
app.command()(scan)


def _log_to(path: Path) -> logging.Handler:
    """The run's log file: what a one-line error message points at."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    logging.getLogger().addHandler(handler)
    logging.getLogger("fleetscan").setLevel(logging.INFO)
    return handler


def run_scan(params: Any, *, show_progress: bool, verbose: bool) -> Any:
    """Run the fleet_scan flow in this process (Prefect's server from PREFECT_API_URL, or an
    ephemeral one), with every input and the run directory checked before any cluster call."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry calls from scans
    if not verbose:  # fleetscan reports outcomes and errors itself; Prefect's own logs are for --verbose
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
    from flows.ephemeral import TemporaryServer

    # Without PREFECT_API_URL, Prefect's temporary server starts now: its 3-4 s overlap the checks
    # and imports below. A failed check stops it.
    server = TemporaryServer().start()
    try:
        return _run_scan(params, server, show_progress=show_progress, verbose=verbose)
    finally:
        server.stop()


def _run_scan(params: Any, server: TemporaryServer, *, show_progress: bool, verbose: bool) -> Any:
    from . import cancel
    from .console import progress_bar
    from .errors import FleetscanError, Interrupted, ResultsError, RunDirError, UsageError
    from .kube.pods import ephemeral_containers_supported
    from .pipeline.run import check_inputs, client_for, identity
    from .results.rundir import RunDir

    out = Path(params.out)
    try:
        engine, threshold, waivers = check_inputs(params)
        kube = client_for(params)
        run_identity = identity(params, engine, threshold, waivers)
        RunDir.open(out, params.run_id, run_identity, params=params.model_dump(mode="json"))
    except (UsageError, ResultsError, RunDirError) as exc:
        _fail(str(exc))
    log_file = out / "fleetscan.log"
    handler = _log_to(log_file)
    try:
        ephemeral_containers_supported(kube)  # one cheap call: is the cluster there at all?
    except FleetscanError as exc:
        _fail(f"{exc}\ncheck --kubeconfig/--context and that the cluster is reachable", EX_ERROR)
    from flows.ephemeral import ServerDidNotStart
    from flows.fleet import fleet_scan, result_of

    def terminated(signum: int, frame: Any) -> None:
        # While the flow runs, Prefect's own handler is in front of this one and hands the signal
        # on when its flow has ended; either way the scans stop and the run exits 2.
        cancel.STOP.set()
        raise Interrupted("terminated (SIGTERM)")

    signal.signal(signal.SIGTERM, terminated)
    try:
        with server.serving(), progress_bar(show_progress):  # without PREFECT_API_URL: Prefect's own
            result = result_of(fleet_scan(params, return_state=True))
    except ServerDidNotStart as exc:
        _fail(f"{exc}; set PREFECT_API_URL to a running Prefect server instead", EX_ERROR)
    except Interrupted as exc:
        _interrupted(out, params.run_id, str(exc))
    except KeyboardInterrupt:
        cancel.STOP.set()
        _interrupted(out, params.run_id, "interrupted (Ctrl-C)", code=130)
    except BaseException as exc:
        if type(exc).__name__ == "TerminationSignal":  # Prefect's form of our SIGTERM
            _interrupted(out, params.run_id, "terminated (SIGTERM)")
        if isinstance(exc, SystemExit):
            raise
        if isinstance(exc, FleetscanError):  # after the first cluster call: the run failed, not the usage
            _fail(f"{exc} (log: {log_file})", EX_ERROR)
        with open(log_file, "a") as fh:  # the details go to the log, the terminal gets one line
            fh.write(f"the scan failed unexpectedly:\n{traceback.format_exc()}")
        _fail(f"the scan failed unexpectedly: {type(exc).__name__}: {exc}; details in {log_file}", EX_ERROR)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    if not result.totals.get("targets"):
        _fail("no container matched the selection (namespaces, selectors, exclusions): nothing was scanned", EX_ERROR)
    return result


def _interrupted(out: Path, run_id: str, why: str, code: int = EX_ERROR) -> None:
    recorded = len(list((out / "records").rglob("*.json"))) if (out / "records").exists() else 0
    _fail(
        f"{why}: {recorded} container result(s) kept in {out}; run the same command with "
        f"--run-id {run_id} --out {out} to finish the run",
        code,
    )


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (holding summary.json).")],
    history: Annotated[Path | None, typer.Option(help="Trend history folder (default: beside the run).")] = None,
) -> None:
    """Rebuild a run's report.html and report.md (and record it in the trend history)."""
    if not (run_dir / "summary.json").is_file():
        _fail(f"{run_dir}: not a run directory (no summary.json)")
    from .report.build import build_reports

    built = build_reports(run_dir, history)
    typer.echo(f"{built.html}\n{built.markdown}")


@app.command()
def heimdall(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (holding hdf/).")],
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port on 127.0.0.1 (0 picks a free one).")] = 0,
) -> None:
    """Show a run's results in Heimdall Lite, served locally, until Ctrl-C."""
    from .errors import UsageError
    from .report.heimdall import HeimdallServer

    try:
        server = HeimdallServer(run_dir, port=port)
    except (UsageError, OSError) as exc:
        _fail(str(exc))
        return
    typer.echo(server.url)
    typer.echo("press Ctrl-C to stop", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


@app.command()
def serve(
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    cron: Annotated[str, typer.Option(help="Schedule of the nightly fleet scan.")] = "0 2 * * *",
    timezone: Annotated[str, typer.Option(help="Time zone of the schedule.")] = "UTC",
    limit: Annotated[int, typer.Option(min=1, help="Flow runs at once in this process.")] = 4,
    debug_image: Annotated[str | None, typer.Option(help="Image of ephemeral debug containers.")] = None,
) -> None:
    """Serve the nightly, ad hoc and on-deploy scan deployments from this process (needs a Prefect
    server in PREFECT_API_URL), until Ctrl-C."""
    from .settings import ScanParams

    if not os.environ.get("PREFECT_API_URL"):
        _fail("fleetscan serve needs a Prefect server: set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api)")
    from flows.serving import serve_all

    extra = {"debug_image": debug_image} if debug_image else {}
    params = ScanParams(kubeconfig=kubeconfig, context=context, **extra)
    serve_all(params, limit=limit, cron=cron, timezone=timezone)


@app.command("notify-deploy")
def notify_deploy(
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="Namespace of the workload.")],
    kind: Annotated[str, typer.Option(help="Deployment, StatefulSet, DaemonSet, Job or Pod.")],
    name: Annotated[str, typer.Option(help="Name of the workload.")],
) -> None:
    """Tell fleetscan (through Prefect's events API) that a workload was just deployed: its scan starts."""
    from .deploy_events import deploy_event, post_events
    from .errors import FleetscanError, UsageError

    try:
        event = deploy_event(namespace, kind, name, {"source": "notify-deploy"})
        post_events(os.environ.get("PREFECT_API_URL", ""), [event], auth=os.environ.get("PREFECT_API_AUTH_STRING"))
    except UsageError as exc:
        _fail(str(exc))
    except FleetscanError as exc:
        _fail(str(exc), EX_ERROR)
    typer.echo(f"sent {event['event']} for {kind} {namespace}/{name}", err=True)


@app.command()
def watch(
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    namespaces: Annotated[str, typer.Option(help="Comma-separated namespaces or globs (default: all).")] = "",
) -> None:
    """Watch Deployments, StatefulSets and DaemonSets; when a rollout completes, send the deploy event
    (once per rollout) so its workload is scanned. Runs until SIGINT or SIGTERM."""
    import signal as signals

    from .deploy_events import deploy_event, post_with_retries
    from .errors import FleetscanError
    from .kube.rollouts import Rollout, RolloutWatcher

    api = os.environ.get("PREFECT_API_URL", "")
    if not api:
        _fail("fleetscan watch needs a Prefect server: set PREFECT_API_URL")
    kube = _client(kubeconfig, context)

    def emit(rollout: Rollout) -> None:
        event = deploy_event(
            rollout.namespace,
            rollout.kind,
            rollout.name,
            {"generation": rollout.generation, "images": list(rollout.images), "source": "watch"},
        )
        try:
            post_with_retries(api, [event], auth=os.environ.get("PREFECT_API_AUTH_STRING"))
            typer.echo(
                f"rollout done: {rollout.kind} {rollout.namespace}/{rollout.name} (generation {rollout.generation})",
                err=True,
            )
        except FleetscanError as exc:
            typer.echo(f"error: {exc}", err=True)

    watcher = RolloutWatcher(kube, emit, namespaces=tuple(_split(namespaces)))
    for sig in (signals.SIGINT, signals.SIGTERM):
        signals.signal(sig, lambda *_: watcher.stop.set())
    typer.echo("watching rollouts; Ctrl-C to stop", err=True)
    watcher.run()


@app.command()
def demo(
    out: Annotated[str, typer.Option(help="Run directory (default: runs/demo-<time>).")] = "",
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's logs.")] = False,
) -> None:
    """Start the embedded emulator with the demo fleet, scan it, print the summary and the report."""
    from datetime import UTC, datetime

    from .console import closing_summary, err
    from .emulator.scenario import load_scenario
    from .emulator.server import Emulator
    from .settings import ScanParams

    err.print("starting the embedded Kubernetes emulator with the demo fleet ...")
    with Emulator(load_scenario("demo")) as emu, tempfile.TemporaryDirectory(prefix="fleetscan-demo-") as tmp:
        kubeconfig = emu.write_kubeconfig(Path(tmp) / "kubeconfig")
        s = emu.summary
        err.print(
            f"{s['namespaces']} namespaces, {s['pods']} pods, {s['containers']} containers at {emu.url}; "
            "scanning with the container-baseline profile ..."
        )
        run_id = f"demo-{datetime.now(UTC).strftime('%Y%m%d-%H%M%S')}"
        params = ScanParams(
            kubeconfig=str(kubeconfig), run_id=run_id, out=out or f"runs/{run_id}", debug_image="fleetscan/debug:1.0"
        )
        result = run_scan(params, show_progress=True, verbose=verbose)
        closing_summary(result, as_json=False, quiet=False)
    err.print(
        "emulator stopped. Exit code of the same scan in CI would be "
        f"{result.exit_code} (0 all passed, 1 some failed their threshold, 2 some errors)."
    )


def _serve(scenario_name: str, kubeconfig_out: Path, port: int) -> None:
    from .emulator.scenario import ScenarioError, load_scenario
    from .emulator.server import Emulator

    try:
        scenario = load_scenario(scenario_name)
    except ScenarioError as exc:
        _fail(str(exc))
        return

    def ready(emu: Emulator) -> None:
        emu.write_kubeconfig(kubeconfig_out)
        s = emu.summary
        typer.echo(
            f"emulator ready at {emu.url}: {s.get('namespaces', 0)} namespaces, {s.get('pods', 0)} pods, "
            f"{s.get('containers', 0)} containers",
            err=True,
        )
        typer.echo(f"admin kubeconfig (0600): {kubeconfig_out}", err=True)
        typer.echo("press Ctrl-C to stop", err=True)

    try:
        Emulator(scenario, port=port).run_until_signalled(ready)
    except OSError as exc:
        _fail(f"could not start the emulator: {exc}", 1)
    kubeconfig_out.unlink(missing_ok=True)  # it holds the admin token of a cluster that is gone
    typer.echo("emulator stopped; containers and work folders removed", err=True)


@emulator_app.command("serve")
def emulator_serve(
    kubeconfig_out: Annotated[
        Path, typer.Option("--kubeconfig-out", help="Write the admin kubeconfig here once ready.")
    ],
    scenario: Annotated[str, typer.Option(help="`demo` or a scenario YAML file.")] = "demo",
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0 picks a free one).", min=0, max=65535)] = 0,
) -> None:
    """Run the emulator in the foreground until SIGINT or SIGTERM."""
    _serve(scenario, kubeconfig_out, port)


# typer vendors click; its UsageError is reachable through the public BadParameter.
_USAGE_ERROR: type[Exception] = typer.BadParameter.__mro__[1]


def main() -> None:
    lean_allocators()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.raiseExceptions = False  # a log file on a full disk must not print tracebacks
    for handler in logging.getLogger().handlers:  # the terminal shows warnings; the run's log file more
        handler.setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # its retry chatter; failures are reported by fleetscan
    from .errors import FleetscanError, UsageError

    try:
        # Without standalone mode click returns an Exit's code instead of raising it.
        result = app(standalone_mode=False)
    except _USAGE_ERROR as exc:
        exc.show()  # type: ignore[attr-defined]
        sys.exit(EX_USAGE)
    except typer.Abort:
        sys.exit(130)
    except UsageError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(EX_USAGE)
    except FleetscanError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(EX_ERROR)
    except Exception as exc:  # never a traceback, never exit 1 (which means "a container failed")
        fd, path = tempfile.mkstemp(prefix="fleetscan-error-", suffix=".log")
        with os.fdopen(fd, "w") as fh:
            fh.write(traceback.format_exc())
        typer.secho(f"error: unexpected {type(exc).__name__}: {exc}; details in {path}", fg=typer.colors.RED, err=True)
        sys.exit(EX_ERROR)
    sys.exit(result if isinstance(result, int) else 0)
