"""Channel configurations: encrypted at rest, bound to their row, decrypted into adapters."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from lifeloop.errors import Conflict, InvalidInput, NotFound
from lifeloop.messaging.channels import registry
from lifeloop.messaging.channels.config import (
    CredentialsUnreadable,
    MissingSecretKey,
    get_config,
    list_configs,
    load_config,
    save_config,
    set_enabled,
)
from lifeloop.messaging.channels.email import EmailAdapter
from lifeloop.messaging.channels.line import LineAdapter
from lifeloop.messaging.channels.models import channel_configs
from lifeloop.messaging.channels.sms import SmsAdapter
from lifeloop.messaging.channels.wechat import WeChatAdapter
from lifeloop.messaging.channels.wecom import WeComAdapter
from tests.conftest import Brand, make_brand

LINE_CREDENTIALS = {"channel_access_token": "tok-very-secret-LINE", "channel_secret": "line-channel-secret"}


def test_credentials_are_stored_encrypted_and_read_back(engine: sa.Engine, brand: Brand) -> None:
    with engine.begin() as conn:
        saved = save_config(
            conn, brand.workspace_id, channel="line", credentials=LINE_CREDENTIALS, settings={"base_url": "x"}
        )
    assert saved.credential_fields == ["channel_access_token", "channel_secret"]
    with engine.connect() as conn:
        raw = conn.execute(
            sa.select(channel_configs.c.credentials).where(
                channel_configs.c.workspace_id == brand.workspace_id
            )
        ).scalar_one()
        config, credentials = load_config(conn, brand.workspace_id, "line")
        shown = get_config(conn, brand.workspace_id, "line")
    assert raw.startswith("v1:") and "very-secret" not in raw and "line-channel-secret" not in raw
    assert credentials == LINE_CREDENTIALS and config.settings == {"base_url": "x"}
    assert "tok-very-secret-LINE" not in repr(shown)  # what operators see carries no secret


def test_saving_again_replaces_the_configuration(engine: sa.Engine, brand: Brand) -> None:
    with engine.begin() as conn:
        first = save_config(conn, brand.workspace_id, channel="sms", credentials={"auth_header": "X: 1"})
        second = save_config(
            conn,
            brand.workspace_id,
            channel="sms",
            credentials={"auth_header": "X: 2"},
            settings={"url": "u"},
        )
        save_config(
            conn, brand.workspace_id, channel="sms", name="backup", credentials={"auth_header": "X: 3"}
        )
    assert first.id == second.id
    with engine.connect() as conn:
        assert load_config(conn, brand.workspace_id, "sms")[1] == {"auth_header": "X: 2"}
        assert load_config(conn, brand.workspace_id, "sms", name="backup")[1] == {"auth_header": "X: 3"}
        assert [c.name for c in list_configs(conn, brand.workspace_id)] == ["default", "backup"]


def test_a_ciphertext_moved_to_another_workspace_does_not_decrypt(engine: sa.Engine, brand: Brand) -> None:
    other = make_brand(engine, "rival")
    with engine.begin() as conn:
        save_config(conn, brand.workspace_id, channel="line", credentials=LINE_CREDENTIALS)
        save_config(conn, other.workspace_id, channel="line", credentials={"channel_access_token": "theirs"})
        stolen = conn.execute(
            sa.select(channel_configs.c.credentials).where(
                channel_configs.c.workspace_id == brand.workspace_id
            )
        ).scalar_one()
        conn.execute(
            sa.update(channel_configs)
            .where(channel_configs.c.workspace_id == other.workspace_id)
            .values(credentials=stolen)
        )
    with engine.connect() as conn, pytest.raises(CredentialsUnreadable, match="tampered"):
        load_config(conn, other.workspace_id, "line")


def test_another_secret_key_cannot_read_the_credentials(
    engine: sa.Engine, brand: Brand, monkeypatch: pytest.MonkeyPatch
) -> None:
    with engine.begin() as conn:
        save_config(conn, brand.workspace_id, channel="line", credentials=LINE_CREDENTIALS)
    monkeypatch.setenv("LIFELOOP_SECRET_KEY", "a-different-deployment-secret-key-0123456789")
    with engine.connect() as conn, pytest.raises(CredentialsUnreadable):
        load_config(conn, brand.workspace_id, "line")


@pytest.mark.parametrize("value", [None, "too-short"])
def test_a_missing_secret_key_is_a_clear_error(
    engine: sa.Engine, brand: Brand, monkeypatch: pytest.MonkeyPatch, process_database, value: str | None
) -> None:
    # A deployment on PostgreSQL: no embedded store to keep a generated key in (tests/test_secret_key.py).
    process_database("postgresql://lifeloop@db.invalid/lifeloop")
    if value is None:
        monkeypatch.delenv("LIFELOOP_SECRET_KEY")
    else:
        monkeypatch.setenv("LIFELOOP_SECRET_KEY", value)
    with engine.begin() as conn, pytest.raises(MissingSecretKey, match="LIFELOOP_SECRET_KEY"):
        save_config(conn, brand.workspace_id, channel="line", credentials=LINE_CREDENTIALS)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"channel": "fax", "credentials": {}}, "channel"),
        ({"channel": "line", "name": "has space", "credentials": {}}, "name"),
        ({"channel": "line", "credentials": ["token"]}, "credentials"),
        ({"channel": "line", "credentials": {}, "settings": "fast"}, "settings"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_stored(
    engine: sa.Engine, brand: Brand, kwargs: dict[str, object], field: str
) -> None:
    with engine.begin() as conn, pytest.raises(InvalidInput) as error:
        save_config(conn, brand.workspace_id, **kwargs)  # type: ignore[arg-type]
    assert error.value.field == field
    with engine.connect() as conn:
        assert list_configs(conn, brand.workspace_id) == []


CONFIGS = [
    ("line", {"channel_access_token": "t", "channel_secret": "s"}, {}, LineAdapter),
    (
        "wecom",
        {"corp_id": "ww1", "secret": "s", "token": "t", "encoding_aes_key": "k" * 43},
        {"sender": "zhangsan"},
        WeComAdapter,
    ),
    ("wechat", {"app_id": "wx1", "app_secret": "s"}, {}, WeChatAdapter),
    (
        "email",
        {"password": "p"},
        {"host": "smtp.example.com", "from_address": "a@b.c", "public_url": "https://x"},
        EmailAdapter,
    ),
    ("sms", {"auth_header": "X-Api-Key: k"}, {"url": "https://sms.example.com/send"}, SmsAdapter),
]


@pytest.mark.parametrize(("channel", "credentials", "options", "adapter_type"), CONFIGS)
def test_build_adapter_decrypts_the_configuration(
    engine: sa.Engine,
    brand: Brand,
    channel: str,
    credentials: dict[str, str],
    options: dict[str, str],
    adapter_type: type,
) -> None:
    with engine.begin() as conn:
        save_config(conn, brand.workspace_id, channel=channel, credentials=credentials, settings=options)
    with engine.connect() as conn:
        adapter = registry.build_adapter(conn, brand.workspace_id, channel)
    assert isinstance(adapter, adapter_type) and adapter.channel == channel
    adapter.close()


def test_build_adapter_errors(engine: sa.Engine, brand: Brand) -> None:
    with engine.begin() as conn:
        save_config(conn, brand.workspace_id, channel="line", credentials={"channel_secret": "only"})
        save_config(conn, brand.workspace_id, channel="sms", credentials={}, settings={"url": "https://s"})
        set_enabled(conn, brand.workspace_id, "sms", "default", enabled=False)
    with engine.connect() as conn:
        with pytest.raises(InvalidInput, match="channel_access_token"):
            registry.build_adapter(conn, brand.workspace_id, "line")
        with pytest.raises(NotFound):  # no enabled default
            registry.build_adapter(conn, brand.workspace_id, "sms")
        with pytest.raises(Conflict, match="disabled"):
            registry.build_adapter(conn, brand.workspace_id, "sms", name="default")
        with pytest.raises(NotFound):
            registry.build_adapter(conn, brand.workspace_id, "wechat")
        with pytest.raises(InvalidInput, match="no adapter"):
            registry.build_adapter(conn, brand.workspace_id, "pigeon")


def test_configurations_are_per_workspace(engine: sa.Engine, brand: Brand) -> None:
    other = make_brand(engine, "rival")
    with engine.begin() as conn:
        save_config(conn, brand.workspace_id, channel="line", credentials=LINE_CREDENTIALS)
    with engine.connect() as conn, pytest.raises(NotFound):
        load_config(conn, other.workspace_id, "line")
