"""The status page in a real browser: Debian's Chromium, headless, driven by
Playwright (its own browser download does not work on these machines, so
``executable_path``). The service runs against the emulator and the fake
Telegram, as in tests/test_status_page.py. A screenshot goes to
bench/results/status-page.png."""

from __future__ import annotations

import os
import shutil
from datetime import datetime
from pathlib import Path

import pytest

from notifier.emulator import EmulatorControl
from tests.fakes.telegram import TelegramServer
from tests.test_delivery import CHAT, until
from tests.test_status_page import HOSTILE, TOKEN, Start, page

__all__ = ["page"]  # the fixture

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOT = Path(__file__).parent.parent / "bench" / "results" / "status-page.png"

if CHROMIUM is None:
    why = "Debian's chromium is not installed (apt-get install chromium; .ci/run does)"
    if os.environ.get("CI"):
        raise RuntimeError(why)  # in CI the browser test must run, never skip
    pytest.skip(why, allow_module_level=True)

playwright = pytest.importorskip("playwright.async_api")


async def test_the_status_page_in_headless_chromium(
    page: Start, control: EmulatorControl, telegram: TelegramServer
) -> None:
    tasks = [
        control.create_task(title=title, status=1)
        for title in ("Договор с поставщиком", HOSTILE, "Отчёт за ноябрь")
    ]
    service, url = await page([t["id"] for t in tasks], admin_token=TOKEN)
    telegram.fake.inject("forbidden", CHAT, times=-1)  # the next alert becomes a dead letter
    control.change_task(tasks[0]["id"], status=2)
    service.wake()

    async def one_dead() -> bool:
        return (await service.store.outbox_counts()).get("dead", 0) == 1

    await until(one_dead)
    telegram.fake.clear()

    async with playwright.async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            tab = await browser.new_page(viewport={"width": 1280, "height": 900})
            dialogs: list[str] = []
            tab.on("dialog", lambda dialog: dialogs.append(dialog.message))
            hour_before = datetime.now(service.tz).hour
            await tab.goto(url + "/")
            hour_after = datetime.now(service.tz).hour

            # The table lists the emulator's tasks; the hostile title stays text.
            assert await tab.locator("#tasks tbody tr").count() == 3
            titles = await tab.locator("#tasks td.title").all_inner_texts()
            assert sorted(titles) == sorted(t["title"] for t in tasks)
            assert HOSTILE in titles and not dialogs
            assert await tab.locator("#tasks td.title b").count() == 0

            # One bar per hour so far.
            bars = await tab.locator("svg.burndown rect.bar").count()
            assert bars in (hour_before + 1, hour_after + 1)

            # A retry without the token is refused, and nothing is sent.
            await tab.locator("#dead button").first.click()
            await tab.wait_for_load_state()
            assert "wrong or missing admin token" in await tab.locator("#refused").inner_text()
            assert not telegram.fake.sent
            await tab.goto(url + "/")

            # With the token it goes out again.
            await tab.fill("#token", TOKEN)
            await tab.locator("#dead button").first.click()
            await tab.wait_for_load_state()
            assert "goes out again" in await tab.locator("#said").inner_text()
            await until(lambda: bool(telegram.fake.texts(CHAT)), within=10)
            assert "Договор с поставщиком" in telegram.fake.texts(CHAT)[0]
            await tab.reload()
            assert await tab.locator("#dead-empty").count() == 1  # no dead letter left
            assert await tab.locator("#said").count() == 0  # what was said is not said again

            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            await tab.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            await browser.close()
    assert not dialogs
