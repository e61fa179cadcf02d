"""The ``towerflow`` command line: run the nightly flow, query, serve, list and roll back
versions, import logs, evaluate, write reports, send item events.

This module only builds the typer app and registers the commands; each command lives in
its own module (which never imports this one) and shares ``cli.options``. Failures of
every command are reported by ``cli.errors.TowerflowGroup`` (exit codes: see there). Heavy imports
(torch, Prefect) happen inside the commands so ``--help`` stays fast.
"""

from __future__ import annotations

import typer

from cli.alerts import alerts_app
from cli.api import api_command
from cli.deployments import serve_command
from cli.errors import TowerflowGroup
from cli.evaluate import evaluate_command
from cli.importing import import_command
from cli.items import add_items_command, retire_items_command
from cli.options import apply_openmp_defaults, global_options
from cli.recommend import recommend_command
from cli.report import report_command
from cli.run import run_command
from cli.tune import tune_command
from cli.versions import (
    compact_command,
    rollback_command,
    verify_command,
    versions_command,
)

__all__ = ["app"]

# Before any command imports torch or Faiss (their OpenMP runtimes read the environment
# once, at load): idle OpenMP threads sleep instead of spinning on shared cores. Prefect
# runs `towerflow run`'s tasks in this process; `towerflow serve`'s runs inherit it.
apply_openmp_defaults()

app = typer.Typer(
    name="towerflow",
    help="Two-tower candidate retrieval: train, index, publish and query versions.",
    no_args_is_help=True,
    add_completion=False,
    # Every command's failures: one `error:` line and an exit code per kind (cli.errors).
    cls=TowerflowGroup,
    # Help texts are plain text: with rich markup, "[default: 127.0.0.1]" in a help
    # string is taken for a tag and dropped from --help.
    rich_markup_mode=None,
)
app.callback()(global_options)

app.command("run")(run_command)
app.command("recommend")(recommend_command)
app.command("api")(api_command)
app.command("versions")(versions_command)
app.command("verify")(verify_command)
app.command("rollback")(rollback_command)
app.command("compact")(compact_command)
# `towerflow import`: real interaction logs into a data snapshot.
app.command("import")(import_command)
# `towerflow evaluate [--ablation]`: train variants on a snapshot, one table with baselines.
app.command("evaluate")(evaluate_command)
# `towerflow tune`: the training recipe searched on validation (Optuna).
app.command("tune")(tune_command)
app.command("report")(report_command)
# New items between nightly runs: send item events, serve the deployments that react.
app.command("add-items")(add_items_command)
app.command("retire-items")(retire_items_command)
app.command("serve")(serve_command)
# `towerflow alerts apply|remove`: the alert automations, for `prefect deploy` users
# (`serve` applies the same ones).
app.add_typer(alerts_app, name="alerts")
