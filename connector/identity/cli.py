"""CLI commands of the identity layer (`connector authority ...`, `connector init`)."""

from __future__ import annotations

import click


@click.group(name="authority")
def authority() -> None:
    """Run the data-space authority: CA, participant registry, DAT issuance."""


@click.command(name="init")
@click.argument("directory", type=click.Path(file_okay=False))
@click.option("--name", required=True, help="The participant's human-readable name.")
def init(directory: str, name: str) -> None:
    """Create a participant's key pair and certificate signing request in DIRECTORY."""
    raise click.ClickException("participant initialisation is not available in this build yet")
