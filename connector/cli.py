"""The `connector` command: one entry point for every role."""

from __future__ import annotations

import click

from connector.audit.cli import audit
from connector.broker.cli import broker, search
from connector.configcli import config, init
from connector.demo import demo
from connector.identity.cli import authority
from connector.mgmtcli import (
    agreement,
    asset,
    catalog,
    facts,
    negotiate,
    offer,
    payment,
    pull,
    serve,
    transfer,
    vault,
)
from connector.odrl.cli import policy


@click.group()
@click.version_option(package_name="dataspace-connector")
def main() -> None:
    """Trusted data space connector."""


main.add_command(policy)
main.add_command(authority)
main.add_command(init)
main.add_command(config)
main.add_command(demo)
main.add_command(broker)
main.add_command(search)
for command in (serve, asset, offer, catalog, negotiate, pull, transfer, vault, audit, facts, payment,
                agreement):
    main.add_command(command)
