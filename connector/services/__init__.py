"""The management API's business logic, one module per resource, free of HTTP.

`connector.http.management` parses and validates a request (its pydantic models), calls one
service method and renders the result; a service reads and writes the store, drives the control
plane and raises the typed errors of `connector.services.errors`, which the HTTP edge maps to
statuses in one place (`connector.http.errors.service_fault`). Listings filter and order in SQL
before paging (`connector.services.records`).

    assets, policies, offers   what a provider offers (each change refreshes the catalog)
    catalog                    a peer's catalog, fetched over DSP
    negotiations, agreements   contract negotiation and its outcome (status, retirement)
    held                       the provider's held facts and payments
    transfers                  transfer processes and their commands, token refresh
    vault                      the consumer's pulls, local copies, governed uses and exports
    audit                      the audit trail's timeline
"""
