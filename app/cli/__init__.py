"""The `nurture` command line: the commands, registered here in the order `nurture --help` lists them;
each body lives in the module named for what it works on."""

from __future__ import annotations

import sys

import typer

from app.cli.access import key_cli, user_cli
from app.cli.leads import import_leads, rescore, train_model
from app.cli.mail import bounce_classify, dkim_cli
from app.cli.pipeline import events_cli, status
from app.cli.serve import demo_command, migrate, run, serve, smtpd, worker

cli = typer.Typer(help="nurture: lead intake, scoring, campaigns and attribution.", no_args_is_help=True)
cli.add_typer(user_cli, name="user")
cli.add_typer(key_cli, name="apikey")
cli.add_typer(events_cli, name="events")
cli.add_typer(dkim_cli, name="dkim")

# The sub-commands of `user`, `apikey`, `events` and `dkim` are registered with their groups.

cli.command()(migrate)
cli.command()(serve)
cli.command()(worker)
cli.command()(status)
cli.command()(smtpd)
cli.command()(run)
cli.command("demo")(demo_command)
cli.command()(rescore)
cli.command("train-model")(train_model)
cli.command("import-leads")(import_leads)
cli.command("bounce-classify")(bounce_classify)


def main() -> None:
    try:
        cli()
    except KeyboardInterrupt:
        sys.exit(130)
