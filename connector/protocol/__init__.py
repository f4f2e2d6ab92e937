"""Sans-IO Dataspace Protocol 2025-1: message models, the contract negotiation and transfer process
state machines, the provider's negotiation decision and catalog building. No sockets, no database,
no clock: time (``now``) and identifiers (``new_id``) are passed in.

Modules:

* ``messages``: pydantic models of every DSP body; ``Model.parse(json)`` / ``model.to_wire()``;
  ``parse_message``; ``offer_policy`` / ``agreement_policy`` / ``standalone_policy`` (ODRL dicts
  to engine policies).
* ``common``: ``Role``, the events every machine takes (``Received``, ``Acknowledged``,
  ``DeliveryFailed``), ``AgreementCheck``, and what comes out (``Outgoing``, ``Response``).
* ``negotiation``: ``apply(negotiation | None, event, now) -> Transition`` for both roles.
* ``transfer``: ``apply(transfer | None, event, now) -> Transition``; ``check_agreement``.
* ``decide``: ``check_offer`` (is the requested ``offer.@id`` one of the provider's?);
  ``decide_request(...) -> Decision`` (agree or terminate, and why); ``verify_agreement`` for the
  consumer.
* ``catalog``: ``CatalogBuilder`` (filtered, paginated Catalog and Dataset responses).
* ``ids``: the length and character rules of the ids in a message (``MAX_PROCESS_ID_LENGTH``),
  checked by ``Model.parse``.
* ``errors``: ``ProtocolError`` (status 400 / 404 / 409, code, reasons).
"""
