"""The `connector` command: one entry point for every role.

Each command's module is imported when the command runs, not before: a command that only
talks to a running connector's management API (`asset`, `offer`, `transfer`, ...) must not pay
for rdflib, pyld, SQLAlchemy or aiohttp at start-up. `--help` lists the commands from the table
below without importing any of them.
"""

from __future__ import annotations

import importlib

import click

# name -> (module, attribute, one line for `connector --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "agreement": ("connector.mgmtcli", "agreement", "Agreements of this connector: show, retire."),
    "asset": ("connector.mgmtcli", "asset", "Assets of this connector."),
    "audit": ("connector.audit.cli", "audit", "The hash-chained, signed audit log: verify, show."),
    "authority": (
        "connector.identity.cli",
        "authority",
        "Run the data-space authority: CA, participants, DATs, revocations.",
    ),
    "broker": (
        "connector.broker.cli",
        "broker",
        "The broker node: registrations, search, SPARQL, data product certificates.",
    ),
    "catalog": ("connector.mgmtcli", "catalog", "Show a peer's catalog as this connector may see it."),
    "config": ("connector.configcli", "config", "Check a connector's configuration file."),
    "demo": ("connector.demo", "demo", "Run a small data space on loopback, end to end."),
    "facts": ("connector.mgmtcli", "facts", "Facts this connector holds and states itself."),
    "init": (
        "connector.configcli",
        "init",
        "Create a participant's keys and CSRs; with --role a whole connector folder.",
    ),
    "negotiate": ("connector.mgmtcli", "negotiate", "Negotiate a peer's offer; print the agreement."),
    "offer": ("connector.mgmtcli", "offer", "Offers of this connector (assets under policies)."),
    "payment": ("connector.mgmtcli", "payment", "Payments this provider received under agreements."),
    "policy": ("connector.odrl.cli", "policy", "ODRL policies: evaluate, check, explain, templates."),
    "pull": ("connector.mgmtcli", "pull", "Pull an agreement's data through this connector."),
    "search": ("connector.broker.cli", "search", "Find datasets across the data space at a broker."),
    "serve": ("connector.mgmtcli", "serve", "Run a connector from its TOML config."),
    "status": ("connector.mgmtcli", "status", "Whether a running connector is ready, and why not."),
    "transfer": ("connector.mgmtcli", "transfer", "Transfer processes of this connector."),
    "vault": ("connector.mgmtcli", "vault", "The consumer's local copies and their duties."),
}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use (COMMANDS)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module, attribute, _ = entry
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][2]) for name in self.list_commands(ctx)])


@click.group(cls=LazyGroup)
@click.version_option(package_name="dataspace-connector")
def main() -> None:
    """Trusted data space connector."""
