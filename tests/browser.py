"""Headless Chromium from Debian's packages (``chromium``, ``chromium-driver``), driven by Selenium.

Nothing is downloaded: the browser and its driver are the system's (Selenium Manager is never asked). Without
them the browser tests skip, unless ``EVL_REQUIRE_BROWSER=1`` (``make test`` sets it), where they fail.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pytest

CHROMIUM = os.environ.get("EVL_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("EVL_CHROMEDRIVER", "/usr/bin/chromedriver")


def require_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (pip)")
    if missing:
        message = f"no headless browser: {', '.join(missing)} missing (apt-get install chromium chromium-driver)"
        if os.environ.get("EVL_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)


def chromium(width: int = 1400, height: int = 1000) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    return driver


def wait(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last: Optional[BaseException] = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # the page is still redrawing: try again
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}" + (f" (last error: {last})" if last else ""))


class Screenshots:
    """Screenshots into the test's folder, and into ``$EVL_SCREENSHOTS`` when set (docs/img for the README)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.extra = Path(os.environ["EVL_SCREENSHOTS"]) if os.environ.get("EVL_SCREENSHOTS") else None

    def take(self, driver: Any, name: str) -> Path:
        """The whole page (the window is stretched to the document's height, then put back)."""
        path = self.folder / f"{name}.png"
        size = driver.get_window_size()
        height = int(driver.execute_script("return document.documentElement.scrollHeight"))
        driver.execute_script("window.scrollTo(0, 0)")
        driver.set_window_size(size["width"], min(max(size["height"], height + 140), 4000))
        time.sleep(0.3)  # let the page lay itself out at the new size
        driver.save_screenshot(str(path))
        driver.set_window_size(size["width"], size["height"])
        if self.extra is not None:
            self.extra.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, self.extra / path.name)
        return path


def browser(folder: Path) -> Iterator[Any]:
    require_browser()
    driver = chromium()
    try:
        yield driver
    finally:
        driver.quit()
