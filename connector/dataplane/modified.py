"""A data source whose bytes are modified on the way out, as the agreement's duty to modify in
transit says (connector.usage.modify).

``ModifiedSource(source, modification, media_type)`` wraps any `DataSource`; the data plane
serves it like any other, so pulls and pushes both go through it and the receipt's SHA-256 is
over the modified bytes actually sent. What changes for the consumer:

- no ``Content-Length`` (the modified size is known only at the end: the body is chunked), no
  ``ETag``, no ``Accept-Ranges``; ``Content-Type`` is the media type the data was read as;
- a ``Range`` request gets the whole modified body with status 200: byte offsets of the
  original mean nothing in the modified data, and RFC 9110 lets a server ignore Range;
- data that cannot be modified (an unknown or binary media type with a field or column
  operation, a missing CSV column, invalid JSON or UTF-8, a compressed upstream body) is refused
  with 403 and the reason before the first byte when that is where it shows (the first chunk,
  and a whole JSON document, are transformed before the response begins); a fault further on
  raises `ModificationError` from the chunks and the data plane cuts the response off. Never
  are the original bytes delivered instead. An agreement that asks for what cannot be done to
  any data (`unperformable`) is refused before a use is counted; a refusal that depends on the
  data comes after the request was decided, so it has counted one.

The media type: the asset's declared content type, else the one the source answers with
(unless generic: ``application/octet-stream``), else the file name's extension.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from connector.dataplane.sources import (
    DataSource,
    FileSource,
    HttpSource,
    SourceResponse,
    error_response,
)
from connector.usage.modify import (
    Modification,
    ModificationError,
    Transformer,
    choose_media_type,
)

_DROPPED = frozenset({"content-length", "content-range", "accept-ranges", "etag"})
REFUSED = "the agreement requires the data to be modified in transit, and it cannot be"


def refusal(exc: ModificationError) -> str:
    return f"{REFUSED}: {exc.reason}"


def _name_of(source: DataSource) -> str | None:
    if isinstance(source, FileSource):
        return source.path.name
    if isinstance(source, HttpSource):
        return PurePosixPath(urlsplit(source.url).path).name or None
    return None


@dataclass(frozen=True, slots=True)
class ModifiedSource:
    source: DataSource
    modification: Modification
    media_type: str | None = None  # the asset's declared content type

    def unperformable(self) -> str | None:
        """The refusal when the agreement asks for what cannot be done to any data (so the
        data plane refuses before it counts a use); None when it depends on the data."""
        if self.modification.refusal is None:
            return None
        return f"{REFUSED}: {self.modification.refusal}"

    async def open(self, range_header: str | None = None) -> SourceResponse:
        src = await self.source.open(None)  # the whole data: see the module docstring
        if src.status >= 400:
            return src
        encoding = src.headers.get("Content-Encoding", "identity").strip().lower()
        media = choose_media_type(
            self.media_type, src.headers.get("Content-Type"), name=_name_of(self.source)
        )
        try:
            if encoding not in ("", "identity"):
                raise ModificationError(f"the data comes {encoding}-encoded")
            transformer = self.modification.start(media)
            first, chunks = await _first_output(transformer, src.chunks)
        except ModificationError as exc:
            await src.close()
            return error_response(403, refusal(exc))
        except BaseException:
            await src.close()
            raise
        headers = {k: v for k, v in src.headers.items() if k.lower() not in _DROPPED}
        if media is not None:
            headers["Content-Type"] = media
        return SourceResponse(200, headers, _rest(first, chunks, transformer), src.close)


async def _first_output(
    t: Transformer, chunks: AsyncIterator[bytes]
) -> tuple[bytes, AsyncIterator[bytes] | None]:
    """Feed until the transformer gives its first bytes (or the data ends: then all of it), so
    what fails at the start is refused before the response begins. (out, the rest or None)"""
    async for chunk in chunks:
        out = t.feed(chunk)
        if out:
            return out, chunks
    return t.finish(), None


async def _rest(first: bytes, chunks: AsyncIterator[bytes] | None, t: Transformer) -> AsyncIterator[bytes]:
    if first:
        yield first
    if chunks is None:
        return
    async for chunk in chunks:
        out = t.feed(chunk)
        if out:
            yield out
    last = t.finish()
    if last:
        yield last
