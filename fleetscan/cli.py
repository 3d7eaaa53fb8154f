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


@app.command()
def demo(
    kubeconfig_out: Annotated[Path, typer.Option("--kubeconfig-out")] = Path(".fleetscan/demo.kubeconfig"),
    port: Annotated[int, typer.Option(min=0, max=65535)] = 0,
) -> None:
    """Start the embedded emulator with the demo fleet and show how to explore it with kubectl."""

    def explain(emu: Any) -> None:
        kc = kubeconfig_out
        typer.echo(
            "\nThe demo fleet is running. Try, in another terminal:\n"
            f"  kubectl --kubeconfig {kc} get pods -A\n"
            f"  kubectl --kubeconfig {kc} -n shop exec web-7d9f-abcde -- cat /etc/os-release\n"
            f"  kubectl --kubeconfig {kc} -n shop create token default --duration 15m\n"
            f"  kubectl --kubeconfig {kc} auth can-i create pods/exec -n shop "
            "--as system:serviceaccount:shop:default\n"
            f"  kubectl --kubeconfig {kc} -n shop debug api-0 --image fleetscan/debug:1.0 --target api "
            "--profile general -c dbg -- sleep 3600\n"
            f"  kubectl --kubeconfig {kc} -n shop exec api-0 -c dbg -- cat /proc/1/root/etc/os-release\n",
            err=True,
        )

    _serve("demo", kubeconfig_out, port, explain)


# typer vendors click; its UsageError is reachable through the public BadParameter.
_USAGE_ERROR: type[Exception] = typer.BadParameter.__mro__[1]


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        # Without standalone mode click returns an Exit's code instead of raising it.
        result = app(standalone_mode=False)
    except _USAGE_ERROR as exc:
        exc.show()  # type: ignore[attr-defined]
        sys.exit(EX_USAGE)
    except typer.Abort:
        sys.exit(130)
    sys.exit(result if isinstance(result, int) else 0)
