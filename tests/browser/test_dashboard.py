"""The sandbox's dashboard in a real Chromium: it shows what the emulator received and sent, it
steers the emulator, it never shows a full card number, and other sites cannot steer it.

Each step saves a screenshot to the artifacts directory (see conftest.py).
"""

import csv
import json
import re

import pytest
from conftest import ROOT, wait_until

expect = pytest.importorskip("playwright.sync_api").expect

CARDS = ROOT / "examples" / "cards.csv"
ISSUER_CARD = "4111111111111111"
# A card that is not a documented test card: its result comes from the issuer side.
ISSUER_CARD_BATCH = "id,card,exp\nheld-1,4111111111111111,12/29\n"


def luhn_ok(digits):
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d)
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def replacement(card):
    """The new number the emulator gives a reissued card (cardsync_sandbox::replacement_card):
    the first six digits kept, the others but the last moved up by one, a new check digit."""
    body = card[:6] + "".join(str((int(d) + 1) % 10) for d in card[6:-1])
    return next(body + d for d in "0123456789" if luhn_ok(body + d))


def full_card_numbers(text):
    """Runs of 13 to 19 digits standing alone (not inside a hexadecimal id or token, where a run
    of digits that happens to pass the Luhn check is chance) that pass the Luhn check: what a
    leaked card number looks like."""
    return [m for m in re.findall(r"(?<![0-9A-Za-z])\d{13,19}(?![0-9A-Za-z])", text) if luhn_ok(m)]


def test_the_leak_check_finds_card_numbers_and_not_ids():
    text = 'id="b_9f85674362433443a" {"card":"4111111111111111"} 445701******1115 1764633600000'
    assert full_card_numbers(text) == ["4111111111111111"]
    assert full_card_numbers("<td>4457010000000009</td>") == ["4457010000000009"]


class Steps:
    def __init__(self, page, artifacts, name):
        self.page, self.artifacts, self.name, self.n = page, artifacts, name, 0

    def shot(self, what):
        self.n += 1
        self.page.screenshot(path=str(self.artifacts / f"{self.name}-{self.n:02}-{what}.png"), full_page=True)


def press(page, selector):
    """Presses a control with the keyboard only: focus, then Enter."""
    page.focus(selector)
    page.keyboard.press("Enter")


