"""The engagement tests' brand has set up its points programme (with the default rules): a workspace
earns points only once it has (points.settings.configured)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from lifeloop.engagement.points.settings import save_section
from lifeloop.store.schema import utcnow
from tests.conftest import Brand, make_brand


@pytest.fixture
def brand(engine: sa.Engine) -> Brand:
    made = make_brand(engine, "acme")
    with engine.begin() as conn:
        save_section(conn, made.workspace_id, "rules", {}, now=utcnow())
    return made
