"""`python -m connector.identity`: the identity commands without the rest of the CLI."""

from connector.identity.cli import standalone

standalone()