def test_batch_webhook_faults_and_issuer_events_in_the_browser(sandbox, listener, new_context, artifacts, tmp_path):
    context = new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    # Every response the page gets, kept as it arrives.
    fetched = {}

    def keep(route):
        try:
            response = route.fetch()
        except Exception:
            # The sandbox is gone (the test is ending): the page's poll fails as it would.
            route.abort()
            return
        fetched.setdefault(route.request.url, []).append(response.text())
        route.fulfill(response=response)

    page.route("**/*", keep)
    steps = Steps(page, artifacts, "dashboard")

    page.goto(sandbox.dashboard_url)
    expect(page.get_by_role("heading", name="CardSync sandbox")).to_be_visible()
    expect(page.locator("#live")).to_contain_text("Live")
    expect(page.locator("#batches-body")).to_contain_text("No batch yet")
    expect(page.locator("#merchants-body")).to_contain_text("sandbox_merchant")
    steps.shot("empty")

    # A batch submitted from the command line appears as pending.
    # The webhook URL's secret path segment (as `cardsync listen` makes) is never shown.
    secret = "k3Qz8wYVn1TtB0aXc9sJ"
    sandbox.cli("webhooks", "set", "--batch-available", f"{listener.url}/hooks/{secret}")
    expect(page.locator("#merchants-body")).to_contain_text(listener.url + "/hooks/…")
    submitted = [json.loads(l) for l in sandbox.cli("--output", "json", "submit", str(CARDS)).stdout.splitlines()]
    batch_id = next(s["batch_id"] for s in submitted if s["route"] == "batch")
    row = page.locator(f'#batches-body tr[data-batch="{batch_id}"]')
    expect(row.locator(".badge")).to_have_text("pending")
    expect(row).to_contain_text("visa 6")
    expect(page.locator("#amex-body")).to_contain_text("1234567890")
    steps.shot("pending")

    # "Advance", with the keyboard: the batch completes, with its results (masked), and its
    # webhook is delivered to the test listener, whose answer shows.
    press(page, '[data-advance="60"]')
    expect(page.locator("#steer-result")).to_have_text("Clock advanced by 60 s.")
    expect(row.locator(".badge")).to_have_text("completed", timeout=10_000)
    press(page, f'summary[data-key="batch-summary-{batch_id}"]')
    results = page.locator(f'tr[data-results="{batch_id}"] details table')
    expect(results).to_be_visible()
    expect(results).to_contain_text("updated_card")
    expect(results).to_contain_text("445701******1115")
    delivery = page.locator("#deliveries-body tr[data-delivery]").first
    expect(delivery.locator(".badge")).to_have_text("delivered", timeout=10_000)
    expect(delivery).to_contain_text("answered 200")
    expect(delivery).to_contain_text(listener.url + "/hooks/…")
    assert any(r.get("batch_id") == batch_id for r in listener.received)
    expect(page.locator("#counters-body")).to_contain_text("Every card arrived once.")
    steps.shot("completed")

    # A 503 injected from the page: the command line's status request fails once, is retried,
    # and both attempts show in the request log.
    page.select_option("#fault-status", "503")
    page.fill("#fault-rate", "1")
    page.fill("#fault-limit", "1")
    page.fill("#fault-paths", "/v2/batch")
    press(page, "#faults-set")
    expect(page.locator("#faults-now")).to_contain_text("status 503")
    sandbox.cli("status", batch_id)
    requests = page.locator("#requests-body")
    failed = requests.locator("tr", has_text="injected: error status before handling")
    expect(failed).to_have_count(1)
    expect(failed).to_contain_text("503")
    expect(failed).to_contain_text("GET/v2/batch")
    retried = requests.locator("tr", has_text="GET/v2/batch").filter(has_not_text="injected")
    expect(retried).to_have_count(1)
    expect(retried).to_contain_text("200")
    expect(page.locator("#faults-now")).to_contain_text("1 so far")
    steps.shot("fault-and-retry")
    press(page, "#faults-clear")
    expect(page.locator("#faults-now")).to_have_text("No fault injected.")

    # A webhook delivery that fails once: the failed attempt and its retry.
    listener.statuses.append(503)
    second = tmp_path / "second.csv"
    second.write_text("id,card,exp\nsecond-1,4457010000000009,01/50\n")
    second_id = json.loads(sandbox.cli("--output", "json", "submit", str(second)).stdout.splitlines()[0])["batch_id"]
    page.fill("#advance-seconds", "45")
    page.press("#advance-seconds", "Enter")
    expect(page.locator(f'#batches-body tr[data-batch="{second_id}"] .badge')).to_have_text("completed", timeout=10_000)
    retried_delivery = page.locator("#deliveries-body tr[data-delivery]").first
    expect(retried_delivery).to_contain_text("answered 503", timeout=10_000)
    expect(retried_delivery).to_contain_text("answered 200", timeout=10_000)
    expect(retried_delivery.locator(".badge")).to_have_text("delivered")
    steps.shot("webhook-retry")

    # The issuer side: register a card, terminate it as lost, and see what merchants get.
    page.fill("#issuer-card", ISSUER_CARD)
    page.fill("#issuer-exp", "12/29")
    page.press("#issuer-exp", "Enter")
    expect(page.locator("#steer-result")).to_contain_text("Registered 411111…1111")
    card_row = page.locator("#issuer-body tr[data-card]").first
    expect(card_row).to_contain_text("411111******1111")
    expect(card_row.locator(".badge")).to_have_text("ACTIVE")
    expect(card_row).to_contain_text("nothing")
    card_id = card_row.get_attribute("data-card")
    page.select_option(f'select[data-key="status-{card_id}"]', "SUSPENDED")
    page.select_option(f'select[data-key="reason-{card_id}"]', "SUS")
    press(page, f'button[data-key="apply-{card_id}"]')
    expect(card_row.locator(".badge")).to_have_text("SUSPENDED")
    expect(card_row).to_contain_text("nothing")
    page.select_option(f'select[data-key="status-{card_id}"]', "TERMINATED")
    page.select_option(f'select[data-key="reason-{card_id}"]', "LOS")
    press(page, f'button[data-key="apply-{card_id}"]')
    expect(card_row.locator(".badge")).to_have_text("TERMINATED")
    expect(card_row).to_contain_text("LOS — Card reported lost")
    expect(card_row).to_contain_text("updated_card")
    expect(page.locator("#issuer-body tr[data-card]")).to_have_count(2)
    expect(page.locator(f'#issuer-body tr:has-text("from {card_id}") .badge')).to_have_text("ACTIVE")
    steps.shot("issuer-terminated")

    # A merchant holding the card now gets its new number.
    held = tmp_path / "held.csv"
    held.write_text(ISSUER_CARD_BATCH)
    held_id = json.loads(sandbox.cli("--output", "json", "submit", str(held)).stdout.splitlines()[0])["batch_id"]
    press(page, '[data-advance="60"]')
    held_row = page.locator(f'#batches-body tr[data-batch="{held_id}"]')
    expect(held_row.locator(".badge")).to_have_text("completed", timeout=10_000)
    held_results = page.locator(f'tr[data-results="{held_id}"]')
    expect(held_results).to_contain_text("updated_card 1")
    press(page, f'summary[data-key="batch-summary-{held_id}"]')
    expect(held_results.locator("table")).to_contain_text("held-1")
    expect(held_results.locator("table")).to_contain_text("411111******" + replacement(ISSUER_CARD)[-4:])
    steps.shot("merchant-outcome")

    # The page's own requests need its token: without it, a steering request is refused.
    refused = page.evaluate(
        """async () => (await fetch('/_sandbox/clock/advance',
             {method: 'POST', headers: {'content-type': 'application/json'}, body: '{"seconds": 5}'})).status"""
    )
    assert refused == 403

    # No full card number anywhere: in the page's text, in its inputs, or in anything it fetched.
    known = {row["card"] for row in csv.DictReader(CARDS.open())} | {ISSUER_CARD}
    known |= {replacement(card) for card in known}
    texts = {"page text": page.inner_text("body"), "page HTML": page.content()}
    for url, bodies in fetched.items():
        for i, body in enumerate(bodies):
            texts[f"{url} (#{i + 1})"] = body
    assert any("/_sandbox/overview" in url for url in texts)
    for where, text in texts.items():
        leaked = [pan for pan in known if pan in text] + full_card_numbers(text)
        assert not leaked, f"full card numbers in {where}"
        assert secret not in text, f"the webhook URL's secret in {where}"


