"""The `fleetscan` command line."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from . import __version__

EX_USAGE = 64

app = typer.Typer(
    help="Compliance scanning inside running containers, fleet-wide, on Kubernetes.",
    no_args_is_help=True,
    add_completion=False,
)
emulator_app = typer.Typer(help="The embedded Kubernetes API emulator (demo, tests, benchmarks).", no_args_is_help=True)
app.add_typer(emulator_app, name="emulator")


def _fail(message: str, code: int = EX_USAGE) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@app.command()
def version() -> None:
    """Print fleetscan's version."""
    typer.echo(__version__)


def _kube(kubeconfig: Path | None, context: str | None) -> Any:
    from .kube.client import Kube

    if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        return Kube.in_cluster()
    return Kube.from_kubeconfig(str(kubeconfig) if kubeconfig else None, context)


KubeconfigOpt = Annotated[
    Path | None,
    typer.Option("--kubeconfig", help="Kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or in-cluster)."),
]
ContextOpt = Annotated[str | None, typer.Option("--context", help="Kubeconfig context.")]


@app.command()
def gc(kubeconfig: KubeconfigOpt = None, context: ContextOpt = None) -> None:
    """Delete scan credentials left by killed runs once their expiry has passed."""
    from .errors import FleetscanError, UsageError
    from .kube.credentials import collect_garbage

    try:
        deleted = collect_garbage(_kube(kubeconfig, context))
    except UsageError as exc:
        _fail(str(exc))
        return
    except FleetscanError as exc:
        _fail(str(exc), 1)
        return
    for item in deleted:
        typer.echo(f"deleted {item}")
    typer.echo(f"{len(deleted)} expired object(s) removed", err=True)


@app.command()
def rbac(
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="Namespace of the pods.")],
    pods: Annotated[str, typer.Option(help="Comma-separated pods to scan.")],
    debug: Annotated[str, typer.Option(help="Comma-separated pods reached by a debug container.")] = "",
    run_id: Annotated[str, typer.Option("--run-id", help="Run id used in the object names.")] = "example",
    token_seconds: Annotated[int, typer.Option(help="Token lifetime in seconds (at least 600).")] = 900,
) -> None:
    """Print the ServiceAccount, Role and RoleBinding a run would create in a namespace."""
    import yaml

    from .errors import UsageError
    from .kube.credentials import CredentialSettings, manifests

    def split(text: str) -> list[str]:
        return [p.strip() for p in text.split(",") if p.strip()]

    try:
        docs = manifests(namespace, run_id, split(pods), split(debug), CredentialSettings(token_seconds=token_seconds))
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
    from .errors import FleetscanError
    from .saf import SafCli
    from .threshold import ThresholdError, evaluate, lint, load_hdf, load_threshold, parse_inline

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
    except ThresholdError as exc:
        _fail(str(exc), 2)
        return
    sys.stdout.write(verdict.stdout)
    sys.stderr.write(verdict.stderr)
    if saf_check:
        cli = SafCli.find()
        if cli is None:
            _fail("--saf: the SAF CLI is not installed (make setup installs it into .tools/)", 2)
            return
        try:
            real = cli.validate(input_, threshold_file=threshold, inline=threshold_inline)
        except FleetscanError as exc:
            _fail(str(exc), 2)
            return
        if (real.stdout, real.stderr) != (verdict.stdout, verdict.stderr):
            _fail(f"the SAF CLI disagrees: stdout {real.stdout!r}, stderr {real.stderr!r}", 2)
    raise typer.Exit(0 if verdict.passed else 1)


