"""File assets confined to the data roots (issue 9: a consumer pulled the provider's own
``participant.key``, ``/etc/shadow`` and ``/proc/self/environ``, each with 200; a NUL byte in a
path gave 500).

Creating a file asset outside the roots is a 400 that names them; at every serve the data plane
checks again (the file may have been swapped for a symlink) and refuses with a 4xx and a reason,
never a 500; nothing outside a root, and no key, store file or audit log, is ever served."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from assets_testlib import pull, start_transfer

from connector import assets
from connector.assets import (
    NO_ROOTS_HINT,
    BadPath,
    DataRoots,
    NotARegularFile,
    OutsideRoots,
    PathChanged,
    PathRefused,
    ProtectedPath,
    RootRefused,
)
from connector.config import ConfigError, load_config
from connector.odrl.templates import fill
from connector.store import AssetRow, OfferRow, PolicyRow, Store

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dataspace_testlib import Connector, DataSpace, offer_asset, wait_final

from connector.devspace import asset_file

SECRET = b"-----BEGIN PRIVATE KEY----- not for anyone\n"


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    """A data root, a participant directory with a key, a store outside both, a secret."""
    root, participant, outside = tmp_path / "data", tmp_path / "participant", tmp_path / "outside"
    for d in (root, participant, outside, root / "sub"):
        d.mkdir()
    (participant / "participant.key").write_bytes(SECRET)
    (outside / "secret.txt").write_bytes(SECRET)
    (tmp_path / "store.db").write_bytes(SECRET)
    (root / "ok.txt").write_bytes(b"ok\n")
    (root / "sub" / "inner.txt").write_bytes(b"inner\n")
    return {
        "root": root,
        "participant": participant,
        "outside": outside,
        "store": tmp_path / "store.db",
        "tmp": tmp_path,
    }


def roots_of(layout: dict[str, Path]) -> DataRoots:
    return DataRoots.build(
        [layout["root"]],
        protected_dirs={"the participant directory": layout["participant"]},
        protected_files={"the store": layout["store"]},
    )


def refusal(roots: DataRoots, path: str) -> type[PathRefused]:
    with pytest.raises(PathRefused) as caught:
        roots.admit(path)
    return type(caught.value)


# --------------------------------------------------------------------------- creation


def test_traversal_and_outside_paths_are_refused_naming_the_roots(layout: dict[str, Path]) -> None:
    roots = roots_of(layout)
    root = str(layout["root"])
    for path in (
        f"{root}/../outside/secret.txt",
        f"{root}/sub/../../outside/secret.txt",
        f"{root}/./sub/../../participant/participant.key",
        "/etc/shadow",
        "//etc/passwd",
        f"//{layout['outside']}/secret.txt",
        f"{root}/..",
        f"{root}-x/a",
    ):
        with pytest.raises(PathRefused) as caught:
            roots.admit(path)
        assert isinstance(caught.value, OutsideRoots | ProtectedPath), path
        assert root not in caught.value.reason  # the reason a consumer may see: no paths
        if isinstance(caught.value, OutsideRoots):
            assert root in str(caught.value)  # the operator's message names the roots
    for path in ("/proc/self/environ", "/sys/kernel/notes", "/dev/zero"):
        assert refusal(roots, path) is ProtectedPath
    assert refusal(roots, str(layout["participant"] / "participant.key")) is ProtectedPath
    assert refusal(roots, str(layout["store"])) is ProtectedPath


def test_malformed_paths_are_refused(layout: dict[str, Path]) -> None:
    roots = roots_of(layout)
    for path in ("ok.txt", "../outside/secret.txt", "", f"{layout['root']}/ok\x00.txt", "/" + "a" * 5000):
        assert refusal(roots, path) is BadPath, path
    assert refusal(roots, str(layout["root"])) is NotARegularFile
    assert refusal(roots, str(layout["root"] / "sub")) is NotARegularFile
    assert refusal(roots, str(layout["root"] / "ok.txt" / "x")) is PathRefused  # cannot be read
    with pytest.raises(NotADirectoryError):
        roots.open(str(layout["root"] / "ok.txt" / "x"))
    fifo = layout["root"] / "pipe"
    os.mkfifo(fifo)
    assert refusal(roots, str(fifo)) is NotARegularFile  # and it did not hang opening it


def test_encoded_forms_are_names_not_traversals(layout: dict[str, Path]) -> None:
    """Nothing decodes a path: %2e%2e is a folder called %2e%2e inside the root."""
    roots = roots_of(layout)
    path = f"{layout['root']}/%2e%2e/outside/secret.txt"
    assert roots.admit(path) == path  # inside the root, just not there (yet)
    with pytest.raises(FileNotFoundError):
        roots.open(path)


def test_files_and_symlinks_inside_the_root_are_admitted(layout: dict[str, Path]) -> None:
    roots = roots_of(layout)
    link = layout["root"] / "link.txt"
    link.symlink_to(layout["root"] / "sub" / "inner.txt")
    for path in (layout["root"] / "ok.txt", link, layout["root"] / "sub" / ".." / "ok.txt"):
        assert roots.admit(str(path)) == str(path)
    fd = roots.open(str(link))
    try:
        assert os.read(fd, 100) == b"inner\n"
    finally:
        os.close(fd)


def test_symlinks_and_links_out_of_the_root_are_refused(layout: dict[str, Path]) -> None:
    roots = roots_of(layout)
    root = layout["root"]
    (root / "to-secret").symlink_to(layout["outside"] / "secret.txt")
    (root / "to-key").symlink_to(layout["participant"] / "participant.key")
    (root / "to-environ").symlink_to("/proc/self/environ")
    (root / "to-outside-dir").symlink_to(layout["outside"])
    (root / "relative").symlink_to("../outside/secret.txt")
    os.link(layout["participant"] / "participant.key", root / "hardlink-to-key")
    assert refusal(roots, str(root / "to-secret")) is OutsideRoots
    assert refusal(roots, str(root / "relative")) is OutsideRoots
    assert refusal(roots, str(root / "to-outside-dir" / "secret.txt")) is OutsideRoots
    assert refusal(roots, str(root / "to-key")) is ProtectedPath
    assert refusal(roots, str(root / "to-environ")) is ProtectedPath
    assert refusal(roots, str(root / "hardlink-to-key")) is ProtectedPath


def test_a_file_replaced_by_a_symlink_after_creation_is_refused_at_serve(layout: dict[str, Path]) -> None:
    roots = roots_of(layout)
    path = layout["root"] / "sub" / "inner.txt"
    assert roots.admit(str(path)) == str(path)
    path.unlink()
    path.symlink_to(layout["participant"] / "participant.key")
    with pytest.raises(ProtectedPath):
        roots.open(str(path))
    path.unlink()
    path.symlink_to(layout["outside"] / "secret.txt")
    with pytest.raises(OutsideRoots):
        roots.open(str(path))
    # the folder on the way swapped for a symlink out of the root
    os.rename(layout["root"] / "sub", layout["root"] / "sub-old")
    (layout["root"] / "sub").symlink_to(layout["outside"])
    with pytest.raises(OutsideRoots):
        roots.open(str(layout["root"] / "sub" / "secret.txt"))


@pytest.mark.parametrize("swap", ["file", "folder"])
def test_a_symlink_swapped_in_between_resolution_and_open_is_not_followed(
    layout: dict[str, Path], monkeypatch: pytest.MonkeyPatch, swap: str
) -> None:
    """The race itself: the path resolves inside the root, then (before the open) the file or
    a folder on its way becomes a symlink out of the root. The open must not follow it."""
    roots = roots_of(layout)
    resolve = os.path.realpath
    target = layout["root"] / "sub" / "inner.txt"

    def resolve_then_swap(path: str) -> str:
        real = resolve(path)
        if swap == "file":
            target.unlink()
            target.symlink_to(layout["outside"] / "secret.txt")
        else:
            os.rename(layout["root"] / "sub", layout["root"] / "sub-old")
            (layout["root"] / "sub").symlink_to(layout["outside"])
            (layout["outside"] / "inner.txt").write_bytes(SECRET)
        return real

    monkeypatch.setattr(assets.os.path, "realpath", resolve_then_swap)
    with pytest.raises(PathChanged):
        roots.open(str(target))


# --------------------------------------------------------------------------- configuration


def write_config(tmp: Path, roots: list[str], *, store: str | None = None) -> Path:
    (tmp / "participant").mkdir(exist_ok=True)
    config = tmp / "connector.toml"
    config.write_text(f"""
