"""The lifecycle REST API and CLI: install presets or YAML, counts per stage, history, recompute."""

from __future__ import annotations

import re
from pathlib import Path

import sqlalchemy as sa
from fastapi.testclient import TestClient

from lifeloop.config import Settings
from lifeloop.profiles.resolver import resolve_pending
from tests.cli_helpers import run_cli
from tests.conftest import Brand, snapshot

FRIENDS = [
    {"type": "track", "event": "Channel Followed", "userId": f"u{i}", "messageId": f"f{i}"} for i in range(4)
] + [{"type": "track", "event": "Order Completed", "userId": "u0", "messageId": "o0"}]

SILENT = 'days_since(last_interaction) >= 30 or last("Channel Unfollowed") > last("Channel Followed")'
CUSTOM = """
key: vip_watch
name: {zh-CN: 大客户观察, en: Big spenders}
stages:
  - key: big
    name: {zh-CN: 大客户, en: Big spender}
    when: sum("Order Completed", "revenue") >= 1000
  - key: everyone
    name: {zh-CN: 其他, en: Everyone else}
    when: "true"
"""


def test_api_installs_a_preset_and_counts_stages(client: TestClient, engine: sa.Engine, brand: Brand) -> None:
    presets = client.get("/api/v1/lifecycle/presets", headers=brand.bearer).json()
    assert [p["key"] for p in presets] == ["aarrr", "line", "mall", "wecom"]
    created = client.post("/api/v1/lifecycle/models", json={"preset": "line"}, headers=brand.bearer)
    assert created.status_code == 201 and created.json()["version"] == 1
    assert client.post("/v1/batch", json={"batch": FRIENDS}, auth=brand.auth).status_code == 200
    resolve_pending(engine)
    counts = client.get("/api/v1/lifecycle/stages", headers=brand.bearer).json()
    assert {s["key"]: s["profiles"] for s in counts["stages"]} == {
        "silent": 0,
        "loyal": 1,
        "converting": 0,
        "engaged": 0,
        "new": 3,
    }
    profile = client.get("/api/v1/profiles/lookup?identity=user_id:u0", headers=brand.bearer).json()
    history = client.get(f"/api/v1/lifecycle/profiles/{profile['id']}/history", headers=brand.bearer).json()
    assert [(h["from_stage"], h["to_stage"]) for h in history] == [(None, "loyal")]
    active = client.get("/api/v1/lifecycle/models/active", headers=brand.bearer).json()
    assert active["stages"][0] == {
        "key": "silent",
        "name": {"zh-CN": "沉默&回收", "zh-TW": "沉默&回收", "en": "Silent & win-back"},
        "when": SILENT,
        "emit_on_enter": None,
    }


def test_api_refuses_a_broken_model_and_changes_nothing(
    client: TestClient, engine: sa.Engine, brand: Brand
) -> None:
    before = snapshot(engine)
    broken = CUSTOM.replace(">= 1000", '>= "lots"')
    response = client.post("/api/v1/lifecycle/models", json={"yaml": broken}, headers=brand.bearer)
    assert response.status_code == 400
    assert response.json()["field"] == "stages[0].when"
    assert (
        client.post("/api/v1/lifecycle/models", json={"preset": "nope"}, headers=brand.bearer).status_code
        == 400
    )
    assert client.post("/api/v1/lifecycle/models", json={}, headers=brand.bearer).status_code == 400
    assert client.get("/api/v1/lifecycle/stages", headers=brand.bearer).status_code == 404
    assert snapshot(engine) == before


def test_cli_installs_custom_yaml_recomputes_and_counts(
    settings: Settings, client: TestClient, brand: Brand, tmp_path: Path
) -> None:
    orders = [
        {"type": "track", "event": "Order Completed", "userId": f"u{i}", "properties": {"revenue": 600 * i}}
        for i in range(3)
    ]
    assert client.post("/v1/batch", json={"batch": orders}, auth=brand.auth).status_code == 200
    assert run_cli(["worker", "--once"], settings.database_url).exit_code == 0
    model = tmp_path / "model.yaml"
    model.write_text(CUSTOM, encoding="utf-8")
    installed = run_cli(["lifecycle", "install", str(model), "-w", "acme"], settings.database_url)
    assert installed.exit_code == 0, installed.output
    assert "installed vip_watch version 1" in installed.output
    recomputed = run_cli(["recompute", "-w", "acme"], settings.database_url)
    assert recomputed.exit_code == 0, recomputed.output
    assert "3 stage changes recorded" in recomputed.output
    stages = run_cli(["lifecycle", "stages", "-w", "acme"], settings.database_url)
    # revenue 0, 600 and 1,200: one big spender, two others
    assert re.search(r"big\s*│\s*大客户\s*│\s*1\s*│", stages.output), stages.output
    assert re.search(r"everyone\s*│\s*其他\s*│\s*2\s*│", stages.output), stages.output
    again = run_cli(["recompute", "-w", "acme"], settings.database_url)
    assert "0 stage changes recorded" in again.output
    missing = run_cli(["lifecycle", "install", "nope", "-w", "acme"], settings.database_url)
    assert missing.exit_code == 1 and "no preset 'nope'" in missing.output
