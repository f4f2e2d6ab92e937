"""The broker node: registrations, search, SPARQL (see connector.broker.app)."""
