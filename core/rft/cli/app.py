"""The `rft` command: inspect steps, datasets, models and deployments; watch, logs, lineage, plots."""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.live import Live

from rft.api.common import Resource
from rft.api.dataset import Dataset
from rft.api.deployment import Deployment
from rft.api.model import Model
from rft.api.reinforcement_step import TERMINAL_PHASES, ReinforcementStep, StepPhase
from rft.cli.context import CliContext, cli_context, reports_errors
from rft.cli.logs import follow_step_log, step_log
from rft.cli.plot import plot_history, plot_steps, read_step_series
from rft.cli.render import describe, dump, dump_resources, lineage_table, list_table, step_progress, wire
from rft.sdk.errors import ResourceNotFoundError, RftError
from rft.sdk.lineage import lineage
from rft.sdk.names import Collection, check_object_name, resolve_name
from rft.sdk.session import Session


class Output(StrEnum):
    """How list, describe and lineage print."""

    TABLE = "table"
    JSON = "json"
    YAML = "yaml"


OutputOption = Annotated[Output, typer.Option("--output", "-o", help="table, json or yaml.")]

app = typer.Typer(
    name="rft",
    help="Inspect reinforcement fine-tuning on your cluster: steps, datasets, models, deployments.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.callback()
def root(
    ctx: typer.Context,
    namespace: Annotated[
        str | None,
        typer.Option(
            "--namespace", "-n", help="Namespace (account); default: $RFT_NAMESPACE, config, kubeconfig."
        ),
    ] = None,
    kubeconfig: Annotated[
        str | None,
        typer.Option("--kubeconfig", help="Path to the kubeconfig; default: $KUBECONFIG, ~/.kube/config."),
    ] = None,
    context: Annotated[str | None, typer.Option("--context", help="kubeconfig context to use.")] = None,
) -> None:
    """Settings shared by every command."""
    if isinstance(ctx.obj, CliContext):
        # Preset by a caller (tests pass a reader of canned objects).
        if namespace:
            ctx.obj.namespace = check_object_name(namespace, "--namespace")
        return
    try:
        session = Session.create(namespace=namespace, kubeconfig=kubeconfig, context=context)
    except (ValueError, RftError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from error
    ctx.obj = CliContext(namespace=session.namespace, session=session)


def _print_one(state: CliContext, resource: Resource, output: Output) -> None:
    if output is Output.TABLE:
        state.console.print(describe(resource))
    else:
        state.console.print(dump(wire(resource), output.value), highlight=False, markup=False, end="")


def _print_many(state: CliContext, kind: type[Resource], resources: list[Resource], output: Output) -> None:
    if output is not Output.TABLE:
        state.console.print(dump_resources(resources, output.value), highlight=False, markup=False, end="")
    elif not resources:
        state.console.print(f"No {kind.plural()} in namespace {state.namespace}.", highlight=False)
    else:
        state.console.print(list_table(kind, resources))


def _object_name(state: CliContext, kind: type[Resource], value: str) -> tuple[str, str]:
    """(namespace, name) of a short name, or of `accounts/<ns>/<collection>/<name>` where the kind has one."""
    collections: dict[type[Resource], Collection] = {
        Model: "models",
        Deployment: "deployments",
        Dataset: "datasets",
    }
    collection = collections.get(kind)
    if collection is None:
        return state.namespace, check_object_name(value, "NAME")
    resolved = resolve_name(value, collection, state.namespace, "NAME")
    return resolved.namespace, resolved.name


def _get(state: CliContext, kind: type[Resource], value: str) -> Resource:
    namespace, name = _object_name(state, kind, value)
    found = state.cluster().get(kind, namespace, name)
    if found is None:
        raise ResourceNotFoundError(f"{kind.crd.kind} {name!r} not found in namespace {namespace!r}")
    return found


def _resource_group(kind: type[Resource], help_text: str) -> typer.Typer:
    group = typer.Typer(help=help_text, no_args_is_help=True)

    @group.command("list")
    @reports_errors
    def list_command(ctx: typer.Context, output: OutputOption = Output.TABLE) -> None:
        """List them with phase and messages."""
        state = cli_context(ctx)
        _print_many(state, kind, list(state.cluster().list(kind, state.namespace)), output)

    @group.command("describe")
    @reports_errors
    def describe_command(
        ctx: typer.Context,
        name: Annotated[str, typer.Argument(help="Name (short or accounts/<namespace>/...).")],
        output: OutputOption = Output.TABLE,
    ) -> None:
        """Show one in full: spec, status, conditions, messages."""
        state = cli_context(ctx)
        _print_one(state, _get(state, kind, name), output)

    return group


steps_app = _resource_group(ReinforcementStep, "Reinforcement steps: list, describe, watch, logs.")
datasets_app = _resource_group(Dataset, "Datasets: list, describe.")
models_app = _resource_group(Model, "Models (checkpoints): list, describe, lineage.")
deployments_app = _resource_group(Deployment, "Deployments: list, describe.")
app.add_typer(steps_app, name="steps")
app.add_typer(datasets_app, name="datasets")
app.add_typer(models_app, name="models")
app.add_typer(deployments_app, name="deployments")


@steps_app.command("watch")
@reports_errors
def watch_step(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The step's name.")],
    interval: Annotated[float, typer.Option("--interval", min=0.1, help="Seconds between refreshes.")] = 2.0,
) -> None:
    """Follow a step live (phase, epoch/step, loss, reward) until it ends; exit 1 unless COMPLETED."""
    state = cli_context(ctx)
    reader = state.cluster()
    step_name = check_object_name(name, "NAME")

    def fetch() -> ReinforcementStep:
        step = reader.get(ReinforcementStep, state.namespace, step_name)
        if step is None:
            raise ResourceNotFoundError(
                f"ReinforcementStep {step_name!r} not found in namespace {state.namespace!r}"
            )
        return step

    step = fetch()
    with Live(step_progress(step), console=state.console, auto_refresh=False) as live:
        while step.status.phase not in TERMINAL_PHASES:
            time.sleep(interval)
            step = fetch()
            live.update(step_progress(step), refresh=True)
    if step.status.phase != StepPhase.COMPLETED:
        raise typer.Exit(1)


@steps_app.command("logs")
@reports_errors
def step_logs(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The step's name.")],
    tail: Annotated[int | None, typer.Option("--tail", min=0, help="Only the last N lines.")] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines until the step ends.")
    ] = False,
    interval: Annotated[
        float, typer.Option("--interval", min=0.1, help="Seconds between reads with -f.")
    ] = 1.0,
) -> None:
    """Print the trainer's log (the newest training pod's); with -f, follow it."""
    state = cli_context(ctx)
    step = _get(state, ReinforcementStep, name)
    assert isinstance(step, ReinforcementStep)
    if follow:

        def refresh() -> ReinforcementStep:
            fresh = _get(state, ReinforcementStep, name)
            assert isinstance(fresh, ReinforcementStep)
            return fresh

        def write(text: str) -> None:
            state.console.print(text, highlight=False, markup=False, end="")
            state.console.file.flush()

        follow_step_log(state.kube(), step, refresh, write, tail, interval)
        return
    text = step_log(state.kube(), step, tail)
    state.console.print(text, highlight=False, markup=False, end="" if text.endswith("\n") else "\n")


@steps_app.command("cancel")
@reports_errors
def cancel_step(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The step's name.")],
) -> None:
    """Cancel a step for good (spec.cancel): its Job is deleted, its phase becomes CANCELLED."""
    state = cli_context(ctx)
    namespace, step_name = _object_name(state, ReinforcementStep, name)
    step = state.kube().patch(ReinforcementStep, namespace, step_name, {"spec": {"cancel": True}})
    state.console.print(
        f"cancelling {step_name} (phase {step.status.phase or 'JOB_STATE_CREATING'})", highlight=False
    )


@models_app.command("lineage")
@reports_errors
def model_lineage(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The newest checkpoint (short or full name).")],
    output: OutputOption = Output.TABLE,
) -> None:
    """The chain of checkpoints behind a model, oldest (the base) first, via spec.parent."""
    state = cli_context(ctx)
    namespace, model_name = _object_name(state, Model, name)
    reader = state.cluster()
    chain = lineage(model_name, lambda n: reader.get(Model, namespace, n))
    if output is Output.TABLE:
        state.console.print(lineage_table(chain))
    else:
        data = {
            "models": [wire(model) for model in chain.models],
            "missing": chain.missing,
            "cycle": chain.cycle,
        }
        state.console.print(dump(data, output.value), highlight=False, markup=False, end="")
    if chain.missing:
        state.console.print(f"[yellow]the chain stops at {chain.missing!r}, which does not exist[/yellow]")
    if chain.cycle:
        state.console.print("[yellow]the chain of parents loops; stopped at the first repeat[/yellow]")


@app.command("plot")
@reports_errors
def plot(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The newest checkpoint of the chain to plot.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="PNG file to write.")] = Path("reward.png"),
    per_checkpoint: Annotated[
        bool,
        typer.Option("--per-checkpoint", help="One point per checkpoint even where per-step series exist."),
    ] = False,
) -> None:
    """Plot the chain of checkpoints ending at NAME (a checkpoint: a step's output model): the
    per-optimizer-step curves from the series beside each checkpoint in the bucket, or, where
    there are none (or with --per-checkpoint), mean reward and loss per checkpoint."""
    state = cli_context(ctx)
    namespace, model_name = _object_name(state, Model, name)
    reader = state.cluster()
    chain = lineage(model_name, lambda n: reader.get(Model, namespace, n))
    checkpoints = chain.checkpoints
    if not checkpoints:
        raise RftError(f"model {model_name!r} is a base model: it has no training history to plot")
    if not per_checkpoint:
        series = [found for model in checkpoints if (found := read_step_series(model)) is not None]
        if series:
            written = plot_steps(series, output, title=f"{model_name}: per optimizer step")
            steps = sum(len(s.points) for s in series)
            state.console.print(
                f"wrote {written} ({steps} optimizer step(s) over {len(series)} checkpoint(s))",
                highlight=False,
            )
            return
    written = plot_history(checkpoints, output, title=f"{model_name}: reward and loss per checkpoint")
    state.console.print(f"wrote {written} ({len(checkpoints)} checkpoint(s))", highlight=False)


def main() -> None:
    """Entry point of the `rft` console script."""
    app()