[connector]
participant_dir = "participant"
authority_url = "http://127.0.0.1:1"
public_url = "http://127.0.0.1:2"
[dsp]
plain_http = true
[management]
api_key = "{"k" * 20}"
[store]
{f'url = "{store}"' if store else ""}
[assets]
roots = {json.dumps(roots)}
""")
    return config


@pytest.mark.parametrize(
    ("roots", "store", "expected"),
    [
        (["."], None, "the participant directory"),  # contains it
        (["participant"], None, "the participant directory"),  # is it
        (["participant/data"], None, "the participant directory"),  # inside it
        (["shared"], "sqlite:///shared/store.db", "the store"),
        (["/"], None, "whole file system"),
        (["/proc"], None, "/proc"),
        (["/dev/shm"], None, "/dev"),
        (["missing"], None, "not an existing directory"),
    ],
)
def test_roots_that_would_expose_secrets_are_refused_at_load(
    tmp_path: Path, roots: list[str], store: str | None, expected: str
) -> None:
    (tmp_path / "participant" / "data").mkdir(parents=True)
    (tmp_path / "shared").mkdir()
    with pytest.raises(ConfigError) as caught:
        load_config(write_config(tmp_path, roots, store=store))
    assert "assets.roots" in str(caught.value) and expected in str(caught.value)


def test_a_root_containing_the_config_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "participant").mkdir()
    config = write_config(tmp_path, [])
    moved = tmp_path / "conf" / "connector.toml"
    moved.write_text(
        config.read_text()
        .replace('"participant"', f'"{tmp_path}/participant"')
        .replace("roots = []", 'roots = ["."]')
    )
    with pytest.raises(ConfigError, match="the config file"):
        load_config(moved)


def test_roots_resolve_beside_the_config_and_default_to_none(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.csv").write_text("a\n")
    config = load_config(write_config(tmp_path, ["data"]))
    assert config.data_roots().roots == (str((tmp_path / "data").resolve()),)
    assert config.data_roots().admit(str(tmp_path / "data" / "a.csv"))
    none = load_config(write_config(tmp_path, []))
    with pytest.raises(OutsideRoots) as caught:
        none.data_roots().admit(str(tmp_path / "data" / "a.csv"))
    assert NO_ROOTS_HINT in str(caught.value)


def test_build_refuses_relative_roots() -> None:
    with pytest.raises(RootRefused):
        DataRoots.build([Path("data")])


# --------------------------------------------------------------------------- real processes


BEHIND_THE_API = (
    "key",
    "shadow",
    "environ",
    "store",
    "audit",
    "nul",
    "relative",
    "link-key",
    "link-shadow",
    "dotdot",
)


async def _seed_behind_the_api(provider: Connector) -> None:
    """File assets as they could be stored before the fix (or written into the store
    directly), each pointing where no file asset may: one offer lists them all."""
    data = provider.data_dir
    (data / "to-key").symlink_to(provider.directory / "participant.key")
    (data / "to-shadow").symlink_to("/etc/shadow")
    paths = {
        "key": str(provider.directory / "participant.key"),
        "shadow": "/etc/shadow",
        "environ": "/proc/self/environ",
        "store": str(provider.directory / "connector.db"),
        "audit": str(provider.directory / f"audit-{provider.name}.log"),
        "nul": f"{data}/a\x00b",
        "relative": "participant.key",
        "link-key": str(data / "to-key"),
        "link-shadow": str(data / "to-shadow"),
        "dotdot": f"{data}/../{provider.directory.name}/participant.key",
    }
    assert set(paths) == set(BEHIND_THE_API)
    store = await Store.open(f"sqlite:///{provider.directory / 'connector.db'}")
    try:
        await store.migrate()
        now = datetime.now(UTC)
        doc = fill("allow-usage", {}, policy_id="urn:policy:open")
        async with store.transaction() as tx:
            await tx.policies.add(PolicyRow(id="urn:policy:open", body=json.dumps(doc), created_at=now))
            for name, path in paths.items():
                await tx.assets.add(
                    AssetRow(
                        id=f"urn:asset:{name}", created_at=now, data_address={"type": "file", "path": path}
                    )
                )
            await tx.offers.add(
                OfferRow(
                    id="urn:offer:old",
                    access_policy_id="urn:policy:open",
                    contract_policy_id="urn:policy:open",
                    created_at=now,
                    asset_selector={"assetIds": [f"urn:asset:{n}" for n in paths]},
                )
            )
    finally:
        await store.close()


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Connector, Connector]]:
    ds = DataSpace(tmp_path_factory.mktemp("paths"), tls=False)
    try:
        provider = ds.connector("pprov", roles=("provider",), start=False)
        asyncio.run(_seed_behind_the_api(provider))
        provider.start()
        yield provider, ds.connector("pcons", roles=("consumer",))
    finally:
        ds.close()


def _error(body: bytes) -> str:
    return str(json.loads(body)["error"])


def negotiate_all(consumer: Connector, provider: Connector, offers: list[str]) -> list[str]:
    """Negotiate several offers at once; their agreement ids."""
    started = []
    for offer in offers:
        status, n = consumer.api("POST", "/api/negotiations", {"peerUrl": provider.dsp_url, "offerId": offer})
        assert status == 201, n
        started.append(n["id"])
    finals = [wait_final(consumer, nid) for nid in started]
    assert all(n["state"] == "FINALIZED" for n in finals), finals
    return [n["agreementId"] for n in finals]


@pytest.mark.integration
def test_the_api_refuses_files_outside_the_roots(pair: tuple[Connector, Connector]) -> None:
    provider, _ = pair
    before = provider.api("GET", "/api/assets?limit=500")[1]
    for path in (
        str(provider.directory / "participant.key"),
        "/etc/shadow",
        "/proc/self/environ",
        str(provider.directory / "connector.db"),
        f"{provider.data_dir}/../{provider.directory.name}/participant.key",
    ):
        status, err = provider.api(
            "POST", "/api/assets", {"id": "urn:asset:x", "dataAddress": {"type": "file", "path": path}}
        )
        assert status == 400, (path, err)
        assert "never served" in err["error"] or str(provider.data_dir) in err["error"], err
    status, err = provider.api(
        "POST",
        "/api/assets",
        {"id": "urn:asset:x", "dataAddress": {"type": "file", "path": f"{provider.data_dir}/a\x00b"}},
    )
    assert status == 400 and "NUL" in str(err), err
    status, err = provider.api(
        "POST", "/api/assets", {"id": "urn:asset:x", "dataAddress": {"type": "file", "path": "relative.csv"}}
    )
    assert status == 400 and "absolute" in str(err), err
    assert provider.api("GET", "/api/assets?limit=500")[1] == before


@pytest.mark.integration
def test_the_data_plane_never_serves_outside_the_roots(pair: tuple[Connector, Connector]) -> None:
    provider, consumer = pair
    key = (provider.directory / "participant.key").read_bytes()
    agreements = negotiate_all(
        consumer, provider, [f"urn:offer:old:urn:asset:{name}" for name in BEHIND_THE_API]
    )
    transfers = [start_transfer(consumer, a) for a in agreements]
    for name, t in zip(BEHIND_THE_API, transfers, strict=True):
        status, body = pull(consumer, t)
        assert status == 403, (name, status, body[:200])
        assert key not in body and b"root:" not in body
        reason = _error(body)
        assert reason and str(provider.data_dir) not in reason
        assert str(provider.directory) not in reason, reason


@pytest.mark.integration
def test_a_served_file_swapped_for_a_symlink_is_refused_then_served_again(
    pair: tuple[Connector, Connector],
) -> None:
    provider, consumer = pair
    big = b"x" * (1 << 17)  # over the small-file cache: every request opens the file
    contents = {"urn:asset:big": big, "urn:asset:small": b"small\n"}
    offers = [
        offer_asset(
            provider, asset_id=asset_id, content=content, contract={"template": "allow-usage", "params": {}}
        )
        for asset_id, content in contents.items()
    ]
    agreements = negotiate_all(consumer, provider, offers)
    key = (provider.directory / "participant.key").read_bytes()
    for (asset_id, content), agreement in zip(contents.items(), agreements, strict=True):
        t = start_transfer(consumer, agreement)
        assert pull(consumer, t) == (200, content)
        path = asset_file(provider, asset_id)
        os.rename(path, path.with_suffix(".old"))
        path.symlink_to(provider.directory / "participant.key")
        # a small file may be served from memory (its old, legitimate bytes) until the cache
        # looks at it again, at most a second later; never the key
        deadline = time.monotonic() + 15
        while True:
            status, body = pull(consumer, t)
            assert key not in body
            if status != 200 or time.monotonic() > deadline:
                break
            assert body == content
        assert status == 403 and "never served" in _error(body), body
        path.unlink()
        os.rename(path.with_suffix(".old"), path)
        assert pull(consumer, t) == (200, content)
        path.unlink()  # gone from disk: a 404 with a reason
        deadline = time.monotonic() + 15
        while (status := pull(consumer, t)[0]) == 200 and time.monotonic() < deadline:
            pass
        assert status == 404
