"""Browser fixtures (a pytest plugin, registered in conftest.py): Debian's chromium driven by Playwright (sync API), headless, one browser per session.

`consoles` opens console pages as a given user in their own browser context (separate localStorage, as
separate people on separate machines) and fails the test on any JavaScript error or native dialog.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from support.databases import unavailable

CHROMIUM = os.environ.get("LEADPUSH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
# Chromium's rasteriser differs by a pixel or two from run to run, so the committed screenshots are only
# rewritten when asked (or missing); otherwise they go to the test's temporary directory.
REFRESH_SCREENSHOTS = os.environ.get("LEADPUSH_SCREENSHOTS", "").lower() in ("1", "true", "yes")
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 740}
TOKEN_KEY = "leadpush.console.token"
# Chromium reports every failed HTTP response (a 401 for a bad token, a 409 refused claim) on the console;
# those are expected answers the page shows, not script errors.
BENIGN_CONSOLE = ("Failed to load resource",)


# Module scope, not session: Playwright's sync API keeps an asyncio loop running on the main thread while
# it is started, which would break later tests that call asyncio.run().
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        unavailable(f"chromium not found at {CHROMIUM}: install Debian's chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    try:
        try:
            instance = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        except Exception as exc:  # noqa: BLE001
            unavailable(f"chromium at {CHROMIUM} did not start: {exc}")
        yield instance
        instance.close()
    finally:
        pw.stop()


@dataclass
class Console:
    """One person at one browser: a context, its page, and every problem the page reported."""

    base_url: str
    context: Any
    page: Any
    shots: Path
    problems: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    def open(self, path: str) -> Any:
        self.page.goto(self.base_url + path)
        return self.page

    def sign_in(self, token: str, path: str = "/console") -> Any:
        """Sign in with an API token the way a person does: type it into the sign-in page's second form and
        press Enter (the page exchanges it for a session and keeps only the session token)."""
        self.page.goto(self.base_url + "/console/login?next=" + path)
        self.page.get_by_label("API 令牌").fill(token)
        self.page.get_by_label("API 令牌").press("Enter")
        self.page.wait_for_url(lambda url: "/console/login" not in url)
        return self.page

    def sign_in_with_password(self, login: str, password: str, path: str = "/console") -> Any:
        """Sign in with a login name and password: type both on the sign-in page and press Enter."""
        self.page.goto(self.base_url + "/console/login?next=" + path)
        self.page.get_by_label("登录名").fill(login)
        self.page.get_by_label("密码", exact=True).fill(password)
        self.page.get_by_label("密码", exact=True).press("Enter")
        self.page.wait_for_url(lambda url: "/console/login" not in url)
        return self.page

    def ready(self) -> Any:
        """Wait until the page's script has loaded its data."""
        self.page.locator("body[data-ready='true']").wait_for()
        return self.page

    def live(self) -> Any:
        """Wait until the live inbox is connected over WebSocket."""
        self.page.locator("#live-state[data-state='open']").wait_for()
        return self.page

    def screenshot(self, name: str) -> Path:
        if self.page.locator("#live-state").count():
            self.live()  # the header shows "实时", not a passing "连接中"
        self.page.mouse.move(0, self.page.viewport_size["height"] - 1)  # no hover highlight
        path = SCREENSHOTS / f"{name}.png"
        if not (REFRESH_SCREENSHOTS or not path.exists()):
            path = self.shots / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path), animations="disabled", caret="hide")
        return path


class Consoles:
    def __init__(self, browser: Any, shots: Path) -> None:
        self.browser = browser
        self.shots = shots
        self.opened: list[Console] = []

    def new(self, base_url: str, viewport: dict[str, int] | None = None, user_agent: str | None = None) -> Console:
        """A person at their own browser; `user_agent` to be another browser (e.g. WeCom's, "wxwork")."""
        context = self.browser.new_context(
            viewport=viewport or DESKTOP,
            locale="zh-CN",
            timezone_id="Asia/Shanghai",
            device_scale_factor=1,
            user_agent=user_agent,
        )
        context.set_default_timeout(10_000)
        page = context.new_page()
        console = Console(base_url, context, page, self.shots)

        def on_console(message: Any) -> None:
            if message.type == "error" and not message.text.startswith(BENIGN_CONSOLE):
                console.problems.append(f"console error: {message.text}")

        def on_dialog(dialog: Any) -> None:
            console.dialogs.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()

        page.on("console", on_console)
        page.on("pageerror", lambda error: console.problems.append(f"page error: {error}"))
        page.on("dialog", on_dialog)
        self.opened.append(console)
        return console

    def close(self) -> None:
        for console in self.opened:
            console.context.close()  # closing twice is harmless

    def check(self) -> None:
        dialogs = [d for c in self.opened for d in c.dialogs]
        problems = [p for c in self.opened for p in c.problems]
        assert not dialogs, f"a native dialog fired (script ran?): {dialogs}"
        assert not problems, "the page reported errors:\n" + "\n".join(problems)


@pytest.fixture
def consoles(browser: Any, tmp_path: Path) -> Iterator[Consoles]:
    opened = Consoles(browser, tmp_path / "screenshots")
    try:
        yield opened
        opened.check()
    finally:
        opened.close()
