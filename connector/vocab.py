"""Namespaces and the project's only JSON-LD document loader.

Every context and vocabulary the connector reads ships in ``vocab/`` (installed inside the
package as ``connector/_data/vocab``). The loader serves exactly the URLs listed in
``vocab/catalog.json`` and refuses every other URL: nothing is fetched from the network, ever.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from rdflib import Graph, Namespace

ODRL = Namespace("http://www.w3.org/ns/odrl/2/")
REPORT = Namespace("https://w3id.org/force/compliance-report#")
DSPACE = Namespace("https://w3id.org/dspace/2025/1/")
DCAT = Namespace("http://www.w3.org/ns/dcat#")
DCT = Namespace("http://purl.org/dc/terms/")
IDS = Namespace("https://w3id.org/idsa/core/")
IDSC = Namespace("https://w3id.org/idsa/code/")
XSD = Namespace("http://www.w3.org/2001/XMLSchema#")
PROV = Namespace("http://www.w3.org/ns/prov#")
SOTW = Namespace("https://w3id.org/force/sotw#")
# Terms of this project that no public vocabulary has (report extensions such as explanations).
DSC = Namespace("https://w3id.org/dataspace-connector/ns#")

ODRL_CONTEXT_URL = "http://www.w3.org/ns/odrl.jsonld"


class RemoteDocumentRefused(ValueError):
    """A document named a URL that is not shipped in vocab/; the connector never fetches it."""

    def __init__(self, url: str) -> None:
        super().__init__(
            f"refusing to load remote document {url!r}: only the contexts and vocabularies "
            "shipped in vocab/ are available (no network access at run time)"
        )
        self.url = url


def vocab_dir() -> Path:
    """The folder holding the shipped vocabularies (installed copy first, then the checkout)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_data" / "vocab", here.parent / "vocab"):
        if (candidate / "catalog.json").is_file():
            return candidate
    raise FileNotFoundError("vocab/catalog.json not found: the installation is incomplete")


@cache
def _catalog() -> dict[str, Path]:
    root = vocab_dir()
    entries = json.loads((root / "catalog.json").read_text(encoding="utf-8"))["documents"]
    return {url: root / rel for url, rel in entries.items()}


def known_urls() -> list[str]:
    return sorted(_catalog())


def local_path(url: str) -> Path:
    """The shipped file for ``url``; raises RemoteDocumentRefused for anything else."""
    path = _catalog().get(url)
    if path is None:
        raise RemoteDocumentRefused(url)
    return path


@cache
def _load_json(url: str) -> Any:
    return json.loads(local_path(url).read_text(encoding="utf-8"))


def load_json_document(url: str) -> Any:
    """The parsed JSON of a shipped JSON-LD document (cached; callers must not mutate it)."""
    return _load_json(url)


def document_loader(url: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """A pyld document loader that serves shipped files and refuses everything else.

    Each call gets its own copy: pyld normalises context documents in place, and a shared
    cached copy would carry one expansion's changes into the next.
    """
    document = copy.deepcopy(load_json_document(url))
    return {"contextUrl": None, "documentUrl": url, "document": document}


_PYLD_LOCK = threading.Lock()


def jsonld_call(fn: Callable[..., Any], *args: Any, options: dict[str, Any] | None = None) -> Any:
    """Run a pyld operation with the offline loader and a fresh context cache.

    pyld keeps resolved contexts in a module-wide cache, and processing a scoped context with
    ``@import`` (as the DSP context does) alters cached entries in place: a later, unrelated
    document then fails with "a term definition must not contain ...". Clearing the cache per
    call costs about a millisecond and makes every expansion independent of the ones before.
    """
    from pyld import jsonld

    with _PYLD_LOCK:
        jsonld._resolved_context_cache.clear()
        return fn(*args, {**(options or {}), "documentLoader": document_loader})


@cache
def ontology_graph(url: str) -> Graph:
    """A shipped ontology as an rdflib graph (cached; callers must not mutate it)."""
    path = local_path(url)
    return Graph().parse(path, format="turtle")
