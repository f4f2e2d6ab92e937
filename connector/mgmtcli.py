"""CLI commands of a running connector: `serve`, and wrappers over its management API
(`asset add`, `offer add`, `catalog`, `negotiate`)."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import click

from connector.logs import LogFormat, log_options
from connector.tomlenv import TomlEnvError, read_toml

# Commands that only call the management API import nothing heavy (no pydantic, aiohttp,
# SQLAlchemy): they start in well under 150 ms. `serve` and the peer-URL check import what they
# need when they run.


def _config(path: str) -> Any:
    from connector.config import ConfigError, load_config  # pydantic, aiohttp: `serve` only

    try:
        return load_config(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def _management(path: str) -> tuple[str, str]:
    """(the management API's base URL, its key) from a config's [management] section, read
    without the whole config model (`connector config check` validates the whole file)."""
    p = Path(path)
    try:
        m = read_toml(p).get("management", {})
    except TomlEnvError as exc:
        raise click.ClickException(str(exc)) from exc
    host, port = m.get("host", "127.0.0.1"), m.get("port", 8802)
    key = m.get("api_key")
    if key is None and isinstance(m.get("api_key_file"), str):
        key_file = Path(m["api_key_file"])
        key_file = key_file if key_file.is_absolute() else p.resolve().parent / key_file
        try:
            key = key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise click.ClickException(
                f"management.api_key_file: cannot read {key_file}: {exc.strerror}"
            ) from exc
    if not isinstance(key, str) or not key:
        raise click.ClickException(f"{p}: [management] has neither api_key nor api_key_file")
    return f"http://{host}:{port}", key


@click.command(name="serve")
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@log_options
def serve(config: str, log_level: str, log_format: LogFormat) -> None:
    """Run a connector from its TOML CONFIG (DSP endpoints and the management API)."""
    from connector.serve import serve as run

    run(_config(config), log_level=log_level, log_format=log_format)


class Api:
    def __init__(self, base: str, key: str) -> None:
        self.base, self.key = base.rstrip("/"), key

    def call(self, method: str, path: str, body: Any = None, timeout: float = 30) -> Any:
        import urllib.error
        import urllib.request

        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"X-Api-Key": self.key, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            try:
                err = json.loads(exc.read())
                msg = err.get("error", "") + "".join(f"\n  {d}" for d in err.get("details", []))
            except ValueError:
                msg = exc.reason
            raise click.ClickException(f"{exc.code}: {msg}") from exc
        except OSError as exc:
            raise click.ClickException(f"cannot reach the management API at {self.base}: {exc}") from exc
        return json.loads(raw) if raw else None


def _api(config: str | None, api: str | None, api_key: str | None) -> Api:
    if config:
        url, key = _management(config)
        return Api(api or url, api_key or key)
    if not api or not api_key:
        raise click.ClickException(
            "give --config, or --api and --api-key (or CONNECTOR_API and CONNECTOR_API_KEY)"
        )
    return Api(api, api_key)


def _api_options(f: Any) -> Any:
    f = click.option("--api-key", envvar="CONNECTOR_API_KEY", help="Management API key.")(f)
    f = click.option("--api", envvar="CONNECTOR_API", help="Management API base URL.")(f)
    return click.option(
        "--config",
        type=click.Path(exists=True, dir_okay=False),
        help="The connector's config (API URL and key from it).",
    )(f)


def _print(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


Column = tuple[str, Callable[[dict[str, Any]], Any]]
PAGE = 500  # items per management API page (its maximum)


def _table(rows: list[dict[str, Any]], columns: Sequence[Column]) -> None:
    """Rows as aligned columns for people (``--json`` gives the API's JSON)."""
    if not rows:
        click.echo("(none)")
        return
    cells = [[str(get(r) if get(r) is not None else "-") for _, get in columns] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (h, _) in enumerate(columns)]
    click.echo("  ".join(h.ljust(w) for (h, _), w in zip(columns, widths, strict=True)).rstrip())
    for c in cells:
        click.echo("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip())


def _listing(rows: list[dict[str, Any]], columns: Sequence[Column], as_json: bool) -> None:
    """A listing as the API's JSON (``--json``) or as a table for people."""
    if as_json:
        _print(rows)
    else:
        _table(rows, columns)


def _json_option(fn: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")(fn)


def _from_option(what: str) -> Callable[[Any], Any]:
    return click.option(
        "--from",
        "from_file",
        type=click.Path(exists=True, dir_okay=False),
        help=f"A JSON array (or JSON lines) of {what}: all added in one call.",
    )


def _add_many(
    client: Api, path: str, api_path: str, body_of: Callable[[dict[str, Any]], dict[str, Any]]
) -> None:
    """Every item of the file, in order; the first refusal stops with its position and reason
    (what was added before it stays, and is printed)."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        data = json.loads(text)
        items = data if isinstance(data, list) else [data]
    except ValueError:
        try:
            items = [json.loads(line) for line in text.splitlines() if line.strip()]
        except ValueError as exc:
            raise click.ClickException(f"{path}: neither a JSON array nor JSON lines: {exc}") from exc
    added: list[Any] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise click.ClickException(f"{path}: item {i} is not a JSON object")
        try:
            added.append(client.call("POST", api_path, body_of(item)))
        except click.ClickException as exc:
            _print(added)
            raise click.ClickException(
                f"{path}: item {i} refused ({len(added)} added before it): {exc.message}"
            ) from exc
    _print(added)


def resource_commands(
    group: click.Group,
    *,
    path: str,
    noun: str,
    columns: Sequence[Column],
    delete: str | None = None,
    show: bool = True,
) -> None:
    """``list`` (a table, or ``--json``; every page), ``show ID`` and, where the API has it,
    ``delete ID`` for one management API resource at ``path``."""

    @group.command(name="list", help=f"Every {noun} of this connector.")
    @_api_options
    @_json_option
    def list_(config: str | None, api: str | None, api_key: str | None, as_json: bool) -> None:
        client = _api(config, api, api_key)
        rows: list[dict[str, Any]] = []
        while True:  # every page, oldest first
            page = client.call("GET", f"{path}?{urlencode({'limit': PAGE, 'offset': len(rows)})}")
            rows += page
            if len(page) < PAGE:
                break
        _listing(rows, columns, as_json)

    if show:

        @group.command(name="show", help=f"One {noun} (JSON).")
        @click.argument("item_id")
        @_api_options
        def show_(item_id: str, config: str | None, api: str | None, api_key: str | None) -> None:
            _print(_api(config, api, api_key).call("GET", f"{path}/{_path_id(item_id)}"))

    if delete is not None:

        @group.command(name="delete", help=delete)
        @click.argument("item_id")
        @_api_options
        def delete_(item_id: str, config: str | None, api: str | None, api_key: str | None) -> None:
            _api(config, api, api_key).call("DELETE", f"{path}/{_path_id(item_id)}")
            click.echo(f"deleted {noun} {item_id}")


@click.command(name="status")
@click.argument("config", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--wait",
    "wait_s",
    type=float,
    default=0.0,
    show_default=True,
    help="Seconds to wait for the connector to be ready.",
)
def status(config: str, wait_s: float) -> None:
    """Whether the connector of CONFIG is ready (its /ready: the store, the authority, its
    DAT). Exit 0 when ready, 1 otherwise, saying which check failed."""
    import urllib.error
    import urllib.request

    url, _ = _management(config)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            with urllib.request.urlopen(url + "/ready", timeout=5) as resp:
                answer = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            answer = json.loads(exc.read() or b"{}")
        except OSError as exc:
            answer = {"status": "not answering", "checks": {"management API": str(exc)}}
        if answer.get("status") == "ready" or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    click.echo(f"{answer.get('status')}: {url}")
    for name, result in (answer.get("checks") or {}).items():
        click.echo(f"  {name}: {result}")
    sys.exit(0 if answer.get("status") == "ready" else 1)


@click.group(name="asset")
def asset() -> None:
    """Assets of this connector."""


@asset.command(name="add")
@_api_options
@click.option("--id", "asset_id")
@click.option("--title")
@click.option("--description")
@click.option(
    "--file", "file_path", type=click.Path(exists=True, dir_okay=False), help="Serve this local file."
)
@click.option("--url", help="Serve this HTTP upstream (the provider's internal API).")
@click.option(
    "--header",
    "headers",
    multiple=True,
    metavar="NAME:VALUE",
    help="A header for the upstream (kept provider-side, never shown).",
)
@click.option("--keyword", "keywords", multiple=True, help="A keyword (repeatable).")
@_from_option("assets: {id, title, description, keywords, file | url, headers}")
def asset_add(
    config: str | None,
    api: str | None,
    api_key: str | None,
    asset_id: str | None,
    title: str | None,
    description: str | None,
    file_path: str | None,
    url: str | None,
    headers: tuple[str, ...],
    keywords: tuple[str, ...],
    from_file: str | None,
) -> None:
    """Add an asset backed by a local file or an HTTP upstream; or, with --from, every asset
    of a file in one call."""
    client = _api(config, api, api_key)
    if from_file is not None:
        _add_many(client, from_file, "/api/assets", _asset_body)
        return
    _print(
        client.call(
            "POST",
            "/api/assets",
            _asset_body(
                {
                    "id": asset_id,
                    "title": title,
                    "description": description,
                    "file": file_path,
                    "url": url,
                    "keywords": list(keywords),
                    "headers": dict(h.split(":", 1) for h in headers),
                }
            ),
        )
    )


def _asset_body(item: dict[str, Any]) -> dict[str, Any]:
    """The management API's body for one asset given as the command's options are."""
    if bool(item.get("file")) == bool(item.get("url")):
        raise click.ClickException("give exactly one of file (--file) and url (--url)")
    address: dict[str, Any] = (
        {"type": "file", "path": str(Path(item["file"]).resolve())}
        if item.get("file")
        else {"type": "http", "url": item["url"]}
    )
    if item.get("headers"):
        address["headers"] = dict(item["headers"])
    return {
        k: v
        for k, v in {
            "id": item.get("id"),
            "title": item.get("title"),
            "description": item.get("description"),
            "keywords": item.get("keywords") or None,
            "dataAddress": address,
        }.items()
        if v is not None
    }


resource_commands(
    asset,
    path="/api/assets",
    noun="asset",
    delete="Delete an asset (409 while an offer lists it or an agreement is under it).",
    columns=[
        ("ID", lambda r: r["id"]),
        ("TITLE", lambda r: r.get("title")),
        ("SOURCE", lambda r: (r.get("dataAddress") or {}).get("type")),
        ("CREATED", lambda r: r.get("createdAt")),
    ],
)


@click.group(name="offer")
def offer() -> None:
    """Offers of this connector (assets under an access and a contract policy)."""


@offer.command(name="add")
@_api_options
@click.option("--id", "offer_id")
@click.option("--asset", "assets", multiple=True, help="An asset id (repeatable).")
@click.option(
    "--access-template",
    default="allow-usage",
    show_default=True,
    help="Who may see the offer: a policy template.",
)
@click.option("--access-set", multiple=True, metavar="KEY=VALUE")
@click.option("--contract-template", help="The usage terms: a policy template.")
@click.option("--contract-set", multiple=True, metavar="KEY=VALUE")
@_from_option("offers: {id, assets, accessTemplate, accessParams, contractTemplate, contractParams}")
def offer_add(
    config: str | None,
    api: str | None,
    api_key: str | None,
    offer_id: str | None,
    assets: tuple[str, ...],
    access_template: str,
    access_set: tuple[str, ...],
    contract_template: str | None,
    contract_set: tuple[str, ...],
    from_file: str | None,
) -> None:
    """Offer assets: policies from templates (see `connector policy templates`); or, with
    --from, every offer of a file in one call."""
    client = _api(config, api, api_key)
    if from_file is not None:
        _add_many(client, from_file, "/api/offers", lambda item: _offer_body(client, item))
        return
    if not assets or not contract_template:
        raise click.ClickException("give --asset and --contract-template (or --from FILE)")
    _print(
        client.call(
            "POST",
            "/api/offers",
            _offer_body(
                client,
                {
                    "id": offer_id,
                    "assets": list(assets),
                    "accessTemplate": access_template,
                    "accessParams": _params(access_set),
                    "contractTemplate": contract_template,
                    "contractParams": _params(contract_set),
                },
            ),
        )
    )


def _params(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for p in pairs:
        k, sep, v = p.partition("=")
        if not sep:
            raise click.ClickException(f"{p!r}: expected KEY=VALUE")
        out[k] = v
    return out


def _offer_body(client: Api, item: dict[str, Any]) -> dict[str, Any]:
    """The offer's two policies made from their templates; the API's body for the offer."""
    if not item.get("assets") or not item.get("contractTemplate"):
        raise click.ClickException("an offer needs assets and a contractTemplate")
    access = client.call(
        "POST",
        "/api/policies",
        {
            "template": item.get("accessTemplate") or "allow-usage",
            "params": dict(item.get("accessParams") or {}),
        },
    )
    contract = client.call(
        "POST",
        "/api/policies",
        {"template": item["contractTemplate"], "params": dict(item.get("contractParams") or {})},
    )
    body = {
        "assetIds": list(item["assets"]),
        "accessPolicyId": access["id"],
        "contractPolicyId": contract["id"],
    }
    if item.get("id"):
        body["id"] = item["id"]
    return body


resource_commands(
    offer,
    path="/api/offers",
    noun="offer",
    delete="Withdraw an offer (agreements made under it stay).",
    columns=[
        ("ID", lambda r: r["id"]),
        ("ASSETS", lambda r: "all" if r.get("allAssets") else ", ".join(r.get("assetIds") or [])),
        ("CONTRACT POLICY", lambda r: r.get("contractPolicyId")),
        ("CREATED", lambda r: r.get("createdAt")),
    ],
)


def _peer_url(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """A peer's DSP base URL, its syntax checked here; whether this connector may call its
    address (`[dsp] peer_allow`) the connector decides (a refusal is a 400 with the reason)."""
    from connector.http.outbound import OutboundRefused, parse_url  # aiohttp: only when checked

    try:
        parse_url(value, base=True)
    except OutboundRefused as exc:
        raise click.BadParameter(exc.reason) from None
    return value


@click.command(name="catalog")
@click.argument(
    "peer_urls",
    nargs=-1,
    required=True,
    callback=lambda c, p, v: tuple(_peer_url(c, p, u) for u in v),
    metavar="PEER_URL...",
)
@_api_options
@click.option(
    "--json", "as_json", is_flag=True, help="The catalogs as JSON (one object; a list for several peers)."
)
def catalog(
    peer_urls: tuple[str, ...], config: str | None, api: str | None, api_key: str | None, as_json: bool
) -> None:
    """Show each PEER_URL's catalog as this connector may see it, every page: each dataset
    with its title, description and keywords, each offer with its terms in words and the id
    to pass to `negotiate`. Of a broker: the whole data space (every connector's catalog the
    broker has crawled, each dataset with its provider)."""
    # the broker's modules (SQLAlchemy, RDF) load only for this command
    from connector.broker.catalogs import data_space

    client = _api(config, api, api_key)
    shown = []
    for peer_url in peer_urls:
        data = client.call("POST", "/api/catalog", {"peerUrl": peer_url})
        dsp = data.pop("dsp", None)
        whole = data_space(dsp) if isinstance(dsp, dict) else None  # a broker's
        shown.append({**(whole or data), "peerUrl": peer_url})
    if as_json:
        _print(shown[0] if len(shown) == 1 else shown)
        return
    for c in shown:
        _echo_catalog(c)


def _echo_catalog(c: dict[str, Any]) -> None:
    datasets = c.get("datasets") or []
    what = (
        f"the data space at broker {c['peerUrl']} ({c['catalogs']} connectors)"
        if "catalogs" in c
        else f"{c.get('participantId')} at {c['peerUrl']}"
    )
    click.echo(f"{what}: {len(datasets)} dataset(s)")
    for d in datasets:
        title = f"  {d.get('title')}" if d.get("title") else ""
        click.echo(f"\n{d.get('id')}{title}")
        if d.get("provider"):
            click.echo(f"  provider {d['provider']} at {d.get('endpoint')}")
        if d.get("description"):
            click.echo(f"  {d['description']}")
        if d.get("keywords"):
            click.echo(f"  keywords: {', '.join(d['keywords'])}")
        for o in d.get("offers") or []:
            click.echo(f"  offer {o.get('id')}")
            for line in o.get("terms") or ["(no rules)"]:
                click.echo(f"    {line}")


@click.command(name="negotiate")
@click.argument("peer_url", callback=_peer_url)
@click.argument("offer_id")
@_api_options
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait.")
@click.option(
    "--dataset",
    "dataset_id",
    default=None,
    help="The dataset, when OFFER_ID is the provider's offer over several assets.",
)
def negotiate(
    peer_url: str,
    offer_id: str,
    config: str | None,
    api: str | None,
    api_key: str | None,
    timeout: float,
    dataset_id: str | None,
) -> None:
    """Negotiate OFFER_ID of PEER_URL (the catalog's offer id, or the id `offer add` printed);
    wait for the end and print the state and the reason."""
    client = _api(config, api, api_key)
    body = {"peerUrl": peer_url, "offerId": offer_id}
    if dataset_id:
        body["datasetId"] = dataset_id
    n = client.call("POST", "/api/negotiations", body)
    deadline = time.monotonic() + timeout
    while n["state"] not in ("FINALIZED", "TERMINATED") and time.monotonic() < deadline:
        n = client.call(
            "GET",
            f"/api/negotiations/{_path_id(n['id'])}?waitFor=FINALIZED,TERMINATED"
            f"&timeout={min(10.0, max(0.1, deadline - time.monotonic())):.1f}",
        )
    click.echo(f"{n['state']}: negotiation {n['id']}")
    if n["state"] == "FINALIZED":
        click.echo(f"agreement {n['agreementId']}")
    elif n.get("terminationReason"):
        click.echo("reason: " + "; ".join(n["terminationReason"]))
    else:
        click.echo("still running (timeout)")
    sys.exit(0 if n["state"] == "FINALIZED" else 1)


def _stated_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--purpose, --application, --event, --location: the facts a use states (IRIs or CURIEs
    such as dpv:ScientificResearch), decided on by the agreement."""
    for name, what in reversed(
        (
            ("purpose", "The purpose of this use"),
            ("application", "The registered application that uses the data"),
            ("event", "An event under way that the use is for"),
            ("location", "The place of use (odrl:spatial)"),
        )
    ):
        fn = click.option(f"--{name}", help=f"{what} (an IRI or a CURIE).")(fn)
    return fn


def _stated(**given: str | None) -> dict[str, str]:
    return {k: v for k, v in given.items() if v}


@click.command(name="pull")
@click.argument("peer_url", callback=_peer_url)
@click.argument("agreement_id")
@_api_options
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    help="Write the data here (default: the consumer's vault in its participant dir).",
)
@_stated_options
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for the transfer to start.")
def pull(
    peer_url: str,
    agreement_id: str,
    config: str | None,
    api: str | None,
    api_key: str | None,
    out: str | None,
    purpose: str | None,
    application: str | None,
    event: str | None,
    location: str | None,
    timeout: float,
) -> None:
    """Pull the data of AGREEMENT_ID from PEER_URL through this connector: it starts a
    transfer, downloads with the transfer token (refreshed when it expires), verifies the
    provider's signed receipts, logs them, and keeps the copy in its vault under the
    agreement's duties."""
    client = _api(config, api, api_key)
    agreement = client.call("GET", f"/api/agreements/{_path_id(agreement_id)}")
    provider = _provider_address(client, agreement)
    if provider is not None and provider.rstrip("/") != peer_url.rstrip("/"):
        raise click.ClickException(
            f"agreement {agreement['id']} is with the provider at {provider}, not {peer_url}"
        )
    t = client.call("POST", "/api/transfers", {"agreementId": agreement_id})
    deadline = time.monotonic() + timeout
    while t["state"] not in ("STARTED", "TERMINATED") and time.monotonic() < deadline:
        time.sleep(0.1)
        t = client.call("GET", f"/api/transfers/{_path_id(t['id'])}")
    if t["state"] == "TERMINATED":
        reason = "; ".join(t.get("terminationReason") or []) or "no reason given"
        raise click.ClickException(f"the transfer was terminated: {reason}")
    if t["state"] != "STARTED":
        why = (
            f"the provider has not taken the request yet: {t['errorDetail']} (the connector keeps retrying)"
            if t.get("errorDetail")
            else "the provider took the request but has not started the transfer"
        )
        raise click.ClickException(f"the transfer {t['id']} is still {t['state']} after {timeout:g} s: {why}")
    body: dict[str, Any] = {}
    if out:
        body["out"] = str(Path(out).resolve())
    body.update(_stated(purpose=purpose, application=application, event=event, location=location))
    job = client.call("POST", f"/api/transfers/{t['id']}/pull", body)
    with click.progressbar(
        length=job.get("total") or 0, label="pulling", file=sys.stderr, show_pos=True
    ) as bar:
        done = 0
        while job["state"] == "running":
            job = client.call("GET", f"/api/transfers/{t['id']}/pull?wait=0.5")
            if job.get("total") and not bar.length:
                bar.length = job["total"]
            bar.update(job["bytes"] - done)
            done = job["bytes"]
    if job["state"] != "done":
        raise click.ClickException(f"the pull failed: {job['error']}")
    click.echo(f"{job['bytes']} bytes -> {job['path']}")
    if job.get("deleteAt"):
        click.echo(f"the agreement's delete duty: the connector deletes it at {job['deleteAt']}")
    click.echo(f"sha256 {job['sha256']}")
    click.echo(f"receipts verified: {job['receipts']} signed receipt(s) cover {job['responses']} response(s)")
    click.echo(f"vault item {job['vaultId']} (agreement {agreement['id']})")


def _provider_address(client: Api, agreement: dict[str, Any]) -> str | None:
    """The DSP address of the provider this consumer negotiated the agreement with (None when
    this connector did not negotiate it)."""
    negotiation_id = agreement.get("negotiationId")
    if not negotiation_id:
        return None
    n = client.call("GET", f"/api/negotiations/{_path_id(negotiation_id)}")
    address = n.get("counterPartyAddress") if isinstance(n, dict) else None
    return address if isinstance(address, str) else None


@click.group(name="transfer")
def transfer() -> None:
    """Transfer processes of this connector, either role: list, show, push, and the actions
    either side may take at any time (suspend, resume, complete, terminate)."""


@transfer.command(name="list")
@_api_options
@click.option("--state", help="Only transfers in this state.")
@_json_option
def transfer_list(
    config: str | None, api: str | None, api_key: str | None, state: str | None, as_json: bool
) -> None:
    """Transfers, newest first (the 200 newest)."""
    query = {"order": "newest", "limit": "200", **({"state": state} if state else {})}
    rows = _api(config, api, api_key).call("GET", f"/api/transfers?{urlencode(query)}")
    _listing(
        rows,
        [
            ("ID", lambda r: r["id"]),
            ("ROLE", lambda r: r.get("role")),
            ("STATE", lambda r: r.get("state")),
            ("FORMAT", lambda r: r.get("format")),
            ("AGREEMENT", lambda r: r.get("agreementId")),
            ("UPDATED", lambda r: r.get("updatedAt")),
        ],
        as_json,
    )


@transfer.command(name="show")
@click.argument("transfer_id")
@_api_options
def transfer_show(transfer_id: str, config: str | None, api: str | None, api_key: str | None) -> None:
    """One transfer (a consumer's shows the endpoint data reference it pulls with)."""
    _print(_api(config, api, api_key).call("GET", f"/api/transfers/{transfer_id}"))


@transfer.command(name="push")
@click.argument("agreement_id")
@_api_options
@_stated_options
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for the end.")
def transfer_push(
    agreement_id: str,
    config: str | None,
    api: str | None,
    api_key: str | None,
    purpose: str | None,
    application: str | None,
    event: str | None,
    location: str | None,
    timeout: float,
) -> None:
    """Ask the provider of AGREEMENT_ID to push the data into this connector's vault; wait for
    the transfer's end and say how it ended."""
    client = _api(config, api, api_key)
    body: dict[str, Any] = {
        "agreementId": agreement_id,
        "format": "HttpData-PUSH",
        **_stated(purpose=purpose, application=application, event=event, location=location),
    }
    t = client.call("POST", "/api/transfers", body)
    deadline = time.monotonic() + timeout
    while t["state"] not in ("COMPLETED", "TERMINATED") and time.monotonic() < deadline:
        time.sleep(0.2)
        t = client.call("GET", f"/api/transfers/{t['id']}")
    click.echo(f"{t['state']}: transfer {t['id']}")
    if t.get("terminationReason"):
        click.echo("reason: " + "; ".join(t["terminationReason"]))
    if t["state"] == "COMPLETED":
        held = [i for i in client.call("GET", "/api/vault") if i["transferId"] == t["id"]]
        for item in held:
            click.echo(f"vault item {item['id']}: {item['path']} (sha256 {item['sha256']})")
    sys.exit(0 if t["state"] == "COMPLETED" else 1)


def _transfer_action(action: str, doc: str) -> click.Command:
    @click.command(name=action, help=doc)
    @click.argument("transfer_id")
    @_api_options
    @click.option("--reason", default="", help="Why (sent to the other side).")
    def command(
        transfer_id: str, config: str | None, api: str | None, api_key: str | None, reason: str
    ) -> None:
        t = _api(config, api, api_key).call(
            "POST", f"/api/transfers/{transfer_id}/{action}", {"reason": reason} if reason else None
        )
        sending = t["internalState"] != t["state"]
        click.echo(
            f"{t['internalState']}: transfer {t['id']}" + (" (telling the other side)" if sending else "")
        )

    return command


for _action, _doc in (
    ("suspend", "Suspend TRANSFER_ID: running streams are cut off, requests denied."),
    ("resume", "Resume TRANSFER_ID (a side lifts only its own suspension)."),
    ("complete", "Complete TRANSFER_ID."),
    ("terminate", "Terminate TRANSFER_ID for good: its token stops working at once."),
):
    transfer.add_command(_transfer_action(_action, _doc))


@click.group(name="vault")
def vault() -> None:
    """The consumer's local copies held under agreements, and their governed use."""


@vault.command(name="list")
@_api_options
@_json_option
def vault_list(config: str | None, api: str | None, api_key: str | None, as_json: bool) -> None:
    """The local copies, with their agreements, delete dates and local use counts."""
    rows = _api(config, api, api_key).call("GET", "/api/vault")
    _listing(
        rows,
        [
            ("ID", lambda r: r["id"]),
            ("AGREEMENT", lambda r: r.get("agreementId")),
            ("DELETE AT", lambda r: r.get("deleteAt")),
            ("DELETED", lambda r: r.get("deletedAt")),
            ("USES", lambda r: r.get("uses")),
            ("PATH", lambda r: r.get("path")),
        ],
        as_json,
    )


@vault.command(name="read")
@click.argument("item_id")
@_api_options
@click.option("--out", type=click.Path(dir_okay=False), help="Write the data here (default: stdout).")
@_stated_options
def vault_read(
    item_id: str,
    config: str | None,
    api: str | None,
    api_key: str | None,
    out: str | None,
    purpose: str | None,
    application: str | None,
    event: str | None,
    location: str | None,
) -> None:
    """One governed use of the local copy ITEM_ID: the connector decides it on the agreement,
    fulfils its duties (logs the use, informs the provider) and counts it, or says why not."""
    import urllib.error
    import urllib.parse
    import urllib.request

    client = _api(config, api, api_key)
    stated = _stated(purpose=purpose, application=application, event=event, location=location)
    query = "?" + urllib.parse.urlencode(stated) if stated else ""
    req = urllib.request.Request(
        f"{client.base}/api/vault/{item_id}/data{query}", headers={"X-Api-Key": client.key}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            number = resp.headers.get("X-Use-Number")
            sink = open(out, "wb") if out else sys.stdout.buffer  # noqa: SIM115
            try:
                while block := resp.read(1 << 20):
                    sink.write(block)
            finally:
                if out:
                    sink.close()
    except urllib.error.HTTPError as exc:
        try:
            msg = json.loads(exc.read()).get("error", "")
        except ValueError:
            msg = exc.reason
        raise click.ClickException(f"{exc.code}: {msg}") from exc
    click.echo(f"local use {number} of {item_id}", err=True)


@vault.command(name="export")
@click.argument("item_id")
@_api_options
@click.option(
    "--recipient-cert",
    type=click.Path(exists=True, dir_okay=False),
    help="The recipient's certificate (PEM, issued by the data-space CA): the copy "
    "leaves encrypted to its key.",
)
@click.option(
    "--plain", is_flag=True, help="Export unencrypted (refused when the agreement requires encryption)."
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Write the envelope (or the plain copy) here.",
)
def vault_export(
    item_id: str,
    config: str | None,
    api: str | None,
    api_key: str | None,
    recipient_cert: str | None,
    plain: bool,
    out: str,
) -> None:
    """Let the local copy ITEM_ID leave the vault as its agreement says: decided on its
    `distribute` permission, encrypted to the recipient's certificate, the next policy attached
    when the agreement requires one, and logged in the audit log (`vault.distributed`)."""
    import os
    import tempfile
    import urllib.error
    import urllib.request

    if not recipient_cert and not plain:
        raise click.UsageError(
            "name the recipient with --recipient-cert (or --plain, where the "
            "agreement permits an unencrypted export)"
        )
    client = _api(config, api, api_key)
    body: dict[str, Any] = {"plain": plain}
    if recipient_cert:
        body["recipientCertificate"] = Path(recipient_cert).read_text()
    req = urllib.request.Request(
        f"{client.base}/api/vault/{item_id}/export",
        method="POST",
        data=json.dumps(body).encode(),
        headers={"X-Api-Key": client.key, "Content-Type": "application/json"},
    )
    target = Path(out)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".part", dir=target.parent if str(target.parent) else "."
    )
    try:
        with os.fdopen(fd, "wb") as sink, urllib.request.urlopen(req, timeout=120) as resp:
            while block := resp.read(1 << 20):
                sink.write(block)
            encrypted = resp.headers.get("X-Export-Encrypted") == "true"
            next_policy, note = resp.headers.get("X-Next-Policy"), resp.headers.get("X-Export-Note")
        os.replace(tmp, target)
    except urllib.error.HTTPError as exc:
        try:
            msg = json.loads(exc.read()).get("error", "")
        except ValueError:
            msg = exc.reason
        raise click.ClickException(f"{exc.code}: {msg}") from exc
    except OSError as exc:  # the stream broke off: no partial envelope is kept
        raise click.ClickException(f"the export did not complete: {exc}") from exc
    finally:
        Path(tmp).unlink(missing_ok=True)
    how = "encrypted to the recipient's key" if encrypted else "unencrypted"
    click.echo(f"vault item {item_id} exported {how}: {target}")
    if next_policy:
        click.echo(f"next policy attached: {next_policy}")
    if note:
        click.echo(f"note: {note}")


@vault.command(name="decrypt")
@click.argument("envelope", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--key",
    "key_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="The recipient's private key (PEM), e.g. its participant.key.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="Write the data here (only once all of it verified).",
)
@click.option(
    "--ca",
    "ca_file",
    type=click.Path(exists=True, dir_okay=False),
    help="The data-space CA certificate: the sender's signature must verify.",
)
def vault_decrypt(envelope: str, key_file: str, out: str, ca_file: str | None) -> None:
    """Open an ENVELOPE a connector exported to this recipient: every chunk verified, the size
    and SHA-256 checked (with --ca, the sending connector's signature too); prints who sent it
    under which agreement, and the next policy the data is received under."""
    import os
    import tempfile

    from cryptography import x509

    from connector.usage.envelope import EnvelopeError, load_private_key, open_envelope

    target = Path(out)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=".part", dir=target.parent if str(target.parent) else "."
    )
    try:
        key = load_private_key(Path(key_file).read_bytes())
        ca = x509.load_pem_x509_certificate(Path(ca_file).read_bytes()) if ca_file else None
        with open(envelope, "rb") as source, os.fdopen(fd, "wb") as sink:
            opened = open_envelope(source, key, ca=ca)
            for chunk in opened.chunks:
                sink.write(chunk)
        os.replace(tmp, target)
    except (EnvelopeError, ValueError) as exc:
        raise click.ClickException(f"the envelope is refused: {exc}") from exc
    finally:
        Path(tmp).unlink(missing_ok=True)
    header = opened.header
    plain = header["plaintext"]
    click.echo(f"decrypted {plain['size']} bytes (sha256 {plain['sha256']}) to {target}")
    checked = (
        "signature verified against the data-space CA"
        if opened.sender
        else "its signature not checked: give --ca"
    )
    click.echo(
        f"agreement {header.get('agreementId')} of provider {header.get('provider')}, "
        f"sent by {header.get('sender')} ({checked})"
    )
    if header.get("nextPolicy") is not None:
        click.echo("next policy (the data is received under it):")
        click.echo(json.dumps(header["nextPolicy"], indent=2))
        if header.get("nextPolicyNote"):
            click.echo(f"note: {header['nextPolicyNote']}")
    else:
        click.echo("no next policy attached")


def _path_id(value: str) -> str:
    """An id as one URL path segment (ids may hold ``/``, ``:``, ``#``, ...)."""
    import urllib.parse

    return urllib.parse.quote(value, safe="")


def _fact_line(f: dict[str, Any]) -> str:
    until = f" (until {f['until']})" if f.get("until") else ""
    return f"{f['name']} = {', '.join(str(v) for v in f['values'])}{until}"


@click.group(name="facts")
def facts() -> None:
    """Facts this connector holds and states itself (provider-side state such as idsc:STATE,
    active events as odrl:event), tested by policies at every enforcement point."""


@facts.command(name="set")
@click.argument("name")
@click.argument("values", nargs=-1, required=True)
@_api_options
@click.option("--until", help="When the fact expires (RFC 3339, e.g. 2027-01-01T00:00:00Z).")
@click.option("--json", "as_json", is_flag=True, help="Print the fact as JSON.")
def facts_set(
    name: str,
    values: tuple[str, ...],
    config: str | None,
    api: str | None,
    api_key: str | None,
    until: str | None,
    as_json: bool,
) -> None:
    """Set fact NAME (an operand: idsc:STATE, odrl:event, ...) to VALUES (IRIs, CURIEs or
    literals), replacing what it held."""
    body: dict[str, Any] = {"values": list(values)}
    if until:
        body["until"] = until
    f = _api(config, api, api_key).call("PUT", f"/api/facts/{_path_id(name)}", body)
    if as_json:
        _print(f)
    else:
        click.echo(_fact_line(f))


@facts.command(name="unset")
@click.argument("name")
@_api_options
def facts_unset(name: str, config: str | None, api: str | None, api_key: str | None) -> None:
    """Unset fact NAME."""
    _api(config, api, api_key).call("DELETE", f"/api/facts/{_path_id(name)}")
    click.echo(f"unset {name}")


@facts.command(name="list")
@_api_options
@click.option("--json", "as_json", is_flag=True, help="Print the facts as JSON.")
def facts_list(config: str | None, api: str | None, api_key: str | None, as_json: bool) -> None:
    """The facts held now (expired ones are absent)."""
    rows = _api(config, api, api_key).call("GET", "/api/facts")
    if as_json:
        _print(rows)
        return
    for f in rows:
        click.echo(_fact_line(f))


@click.group(name="payment")
def payment() -> None:
    """Payments this provider received under its agreements (they fulfil compensate duties)."""


@payment.command(name="record")
@_api_options
@click.option("--agreement", "agreement_id", required=True, help="The agreement paid under.")
@click.option("--amount", required=True, help="The exact amount (a decimal number).")
@click.option("--currency", required=True, help="An ISO 4217 code (EUR, USD, ...) or an IRI.")
@click.option("--paid-at", help="When it was paid (RFC 3339; default: now).")
@click.option("--reference", help="The payment's reference (an invoice or transaction number).")
def payment_record(
    config: str | None,
    api: str | None,
    api_key: str | None,
    agreement_id: str,
    amount: str,
    currency: str,
    paid_at: str | None,
    reference: str | None,
) -> None:
    """Record a payment received under an agreement of this provider."""
    body = {
        k: v
        for k, v in {
            "agreement": agreement_id,
            "amount": amount,
            "currency": currency,
            "paidAt": paid_at,
            "reference": reference,
        }.items()
        if v is not None
    }
    _print(_api(config, api, api_key).call("POST", "/api/payments", body))


@payment.command(name="list")
@_api_options
@click.option("--agreement", "agreement_id", help="Only this agreement's payments.")
@click.option("--json", "as_json", is_flag=True, help="Print the payments as JSON.")
def payment_list(
    config: str | None, api: str | None, api_key: str | None, agreement_id: str | None, as_json: bool
) -> None:
    """Payments received, oldest first."""
    import urllib.parse

    query = {"limit": "500", **({"agreement": agreement_id} if agreement_id else {})}
    rows = _api(config, api, api_key).call("GET", "/api/payments?" + urllib.parse.urlencode(query))
    if as_json:
        _print(rows)
        return
    for p in rows:
        ref = f" ref {p['reference']}" if p.get("reference") else ""
        click.echo(f"{p['paidAt']}  {p['amount']} {p['currency']}  {p['agreementId']}{ref}")


@click.group(name="agreement")
def agreement() -> None:
    """Agreements of this connector: show them, and retire one (provider)."""


resource_commands(
    agreement,
    path="/api/agreements",
    noun="agreement",
    show=False,
    columns=[
        ("ID", lambda r: r["id"]),
        ("STATUS", lambda r: r.get("status")),
        ("TARGET", lambda r: r.get("target")),
        ("PROVIDER", lambda r: r.get("providerId")),
        ("CONSUMER", lambda r: r.get("consumerId")),
        ("SIGNED", lambda r: r.get("signedAt")),
    ],
)


@agreement.command(name="show")
@click.argument("agreement_id")
@_api_options
def agreement_show(agreement_id: str, config: str | None, api: str | None, api_key: str | None) -> None:
    """One agreement, with its status (active, retired, expired)."""
    _print(_api(config, api, api_key).call("GET", f"/api/agreements/{_path_id(agreement_id)}"))


@agreement.command(name="retire")
@click.argument("agreement_id")
@_api_options
@click.option("--reason", required=True, help="Why (told to the consumer, kept in the logs).")
def agreement_retire(
    agreement_id: str, config: str | None, api: str | None, api_key: str | None, reason: str
) -> None:
    """Retire AGREEMENT_ID: its running transfers are terminated, new ones refused."""
    a = _api(config, api, api_key).call(
        "POST", f"/api/agreements/{_path_id(agreement_id)}/retire", {"reason": reason}
    )
    click.echo(f"{a['status']}: agreement {a['id']} ({a['retiredReason']})")
