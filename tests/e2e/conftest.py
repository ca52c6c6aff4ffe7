"""Browser fixtures: one headless Chromium per session, a fresh context per test, a login helper."""

import pytest
from playwright.sync_api import sync_playwright

from tests.conftest import PASSWORD

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LIVE_ADMIN = "live-admin@example.com"


class PageEvents:
    """What a page reported while a test ran: JavaScript errors and dialogs it opened."""

    def __init__(self):
        self.errors = []
        self.dialogs = []

    def watch(self, page):
        """Record console errors, uncaught exceptions and dialogs (dismissing them) of `page`."""
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on("dialog", self._dialog)

    def _console(self, message):
        """Keep console messages of type error, except the expected end of a refused Socket.IO session.

        When the server refuses (or closes) a Socket.IO session, the long-poll request still
        in flight for it answers 400 and the browser logs that as a failed resource load.
        """
        url = message.location.get("url", "")
        expected = "/socket.io/" in url and "status of 400" in message.text
        if message.type == "error" and not expected:
            self.errors.append(f"console: {message.text} at {message.location}")

    def _dialog(self, dialog):
        """Keep the dialog's text and close it so the page goes on."""
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium (the Debian package) for the whole session."""
    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()
    finally:
        playwright.stop()


@pytest.fixture
def page_events():
    """JavaScript errors and dialogs of the test's page."""
    return PageEvents()


@pytest.fixture
def page(browser, page_events):
    """A page in a fresh browser context (no cookies); fails the test on any JavaScript error."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    new_page = context.new_page()
    page_events.watch(new_page)
    yield new_page
    context.close()
    assert not page_events.errors, "JavaScript errors on the page:\n" + "\n".join(page_events.errors)


@pytest.fixture
def login(page, live_server):
    """Log `page` in through the real form; call as `login()` or `login(email, password)`."""

    def log_in(email=LIVE_ADMIN, password=PASSWORD):
        """Fill and submit the login form, then wait for the device list."""
        page.goto(f"{live_server.url}/login")
        page.fill("input[name=email]", email)
        page.fill("input[name=password]", password)
        with page.expect_navigation():
            page.click("main form [type=submit]")
        assert page.url == f"{live_server.url}/devices", page.url

    return log_in