def _run_scan(params: Any, *, show_progress: bool, verbose: bool) -> dict[str, Any]:
    """Run the fleet_scan flow in this process (Prefect's server from PREFECT_API_URL, or an
    ephemeral one), with the inputs checked first so mistakes fail before any cluster call."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry calls from scans
    if not verbose:  # fleetscan reports outcomes and errors itself; Prefect's own logs are for --verbose
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
    from .console import progress_bar
    from .errors import FleetscanError, UsageError
    from .pipeline.setup import engine_for, kube_for, rules_for
    from .threshold import ThresholdError

    try:
        engine_for(params)
        rules_for(params)
        kube = kube_for(params)
    except (UsageError, ThresholdError) as exc:
        _fail(str(exc))
    from .kube.approach import ephemeral_containers_supported

    try:
        ephemeral_containers_supported(kube)  # one cheap call: is the cluster there at all?
    except FleetscanError as exc:
        _fail(f"{exc}\ncheck --kubeconfig/--context and that the cluster is reachable", 2)
    from flows.fleet import fleet_scan

    try:
        with progress_bar(show_progress):
            result: dict[str, Any] = fleet_scan(params)
    except FleetscanError as exc:  # nothing could be scanned: no cluster, no namespace, no access
        _fail(str(exc), 2)
    if not result["totals"]["targets"]:
        _fail("no container matched the selection (namespaces, selectors, exclusions): nothing was scanned", 2)
    return result


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


@app.command()
def scan(
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    namespaces: Annotated[str, typer.Option(help="Comma-separated namespaces or globs (default: all).")] = "",
    namespace_selector: Annotated[str, typer.Option(help="Label selector on namespaces.")] = "",
    exclude_namespaces: Annotated[str, typer.Option(help="Comma-separated namespaces or globs to leave out.")] = (
        "kube-system,kube-public,kube-node-lease"
    ),
    selector: Annotated[str, typer.Option(help="Label selector on pods.")] = "",
    profile: Annotated[str, typer.Option(help="Bundled profile name or a profile file.")] = "container-baseline",
    threshold: Annotated[
        str | None, typer.Option(help="SAF threshold file (default: the bundled default.yml).")
    ] = None,
    approach: Annotated[str, typer.Option(help="auto, exec, debug or sidecar.")] = "auto",
    engine: Annotated[str, typer.Option(help="native or cinc.")] = "native",
    concurrency: Annotated[int, typer.Option(min=1, max=512, help="Containers scanned at once.")] = 16,
    out: Annotated[str, typer.Option(help="Run directory (default: runs/<run id>).")] = "",
    history: Annotated[str, typer.Option(help="Trend history folder (default: beside the run directory).")] = "",
    run_id: Annotated[str, typer.Option("--run-id", help="Resume this run (same id, same --out).")] = "",
    one_per_workload: Annotated[bool, typer.Option(help="One pod per workload revision.")] = False,
    no_debug: Annotated[bool, typer.Option("--no-debug", help="Never add ephemeral debug containers.")] = False,
    debug_image: Annotated[str, typer.Option(help="Image of ephemeral debug containers.")] = "busybox:1.36",
    input_: Annotated[list[str] | None, typer.Option("--input", help="Profile input NAME=VALUE (repeatable).")] = None,
    output: Annotated[str, typer.Option(help="text or json (the closing summary on stdout).")] = "text",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, no table.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's logs.")] = False,
) -> None:
    """Scan the fleet once. Exit 0: every container met its threshold; 1: some failed it;
    2: some could not be scanned; 64: bad usage."""
    from pydantic import ValidationError

    from .console import closing_summary
    from .pipeline.params import ScanParams

    if output not in ("text", "json"):
        _fail("--output must be text or json")
    try:
        params = ScanParams(
            kubeconfig=str(kubeconfig) if kubeconfig else None,
            context=context,
            namespaces=_split(namespaces),
            namespace_selector=namespace_selector,
            exclude_namespaces=_split(exclude_namespaces),
            selector=selector,
            profile=profile,
            threshold=threshold,
            approach=approach,
            allow_debug=not no_debug,
            debug_image=debug_image,
            engine=engine,
            concurrency=concurrency,
            out=out,
            history=history,
            run_id=run_id,
            one_per_workload=one_per_workload,
            inputs=_inputs(input_ or []),
        )
    except ValidationError as exc:
        _fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
        return
    params = params.resolved()
    result = _run_scan(params, show_progress=not quiet and output == "text", verbose=verbose)
    closing_summary(result, as_json=output == "json", quiet=quiet)
    raise typer.Exit(int(result["exit_code"]))


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
    debug_image: Annotated[str, typer.Option(help="Image of ephemeral debug containers.")] = "busybox:1.36",
) -> None:
    """Serve the nightly, ad hoc and on-deploy scan deployments from this process (needs a Prefect
    server in PREFECT_API_URL), until Ctrl-C."""
    from .pipeline.params import ScanParams

    if not os.environ.get("PREFECT_API_URL"):
        _fail("fleetscan serve needs a Prefect server: set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api)")
    from flows.serving import serve_all

    params = ScanParams(kubeconfig=str(kubeconfig) if kubeconfig else None, context=context, debug_image=debug_image)
    serve_all(params, limit=limit, cron=cron, timezone=timezone)


@app.command("notify-deploy")
def notify_deploy(
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="Namespace of the workload.")],
    kind: Annotated[str, typer.Option(help="Deployment, StatefulSet, DaemonSet or Pod.")],
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
        _fail(str(exc), 1)
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
    kube = _kube(kubeconfig, context)

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

    watcher = RolloutWatcher(kube, emit, namespaces=tuple(p for p in namespaces.split(",") if p))
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
    import tempfile
    from datetime import UTC, datetime

    from .console import closing_summary, err
    from .emulator.scenario import load_scenario
    from .emulator.server import Emulator
    from .pipeline.params import ScanParams

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
        result = _run_scan(params, show_progress=True, verbose=verbose)
        closing_summary(result, as_json=False, quiet=False)
    err.print(
        "emulator stopped. Exit code of the same scan in CI would be "
        f"{result['exit_code']} (0 all passed, 1 some failed their threshold, 2 some errors)."
    )


def _serve(scenario_name: str, kubeconfig_out: Path, port: int, on_ready_extra: Any = None) -> None:
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
        if on_ready_extra:
            on_ready_extra(emu)
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
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # its retry chatter; failures are reported by fleetscan
    try:
        # Without standalone mode click returns an Exit's code instead of raising it.
        result = app(standalone_mode=False)
    except _USAGE_ERROR as exc:
        exc.show()  # type: ignore[attr-defined]
        sys.exit(EX_USAGE)
    except typer.Abort:
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else 0)
