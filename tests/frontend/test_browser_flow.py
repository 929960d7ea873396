"""The Foundation flow in a real headless Chromium (Debian's, driven by Playwright): log in, add a server,
an application and a key (the issue dialog shows the secret once), revoke it, find every step in the audit log.
Screenshots of a failing run land in test-artifacts/."""

import pytest

from tests import factories
from tests.frontend.browser import browser, log_in  # noqa: F401  (fixture)

pytestmark = pytest.mark.browser


def test_admin_flow_in_a_real_browser(transactional_db, live_server, browser):  # noqa: F811
    factories.make_user("boss", "admin")
    base = f"http://127.0.0.1:{live_server.thread.port}"
    page = browser()
    log_in(page, base, "boss", "/servers/")
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
    # The issue dialog: modal, keyboard focus on its first copy button, Esc closes it.
    page.wait_for_function("document.querySelector('#key-dialog').matches(':modal')")  # the module upgraded it
    assert page.evaluate("document.activeElement.dataset.copy") is not None
    assert page.inner_text("#key-dialog").count(secret) >= 2  # the key alone and inside the full URL
    page.keyboard.press("Escape")
    assert not page.evaluate("document.querySelector('#key-dialog').open")
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
