"""Screenshots of the console for the README and the user guides, taken from a running lifeloop (such as
``make demo``) with the system Chromium:

    .venv/bin/python scripts/console_screenshots.py http://127.0.0.1:8000 demo@lumitea.example PW docs/images
"""

from __future__ import annotations

import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

PAGES = [
    ("overview", "/", "zh-TW"),
    ("customers", "/customers", "zh-TW"),
    ("segments", "/segments/new?condition=count(%22Order+Completed%22)+%3E%3D+2", "zh-TW"),
    ("journeys", "/journeys", "zh-TW"),
    ("analytics-retention", "/analytics/retention", "zh-CN"),
    ("analytics-rfm", "/analytics/rfm", "en"),
]


def main(base_url: str, email: str, password: str, out: str) -> None:
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-background-networking"]
        )
        page = browser.new_page(base_url=base_url, viewport={"width": 1440, "height": 900})
        page.goto("/login")
        page.fill("#email", email)
        page.fill("#password", password)
        page.click("button[type=submit]")
        page.wait_for_url("**/")
        for name, path, locale in PAGES:
            if page.input_value("select[name=locale]") != locale:
                with page.expect_navigation():
                    page.select_option("select[name=locale]", locale)
            page.goto(path)
            page.wait_for_load_state("networkidle")
            page.wait_for_timeout(600)  # chart animations
            page.screenshot(path=str(target / f"console-{name}.png"))
            print(target / f"console-{name}.png")
        browser.close()


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    main(*sys.argv[1:])
