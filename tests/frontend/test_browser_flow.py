"""The Foundation flow in a real headless Chromium (Debian's, driven by Playwright): log in, add a server,
an application and a key (the secret shows once), revoke it, find every step in the audit log.
Screenshots of a failing run land in test-artifacts/."""

from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from tests import factories

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-quic", "--no-first-run"]  # fmt: skip

pytestmark = pytest.mark.browser


@pytest.fixture
def browser_page(request):
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        yield page
        if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
        browser.close()


def test_admin_flow_in_a_real_browser(transactional_db, live_server, request):
    factories.make_user("boss", "admin")
    base = f"http://127.0.0.1:{live_server.thread.port}"
    page = request.getfixturevalue("browser_page")
    page.goto(f"{base}/servers/")
    page.fill("#id_username", "boss")
    page.fill("#id_password", factories.PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_url(f"{base}/servers/")
    page.click("text=Add server")
    page.fill("#id_name", "school-origin")
    page.fill("#id_host", "192.0.2.10")
    page.fill("#id_stat_url", "http://192.0.2.10:8080/stat")
    page.click("main button[type=submit]")
    page.click("text=Add application")
    page.fill("#id_name", "live")
    page.click("main button[type=submit]")
    page.click("text=Issue key")
    page.fill("#id_label", "Gym camera")
    page.click("main button[type=submit]")
    secret = page.inner_text("[data-testid=secret]")
    assert len(secret) >= 32 and "rtmp://192.0.2.10/live/" + secret in page.content()
    page.reload()
    assert page.locator("[data-testid=secret]").count() == 0 and secret not in page.content()
    page.goto(page.url.replace("/issued/", "/"))  # the key's own page
    page.click("main >> text=Revoke")
    page.fill("#id_reason", "stolen")
    page.click("main button[type=submit]")
    assert "Revoked" in page.content()
    page.click("nav >> text=Audit log")
    # (no ORM calls in here: Playwright's sync API runs an event loop in this thread)
    actions = page.locator("table.audit tbody tr td:nth-child(4)").all_inner_texts()
    assert actions == ["revoke", "issue", "create", "create"]
