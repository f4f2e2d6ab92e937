"""The dashboards in a real browser: headless Chromium (Debian's ``chromium`` package, never a
downloaded one) driven by Playwright against a real data space (authority, provider, consumer
as processes over mutual TLS). The provider offers a file under a template, the consumer finds
it in the provider's catalog, negotiates with one click, pulls, and sees its next pull denied
with the reason; a provider's 200 datasets all show on the catalog page; a consumer answers a
provider's offer with other terms and asks for a push into its vault, the provider retires the
agreement and the next push is refused with the reason; the authority's page lists the
participants. The screenshots README shows are taken here (docs/screenshots/)."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from connector.devspace import Connector, DataSpace, offer_asset
from connector.identity.store import AuthorityStore

pytestmark = pytest.mark.integration

CHROMIUM = os.environ.get("CONNECTOR_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
WAIT_MS = 60_000  # a negotiation or a pull over the loopback data space (polled, not timed)

if not Path(CHROMIUM).is_file():
    pytest.skip(
        f"no Chromium binary at {CHROMIUM} (Debian: apt-get install chromium; .ci/run installs it)",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        try:
            yield b
        finally:
            b.close()


def shot(page: Page, name: str, *, full_page: bool = True) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=full_page)


def logged_in(browser: Browser, c: Connector) -> Page:
    page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    page.goto(c.api_url + "/ui/")
    expect(page).to_have_url(re.compile(r"/ui/login$"))
    page.fill("input[name=secret]", "not the key")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("p.bad")).to_have_text("Wrong management API key.")
    page.fill("input[name=secret]", c.api_key)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("h1")).to_have_text("Assets & offers")
    assert c.api_key not in page.content()
    return page


def test_offer_negotiate_pull_and_the_denied_pull(space: DataSpace, browser: Browser) -> None:
    provider = space.connector("uiprov", roles=("provider",))
    consumer = space.connector("uicons", roles=("consumer",))
    data = provider.data_dir / "weather.csv"
    data.write_text("day,temp\n1,12\n2,14\n")

    # the provider: an asset from its file, an offer from the n-times template
    prov = logged_in(browser, provider)
    prov.fill("input[name=id]", "weather")
    prov.fill("input[name=title]", "Weather <observations>")
    prov.fill("input[name=keywords]", "weather, temperature")
    prov.fill("input[name=path]", str(data))
    prov.get_by_role("button", name="Add the asset").click()
    expect(prov.locator(".flash")).to_have_text("Asset urn:asset:weather added.")
    prov.select_option("select[name=template]", "n-times-usage")
    prov.get_by_role("button", name="Next: its parameters").click()
    prov.fill("input[name='param.max']", "1")
    prov.fill("input[name=id]", "weather-offer")
    prov.get_by_role("button", name="Create the offer").click()
    expect(prov.locator(".flash")).to_contain_text("Offer urn:offer:weather-offer created")
    expect(prov.locator("table").nth(1)).to_contain_text("at most 1 times")
    shot(prov, "provider-offers")

    # the consumer: the provider's catalog, negotiate with one click
    cons = logged_in(browser, consumer)
    cons.get_by_role("link", name="Peer catalog").click()
    cons.fill("input[name=peer]", provider.dsp_url)
    cons.get_by_role("button", name="Show its catalog").click()
    row = cons.locator("tbody tr", has_text="urn:asset:weather")
    expect(row).to_contain_text("Weather <observations>")
    expect(row).to_contain_text("weather, temperature")
    expect(row).to_contain_text("at most 1 times")
    shot(cons, "consumer-catalog")
    row.get_by_role("button", name="Negotiate").click()
    expect(cons.locator("h1")).to_contain_text("Negotiation")
    expect(cons.locator("table").first).to_contain_text("FINALIZED", timeout=WAIT_MS)
    expect(cons.locator("table").nth(1)).to_contain_text("negotiation", timeout=WAIT_MS)
    shot(cons, "consumer-negotiation")

    # pull once: allowed
    cons.get_by_role("link", name="Agreements").click()
    expect(cons.locator("tbody tr")).to_have_count(1)
    cons.get_by_role("button", name="Pull").click()
    expect(cons.locator("h1")).to_have_text("Transfers")
    first = cons.locator("tbody tr").first
    expect(first).to_contain_text("done", timeout=WAIT_MS)
    expect(first).to_contain_text("vault item")

    # pull again, past the limit of one use: denied, with the reason
    cons.get_by_role("link", name="Agreements").click()
    cons.get_by_role("button", name="Pull").click()
    expect(cons.locator("h1")).to_have_text("Transfers")
    denied = cons.locator("tbody tr").first
    expect(denied).to_contain_text("failed", timeout=WAIT_MS)
    expect(denied).to_contain_text(
        re.compile(r"denied: the provider's data plane answered 403: .*count: this would be use number 2")
    )
    shot(cons, "consumer-transfers")

    # the vault and its duties, the audit trail verified
    cons.get_by_role("link", name="Vault").click()
    expect(cons.locator("tbody tr")).to_have_count(1)
    cons.get_by_role("link", name="Audit trail").click()
    expect(cons.locator("main")).to_contain_text("Not verified since the connector started.")
    cons.get_by_role("button", name="Verify the chain now").click()
    expect(cons.locator("p.ok")).to_contain_text("chain intact")
    shot(cons, "consumer-audit", full_page=False)

    # the authority's page: participants, keys, revocations, behind its admin token
    admin = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    admin.goto(space.authority.url + "/ui/")
    admin.fill(
        "input[name=secret]", (space.authority.directory / AuthorityStore.ADMIN_TOKEN).read_text().strip()
    )
    admin.get_by_role("button", name="Log in").click()
    expect(admin.locator("h1")).to_have_text("Data space authority")
    expect(admin.locator("main")).to_contain_text(provider.participant_id)
    expect(admin.locator("main")).to_contain_text(consumer.participant_id)
    shot(admin, "authority")


def test_the_catalog_page_shows_all_200_datasets(space: DataSpace, browser: Browser) -> None:
    provider = space.connector("uibig", roles=("provider",))
    consumer = space.connector("uibigcons", roles=("consumer",))
    data = provider.data_dir / "item.csv"
    data.write_text("x\n1\n")
    for i in range(200):
        status, body = provider.api(
            "POST",
            "/api/assets",
            {
                "id": f"item-{i:03d}",
                "title": f"Item {i:03d}",
                "keywords": ["bulk"],
                "dataAddress": {"type": "file", "path": str(data)},
            },
        )
        assert status == 201, body
    status, policy = provider.api("POST", "/api/policies", {"template": "allow-usage"})
    assert status == 201, policy
    status, offer = provider.api(
        "POST",
        "/api/offers",
        {"allAssets": True, "accessPolicyId": policy["id"], "contractPolicyId": policy["id"]},
    )
    assert status == 201, offer

    cons = logged_in(browser, consumer)
    cons.goto(consumer.api_url + "/ui/catalog")
    cons.fill("input[name=peer]", provider.dsp_url)
    cons.get_by_role("button", name="Show its catalog").click()
    rows = cons.locator("tbody tr")
    expect(rows).to_have_count(200, timeout=WAIT_MS)
    expect(cons.locator("main")).to_contain_text("200 datasets")
    for i in (0, 49, 50, 199):  # across the provider's pages of 50
        expect(rows.filter(has_text=f"urn:asset:item-{i:03d}")).to_have_count(1)
    shot(cons, "consumer-catalog-200", full_page=False)


def test_answer_an_offer_push_and_retire(space: DataSpace, browser: Browser) -> None:
    """The consumer answers a provider's offer with other terms, asks for a push into its
    vault; the provider retires the agreement with its reason; the next push is refused with
    it."""
    provider = space.connector("uipush", roles=("provider",), counter_offers="offer")
    consumer = space.connector("uipushcons", roles=("consumer",))
    offer = offer_asset(
        provider,
        asset_id="urn:asset:readings",
        contract={"template": "n-times-usage", "params": {"max": "10"}},
        content=b"ts,reading\n1,7\n2,9\n",
        offer_id="urn:offer:readings",
    )

    # the consumer asks for looser terms; this provider answers with its own offer
    def at_most(n: int) -> dict[str, object]:
        rule = {"leftOperand": "count", "operator": "lteq", "rightOperand": n}
        return {"permission": [{"action": "use", "constraint": [rule]}]}

    status, n = consumer.api(
        "POST",
        "/api/negotiations",
        {
            "peerUrl": provider.dsp_url,
            "offerId": offer,
            "datasetId": "urn:asset:readings",
            "terms": at_most(50),
        },
    )
    assert status == 201, n

    # ... answered in the dashboard with stricter terms
    cons = logged_in(browser, consumer)
    cons.get_by_role("link", name="Negotiations").click()
    cons.get_by_role("link", name=n["id"]).click()
    send = cons.get_by_role("button", name="Send these terms")
    expect(send).to_be_visible(timeout=WAIT_MS)  # the page reloads until the provider's offer is in
    expect(cons.locator("table").first).to_contain_text("OFFERED")
    shot(cons, "consumer-counter-offer")
    cons.fill("textarea[name=terms]", "{not json")
    send.click()
    expect(cons.locator(".flash")).to_contain_text("the terms are not JSON")
    cons.fill("textarea[name=terms]", json.dumps(at_most(4)))
    cons.get_by_role("button", name="Send these terms").click()
    expect(cons.locator(".flash")).to_contain_text("other terms sent to the provider")
    expect(cons.locator("table").first).to_contain_text("FINALIZED", timeout=WAIT_MS)

    # a push into the vault
    cons.get_by_role("link", name="Agreements").click()
    agreement = cons.locator("tbody tr", has_text="urn:asset:readings")
    expect(agreement).to_contain_text("at most 4 times")
    agreement.get_by_role("button", name="Push").click()
    expect(cons.locator("h1")).to_have_text("Transfers")
    expect(cons.locator(".flash")).to_contain_text("a push asked of the provider")
    pushed = cons.locator("tbody tr").first
    expect(pushed).to_contain_text("HttpData-PUSH")
    expect(pushed).to_contain_text("COMPLETED", timeout=WAIT_MS)  # the page reloads meanwhile
    cons.get_by_role("link", name="Vault").click()
    expect(cons.locator("tbody tr")).to_have_count(1)

    # the provider retires the agreement, with a reason (shown as text, not markup)
    prov = logged_in(browser, provider)
    prov.get_by_role("link", name="Agreements").click()
    row = prov.locator("tbody tr", has_text="urn:asset:readings")
    shot(prov, "provider-agreements", full_page=False)
    row.get_by_role("button", name="Retire").click()  # no reason: the browser asks for one
    expect(prov.locator("h1")).to_have_text("Agreements")
    row.locator("input[name=reason]").fill("licence <withdrawn>")
    row.get_by_role("button", name="Retire").click()
    expect(prov.locator(".flash")).to_contain_text("retired: licence <withdrawn>")
    row = prov.locator("tbody tr", has_text="urn:asset:readings")
    expect(row).to_contain_text("retired")
    expect(row.get_by_role("button", name="Retire")).to_have_count(0)

    # the consumer's next push is refused by the provider, with the reason
    cons.get_by_role("link", name="Agreements").click()
    cons.locator("tbody tr", has_text="urn:asset:readings").get_by_role("button", name="Push").click()
    refused = cons.locator("tbody tr").first
    expect(refused).to_contain_text("TERMINATED", timeout=WAIT_MS)
    expect(refused).to_contain_text("retired: licence <withdrawn>")
