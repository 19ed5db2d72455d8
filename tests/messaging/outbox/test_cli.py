"""The real ``lifeloop messages send-test`` and ``lifeloop deliveries list`` commands."""

from __future__ import annotations

import json

from lifeloop.config import Settings
from tests.cli_helpers import run_cli
from tests.conftest import Brand
from tests.fakes.webhook_server import FakeWebhookServer
from tests.messaging.helpers import SECRET


def test_send_a_test_message_and_list_deliveries(
    settings: Settings, brand: Brand, webhook: FakeWebhookServer
) -> None:
    url = settings.database_url
    sent = run_cli(
        [
            "messages",
            "send-test",
            "-w",
            "acme",
            "--channel",
            "webhook",
            "--to",
            webhook.url,
            "--text",
            "hello",
            "--key",
            "cli-1",
            "--deliver",
        ],
        url,
        LIFELOOP_WEBHOOK_SECRET=SECRET,
    )
    assert sent.exit_code == 0, sent.output
    assert "queued (key cli-1)" in sent.output and "is delivered" in sent.output
    assert webhook.accepted["cli-1"]["content"] == {"text": "hello"}

    queued = run_cli(
        [
            "messages",
            "send-test",
            "-w",
            "acme",
            "--channel",
            "webhook",
            "--to",
            webhook.url,
            "--content",
            '{"text": "later"}',
            "--key",
            "cli-2",
        ],
        url,
    )
    assert queued.exit_code == 0, queued.output

    listed = run_cli(["deliveries", "list", "-w", "acme", "--json"], url)
    assert listed.exit_code == 0, listed.output
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [(r["idempotency_key"], r["status"]) for r in rows] == [
        ("cli-2", "queued"),
        ("cli-1", "delivered"),
    ]
    table = run_cli(["deliveries", "list", "-w", "acme", "--status", "delivered"], url)
    assert table.exit_code == 0 and "delivered" in table.output and "queued" not in table.output

    done = run_cli(["messages", "work", "--once"], url, LIFELOOP_WEBHOOK_SECRET=SECRET)
    assert done.exit_code == 0 and "1 messages handled" in done.output
    assert sorted(webhook.accepted) == ["cli-1", "cli-2"]


def test_cli_explains_mistakes(settings: Settings, brand: Brand) -> None:
    url = settings.database_url
    cases = [
        (
            ["messages", "send-test", "-w", "acme", "--channel", "webhook", "--to", "http://x/"],
            "--text or as --content",
        ),
        (
            ["messages", "send-test", "-w", "acme", "--channel", "fax", "--to", "x", "--text", "x"],
            "channel must be",
        ),
        (
            ["messages", "send-test", "-w", "nope", "--channel", "sms", "--to", "+886912", "--text", "x"],
            "nope",
        ),
        (["deliveries", "list", "-w", "acme", "--status", "lost"], "status must be one of"),
    ]
    for args, message in cases:
        result = run_cli(args, url)
        assert result.exit_code == 1 and message in result.output, (args, result.output)
