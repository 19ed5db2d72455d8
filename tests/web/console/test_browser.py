"""The console in a real browser (headless system Chromium): every page for every role in every language
renders without a server error, a browser-console error or an untranslated string, and charts draw from data.
Screenshots land in ``var/test-artifacts/screenshots`` (``LIFELOOP_TEST_ARTIFACTS``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from lifeloop.web.console.i18n import console_messages, translations
from lifeloop.web.console.render import NAV
from tests.conftest import Brand, LiveServer
from tests.web.console.browser import ARTIFACTS, launch_options, load_history
from tests.web.console.conftest import PASSWORD, make_user

pytestmark = [pytest.mark.browser, pytest.mark.parametrize("backend", ["sqlite"])]  # the browser's view
# does not depend on the database; both databases are covered by the page tests without a browser
playwright_api = pytest.importorskip("playwright.sync_api")
LOCALES = ("zh-TW", "zh-CN", "en")
PAGES = [href for href, _label, _permission in NAV]
VISIBLE_TEXTS = """() => {
  const out = [];
  const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  while (walk.nextNode()) {
    const text = walk.currentNode.textContent.trim();
    if (text) out.push(text);
  }
  document.querySelectorAll("input[placeholder],[title],[aria-label]").forEach((e) => {
    for (const a of ["placeholder", "title", "aria-label"]) {
      if (e.getAttribute(a)) out.push(e.getAttribute(a));
    }
  });
  return out;
}"""


@pytest.fixture
def history(engine: sa.Engine, brand: Brand, live_server: LiveServer, tmp_path: Path) -> LiveServer:
    load_history(engine, brand, tmp_path / "analytics.duckdb")
    return live_server


@pytest.fixture
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(**launch_options())
        yield chromium
        chromium.close()


class Tab:
    """One signed-in browser page that remembers every console error and failed response."""

    def __init__(self, browser: Any, base_url: str) -> None:
        self.context = browser.new_context(base_url=base_url, viewport={"width": 1360, "height": 900})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on(
            "console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None
        )
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on(
            "response", lambda r: self.errors.append(f"{r.status} {r.url}") if r.status >= 500 else None
        )

    def sign_in(self, email: str) -> None:
        self.page.goto("/login")
        self.page.fill("#email", email)
        self.page.fill("#password", PASSWORD)
        self.page.click("button[type=submit]")
        self.page.wait_for_url("**/")

    def choose_language(self, locale: str) -> None:
        """The header's language switch submits its form: wait for that navigation to land, or the next
        ``goto`` aborts it (net::ERR_ABORTED)."""
        if self.page.input_value("select[name=locale]") == locale:
            return
        with self.page.expect_navigation():
            self.page.select_option("select[name=locale]", locale)
        self.page.wait_for_load_state("load")

    def visit(self, path: str) -> int:
        response = self.page.goto(path)
        self.page.wait_for_load_state("networkidle")
        return response.status if response else 0

    def texts(self) -> list[str]:
        """Every visible text node, and the placeholder, title and aria-label a reader sees."""
        return self.page.evaluate(VISIBLE_TEXTS)


def english_only(locale: str) -> set[str]:
    """The console's English strings that have a different translation in ``locale``: seeing one of them
    whole on a page in that language means something was not translated."""
    gettext = translations(locale).gettext
    return {m for m in console_messages() if gettext(m) != m and any(c.isalpha() for c in m)}


def check_pages(tab: Tab, locale: str, *, screenshots: str | None = None) -> None:
    leftovers = english_only(locale) if locale != "en" else set()
    for path in PAGES:
        status = tab.visit(path)
        assert status == 200, f"{path} answered {status}"
        found = sorted({t for t in tab.texts() if t in leftovers})
        assert not found, f"untranslated on {path} ({locale}): {found}"
        if screenshots:
            target = ARTIFACTS / "screenshots" / f"{screenshots}-{locale}-{path.strip('/') or 'overview'}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            tab.page.screenshot(path=str(target), full_page=True)
    assert not tab.errors, tab.errors


def test_every_page_in_every_language_for_the_admin(
    history: LiveServer, browser: Any, engine: sa.Engine, brand: Brand
) -> None:
    tab = Tab(browser, history.url)
    tab.sign_in(make_user(engine, brand.workspace_id, "admin", locale="en"))
    for locale in LOCALES:
        tab.choose_language(locale)
        check_pages(tab, locale, screenshots="admin")


@pytest.mark.parametrize(("role", "locale"), [("viewer", "zh-TW"), ("analyst", "zh-CN"), ("operator", "en")])
def test_every_page_for_each_other_role(
    history: LiveServer, browser: Any, engine: sa.Engine, brand: Brand, role: str, locale: str
) -> None:
    tab = Tab(browser, history.url)
    tab.sign_in(make_user(engine, brand.workspace_id, role, locale=locale))
    check_pages(tab, locale)
    if role == "viewer":  # a viewer is shown no control that changes something
        tab.visit("/settings")
        assert tab.page.locator("form[action='/settings/members']").count() == 0


def test_overview_charts_draw_their_series_from_data(
    history: LiveServer, browser: Any, engine: sa.Engine, brand: Brand
) -> None:
    tab = Tab(browser, history.url)
    tab.sign_in(make_user(engine, brand.workspace_id, "analyst", locale="zh-TW"))
    tab.visit("/")
    expected = {"stages": 1, "flows": 1, "activity": 3, "retention": 1, "revenue": 1, "messages": 0}
    for chart, series in expected.items():
        if series == 0:
            continue  # no message was sent in this history: the panel says "no data yet" instead
        element = tab.page.locator(f"#chart-{chart}")
        element.wait_for()
        tab.page.wait_for_function(f"document.querySelector('#chart-{chart}').dataset.drawn === '1'")
        assert int(element.get_attribute("data-series") or 0) == series, chart
        painted = tab.page.evaluate(
            f"""() => {{ const c = document.querySelector('#chart-{chart} canvas');
                 const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                 let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i]) n++; return n; }}"""
        )
        assert painted > 1000, f"{chart} drew {painted} pixels"
    tab.page.screenshot(path=str(_artifact("overview-zh-TW.png")), full_page=True)
    assert "總覽" in tab.page.inner_text("h1")
    assert not tab.errors, tab.errors


def _artifact(name: str) -> Path:
    path = ARTIFACTS / "screenshots" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


JOURNEY = """key: vip_thanks
name: {zh-CN: 感谢大客户, zh-TW: 感謝大客戶, en: Thank big spenders}
trigger: {kind: manual}
steps:
  - {key: mark, type: add_tag, tag: thanked}
  - {key: done, type: exit, reason: thanked}
