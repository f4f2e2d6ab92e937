"""What the engine needs of the network: send one DSP message, and ask a counter-party for its
state of a process. ``connector.http.client.DspClient`` implements it (structurally: the engine
never imports the HTTP layer); the engine's unit tests wire two engines through a fake."""

from __future__ import annotations

from typing import Any, Protocol


class Reply(Protocol):
    """The outcome of one request: ``ok`` (2xx), or why not and whether retrying can help."""

    @property
    def ok(self) -> bool: ...

    @property
    def permanent(self) -> bool:  # a refusal (4xx) that a retry of the same request gets again
        ...

    @property
    def status(self) -> int | None: ...  # the HTTP status (None: no answer)

    @property
    def body(self) -> Any: ...  # the parsed JSON body (any JSON value), or None

    @property
    def reason(self) -> str: ...


class Transport(Protocol):
    async def request(self, method: str, url: str, payload: Any = None) -> Reply: ...

    async def get(self, url: str) -> Reply: ...


class PeerReply(Reply, Protocol):
    @property
    def refused(self) -> bool:  # the outbound policy refused the destination: nothing was sent
        ...

    @property
    def next_url(self) -> str | None:  # the answer's next page (a paged catalog), if any
        ...


class Poster(Protocol):
    """A request of this connector's own to a counter-party (a token refresh, a notice)."""

    async def post(self, url: str, payload: Any) -> PeerReply: ...


class PeerClient(Transport, Poster, Protocol):
    """All the control plane asks of its DSP client: the engine's transport, its own requests,
    and the outbound policy's check of an address a peer gave (raises
    ``connector.http.outbound.OutboundRefused``)."""

    async def check(self, url: str) -> object: ...
