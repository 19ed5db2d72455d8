"""Channel credentials and tracking links need the deployment's secret key."""

from __future__ import annotations

import pytest

TEST_SECRET_KEY = "test-secret-key-for-channel-credentials-0123456789"


@pytest.fixture(autouse=True)
def secret_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("LIFELOOP_SECRET_KEY", TEST_SECRET_KEY)
    return TEST_SECRET_KEY
