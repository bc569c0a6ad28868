"""Open an HTML file in a real headless browser (Debian's chromium and chromedriver, installed by
infra/services.sh install) and report what a person would see: the title, every image decoded or not, and
the console's messages."""

from __future__ import annotations

import shutil
from pathlib import Path

DECODE_ALL_IMAGES = """
const done = arguments[arguments.length - 1];
Promise.all([...document.images].map(img => img.decode().then(
    () => ({alt: img.alt, decoded: true, width: img.naturalWidth, height: img.naturalHeight}),
    err => ({alt: img.alt, decoded: false, error: String(err), width: img.naturalWidth, height: img.naturalHeight}))))
  .then(done);
"""


def chromium_paths() -> tuple[str | None, str | None]:
    return shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")


def open_page(path: str | Path) -> dict:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = chromium_paths()
    if not browser or not driver_path:
        raise RuntimeError("chromium / chromedriver not found: run `infra/services.sh install` (Debian's "
                           "chromium and chromium-driver packages)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,2000"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.set_script_timeout(60)
        driver.get(Path(path).resolve().as_uri())
        return {
            "title": driver.title,
            "images": driver.execute_async_script(DECODE_ALL_IMAGES),
            "headings": [h.text for h in driver.find_elements("css selector", "h2")],
            "text": driver.find_element("tag name", "body").text,
            "console": driver.get_log("browser"),
        }
    finally:
        driver.quit()
