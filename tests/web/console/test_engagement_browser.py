"""The engagement pages in a real browser with the demo brand's programme (lifeloop.demo.engagement):
every tab, an advisor's task list and a customer's page, in every language, for an admin and a viewer —
no untranslated string, no server error, no browser-console error, and data on each page."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from lifeloop.demo.engagement import install_engagement, issue_demo_coupons
from lifeloop.engagement.advisors.service import list_advisors
from lifeloop.engagement.advisors.tasks import list_tasks
from lifeloop.store.engine import connect
from lifeloop.store.schema import utcnow
from tests.conftest import Brand, LiveServer
from tests.web.console.browser import ARTIFACTS, launch_options, load_history
from tests.web.console.conftest import make_user
from tests.web.console.test_browser import LOCALES, Tab, english_only, playwright_api

pytestmark = [pytest.mark.browser, pytest.mark.parametrize("backend", ["sqlite"])]
TABS = ["/engagement", "/engagement/points", "/engagement/checkin", "/engagement/tiers",
        "/engagement/referrals", "/engagement/advisors"]  # fmt: skip


@pytest.fixture
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(**launch_options())
        yield chromium
        chromium.close()


@pytest.fixture
def programme(engine: sa.Engine, brand: Brand, live_server: LiveServer, tmp_path: Path) -> dict[str, Any]:
    """The demo's programme installed before the simulated history is placed, coupons issued after."""
    with engine.begin() as conn:
        install_engagement(conn, brand.workspace_id, now=utcnow())
    load_history(engine, brand, tmp_path / "analytics.duckdb", customers=150, days=120)
    issued = issue_demo_coupons(engine, brand.workspace_id, now=utcnow())
    with connect(engine) as conn:
        advisor = list_advisors(conn, brand.workspace_id)[0]
        tasks = list_tasks(conn, brand.workspace_id, now=utcnow(), advisor_id=advisor.id)
    return {"url": live_server.url, "issued": issued, "advisor": advisor.id, "tasks": tasks}


class EngagementTab(Tab):
    def panel_texts(self, selector: str) -> list[str]:
        """Every text node inside one element, and its placeholders and titles."""
        return self.page.evaluate(
            """(selector) => {
              const root = document.querySelector(selector), out = [];
              const walk = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
              while (walk.nextNode()) { const t = walk.currentNode.textContent.trim(); if (t) out.push(t); }
              root.querySelectorAll("[placeholder],[title],[aria-label]").forEach((e) => {
                for (const a of ["placeholder", "title", "aria-label"]) {
                  if (e.getAttribute(a)) out.push(e.getAttribute(a));
                }
              });
              return out;
            }""",
            selector,
        )


def _pages(programme: dict[str, Any]) -> list[str]:
    task_customer = programme["tasks"][0].profile_id if programme["tasks"] else None
    extra = [f"/engagement/advisors/{programme['advisor']}"]
    if task_customer is not None:
        extra += [f"/customers/{task_customer}", f"/engagement/points?customer={task_customer}"]
    return TABS + extra


def _check(tab: EngagementTab, pages: list[str], locale: str, shots: str | None = None) -> None:
    leftovers = english_only(locale) if locale != "en" else set()
    for path in pages:
        assert tab.visit(path) == 200, path
        # On a customer's page, the engagement panel's texts (the page's other panels are not ours).
        texts = tab.panel_texts("#engagement") if path.startswith("/customers/") else tab.texts()
        found = sorted({t for t in texts if t in leftovers})
        assert not found, f"untranslated on {path} ({locale}): {found}"
        if shots:
            name = path.strip("/").replace("/", "-").replace("?", "-").replace("=", "-")
            target = ARTIFACTS / "screenshots" / f"{shots}-{locale}-{name}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            tab.page.screenshot(path=str(target), full_page=True)
    assert not tab.errors, tab.errors


def test_the_demo_programme_makes_every_engagement_page_alive_in_every_language(
    programme: dict[str, Any],
    browser: Any,
    engine: sa.Engine,
    brand: Brand,
) -> None:
    assert programme["issued"] > 0 and programme["tasks"], "the demo history should tag VIPs for advisors"
    pages = _pages(programme)
    admin = EngagementTab(browser, programme["url"])
    admin.sign_in(make_user(engine, brand.workspace_id, "admin", locale="en"))
    for locale in LOCALES:
        admin.choose_language(locale)
        _check(admin, pages, locale, shots="engagement")
    admin.visit("/engagement")
    assert admin.page.locator("#coupon-templates tr[data-template]").count() == 3
    admin.visit("/engagement/tiers")
    shown = admin.page.locator("#tier-ladder td.members").all_inner_texts()
    members = [int(m.replace(",", "")) for m in shown]
    assert len(members) == 4 and sum(members) > 0 and members[0] < sum(members)  # some customers moved up
    admin.visit(pages[6])
    assert admin.page.locator("#advisor-tasks tr[data-task]").count() >= 1

    viewer = EngagementTab(browser, programme["url"])
    viewer.sign_in(make_user(engine, brand.workspace_id, "viewer", locale="zh-TW"))
    _check(viewer, pages, "zh-TW")
    viewer.visit(pages[6])
    assert viewer.page.locator("form.task-update").count() == 0  # a viewer sees the list, changes nothing