"""


def test_an_operator_builds_a_tag_rule_a_segment_and_a_journey_in_the_browser(
    history: LiveServer, browser: Any, engine: sa.Engine, brand: Brand
) -> None:
    tab = Tab(browser, history.url)
    tab.sign_in(make_user(engine, brand.workspace_id, "operator", locale="zh-TW"))
    page = tab.page
    tab.visit("/tags")
    page.fill("#r-tag", "big_spender")
    page.fill("#r-condition", 'sum("Order Completed", "revenue") >= 1000')
    page.click("form[action='/tags/rules'] button[type=submit]")
    page.wait_for_load_state("networkidle")
    tab.visit("/segments/new")
    page.fill("#condition", 'has_tag("big_spender")')
    page.fill("#key", "big_spenders")
    page.fill("#name", "大客戶")
    page.click("#segment-form button[type=submit]")
    page.wait_for_load_state("networkidle")
    tab.visit("/journeys/new")
    page.fill("#journey-definition", JOURNEY)
    page.click("#journey-form button[type=submit]")
    page.wait_for_url("**/journeys/vip_thanks")
    page.screenshot(path=str(_artifact("operator-journey-zh-TW.png")), full_page=True)
    # the flow editor: a ＋ on the way from "mark" to "done", a wait of two days put there
    page.click("#edit-flow")
    page.wait_for_url("**/journeys/vip_thanks/edit")
    with page.expect_navigation():
        page.click("a.add-step[data-after='mark'][data-way='next']")
    with page.expect_navigation():
        page.select_option("#new-type", "wait")
    page.fill("#field-duration", "2d")
    with page.expect_navigation():
        page.click("#step-form button[type=submit]")
    assert page.locator("#editor-flash").is_visible()
    assert page.locator(".journey-flow g.step.selected[data-step='wait']").count() == 1
    leftovers = english_only("zh-TW") - {"mark", "wait", "done"}  # the step keys are names, not text
    assert not sorted({t for t in tab.texts() if t in leftovers})
    page.screenshot(path=str(_artifact("operator-journey-editor-zh-TW.png")), full_page=True)
    assert not tab.errors, tab.errors

    with httpx.Client(base_url=history.url, headers=brand.bearer) as api:
        rules = api.get("/api/v1/tags/rules").json()
        segment = api.get("/api/v1/segments/big_spenders").json()
        journey = api.get("/api/v1/journeys/vip_thanks").json()
        spenders = api.post("/api/v1/segments/preview", json={"condition": 'has_tag("big_spender")'}).json()
    assert [rule["tag"] for rule in rules["tag_rules"]] == ["big_spender"]
    assert segment["name"] == "大客戶" and segment["condition"] == 'has_tag("big_spender")'
    assert journey["status"] == "draft" and [s["key"] for s in journey["draft"]["steps"]] == [
        "mark",
        "wait",
        "done",
    ]
    assert journey["draft"]["steps"][1] == {"key": "wait", "type": "wait", "duration": "2d"}
    assert spenders["count"] > 0  # the simulated history has customers over 1,000