def test_other_sites_cannot_steer_the_sandbox(sandbox, listener, new_context, artifacts):
    context = new_context()
    page = context.new_page()
    # Another site (another origin: the listener's port) tries a simple cross-site request and
    # a form post, which browsers send without asking the target.
    page.goto(listener.url + "/")
    before = sandbox.get("/_sandbox/clock")["advanced_ms"]
    page.evaluate(
        """async (base) => {
             try {
               await fetch(base + '/_sandbox/clock/advance', {method: 'POST', mode: 'no-cors',
                 headers: {'content-type': 'text/plain'}, body: '{"seconds": 3600}'});
             } catch (e) {}
           }""",
        sandbox.base_url,
    )
    # Reading the dashboard's page (and its token) from there is not allowed either.
    read = page.evaluate(
        """async (url) => { try { await (await fetch(url)).text(); return 'read'; }
                            catch (e) { return 'blocked'; } }""",
        sandbox.dashboard_url,
    )
    assert read == "blocked"
    # A text/plain form whose body is JSON the faults endpoint would take:
    # {"error_rate": 1, "statuses": [503], "paths": ["="]}
    page.set_content(
        '<form method="post" enctype="text/plain" action="' + sandbox.base_url + '/_sandbox/faults">'
        + """<input name='{"error_rate": 1, "statuses": [503], "paths": ["' value='"]}'></form>"""
    )
    with page.expect_navigation():
        page.evaluate("document.forms[0].submit()")
    page.screenshot(path=str(artifacts / "cross-site-refused.png"))
    assert "dashboard's token" in page.inner_text("body")
    # Neither went through.
    wait_until(lambda: sandbox.get("/_sandbox/clock"), "the sandbox")
    assert sandbox.get("/_sandbox/clock")["advanced_ms"] == before
    assert sandbox.get("/_sandbox/faults")["faults"]["error_rate"] == 0


def test_the_page_fits_a_narrow_window_and_works_from_the_keyboard(sandbox, new_context, artifacts):
    context = new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.goto(sandbox.dashboard_url)
    expect(page.locator("#live")).to_contain_text("Live")
    # Nothing wider than the window: no sideways scrolling of the page itself.
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page is {width} px wide in a 390 px window"
    # The skip link comes first, and Tab reaches the steering controls.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to the dashboard"
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.dataset.advance") == "60":
            break
    else:
        raise AssertionError("Tab never reached the +1 min button")
    page.keyboard.press("Enter")
    expect(page.locator("#clock-advanced")).to_contain_text("advanced by 60 s")
    page.screenshot(path=str(artifacts / "narrow.png"), full_page=True)
