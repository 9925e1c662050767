"""Choosing components by name, URL and environment; configuration errors."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from qtasks.asyncio import QueueTasks
from qtasks.builtin.memory import MemoryBroker, MemoryStorage
from qtasks.builtin.sqlite import SqliteBroker, SqliteStorage
from qtasks.config import Config
from qtasks.errors import ConfigError, UnknownComponentError
from qtasks.registry import mask_url


def started(app: QueueTasks) -> QueueTasks:
    asyncio.run(app.start())
    return app


def test_default_is_sqlite_in_the_working_directory(tmp_path: Path) -> None:
    app = started(QueueTasks())
    assert isinstance(app.broker, SqliteBroker) and isinstance(app.storage, SqliteStorage)
    assert (tmp_path / "qtasks.db").exists()


def test_components_by_name() -> None:
    app = started(QueueTasks(broker="memory", storage="memory"))
    assert isinstance(app.broker, MemoryBroker) and isinstance(app.storage, MemoryStorage)


def test_components_by_url_scheme(tmp_path: Path) -> None:
    app = started(QueueTasks(broker="sqlite:///sub/dir/app.db"))
    assert isinstance(app.broker, SqliteBroker)
    assert isinstance(app.storage, SqliteStorage), "the storage follows the broker's URL"
    assert (tmp_path / "sub" / "dir" / "app.db").exists()
    absolute = tmp_path / "abs.db"
    started(QueueTasks(broker=f"sqlite:///{absolute}", storage="memory"))
    assert absolute.exists()


def test_component_instances_are_used_as_given() -> None:
    broker = MemoryBroker()
    app = started(QueueTasks(broker=broker, storage="memory"))
    assert app.broker is broker


def test_environment_configures_an_app_given_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QTASKS_BROKER", "memory")
    monkeypatch.setenv("QTASKS_STORAGE", f"sqlite:///{tmp_path / 'results.db'}")
    monkeypatch.setenv("QTASKS_MAX_TASKS_PROCESS", "4")  # QTasks' name for the concurrency
    app = started(QueueTasks())
    assert isinstance(app.broker, MemoryBroker) and isinstance(app.storage, SqliteStorage)
    assert app.config.concurrency == 4
    explicit = started(QueueTasks(broker="sqlite", storage="memory", concurrency=7))
    assert isinstance(explicit.broker, SqliteBroker) and explicit.config.concurrency == 7


def test_env_values_are_cast_and_checked() -> None:
    config = Config.from_env({"QTASKS_LEASE": "2.5", "QTASKS_AUTOLOAD_PLUGINS": "no", "QTASKS_DISABLE_PLUGINS": "a, b"})
    assert (config.lease, config.autoload_plugins, config.disable_plugins) == (2.5, False, ("a", "b"))
    with pytest.raises(ConfigError, match="QTASKS_CONCURRENCY='many'"):
        Config.from_env({"QTASKS_CONCURRENCY": "many"})
    with pytest.raises(ConfigError, match="unknown setting"):
        QueueTasks(concurency=3)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("unix:///tmp/redis.sock?db=0", "unix:///tmp/redis.sock?db=0"),
        ("kafka://h1:9092,h2:9092", "kafka://h1:9092,h2:9092"),
        ("redis://h:6379/0?next=u@x", "redis://h:6379/0?next=u@x"),
        ("rediss://user:pw@host:6380/0?ssl_cert_reqs=none", "rediss://user:***@host:6380/0?ssl_cert_reqs=none"),
        ("postgresql://u:p@h/db?sslmode=require", "postgresql://u:***@h/db?sslmode=require"),
        ("redis://:s3@cr/et@h:6379/0", "redis://:***@h:6379/0"),  # an @ or a / in the password
        ("redis://:pa#ss@h:6379/0", "redis://:***@h:6379/0"),  # a # or a ? in it
        ("redis://user:pa?ss@h:6379/0", "redis://user:***@h:6379/0"),
        ("redis://u:p@h/0?x=a@b", "redis://u:***@h/0?x=a@b"),
        ("postgresql://u@h/db?sslpassword=s3&x=1", "postgresql://u@h/db?sslpassword=***&x=1"),
        ("rediss://h/0?ssl_password=s3", "rediss://h/0?ssl_password=***"),
    ],
)
def test_mask_url_hides_every_password_and_leaves_the_rest(url: str, shown: str) -> None:
    assert mask_url(url) == shown


def test_unregistered_scheme_names_the_package_and_hides_the_password() -> None:
    # entry points not loaded: as in an environment where no add-on is installed
    app = QueueTasks(broker="kafka://user:s3cret@localhost:9092", storage="memory", autoload_plugins=False)
    with pytest.raises(UnknownComponentError) as err:
        started(app)
    message = str(err.value)
    assert "pip install qtasks-kafka" in message
    assert "s3cret" not in message and "kafka://user:***@localhost:9092" in message
    for url in (
        "kafka://user@h:9092?password=s3cret",
        "kafka://h?a=1&PASSWORD=s3cret#x",
        "kafka://:s3cret@pw@h/",
        "kafka://u:s3cret/x+y@h:9092",
    ):
        with pytest.raises(UnknownComponentError) as err:
            started(QueueTasks(broker=url, storage="memory", autoload_plugins=False))
        assert "s3cret" not in str(err.value) and "***" in str(err.value)
    # installed (in this environment) but switched off: say so instead of "install it"
    hidden = QueueTasks(broker="redis://:pw@localhost/0", storage="memory", disable_plugins=("redis",))
    with pytest.raises(UnknownComponentError, match=r"Plugin 'redis' \(qtasks-redis\) is disabled"):
        started(hidden)


def test_unknown_name_suggests_the_closest() -> None:
    with pytest.raises(UnknownComponentError, match="Did you mean 'sqlite'"):
        started(QueueTasks(broker="sqlit"))


def test_bad_sqlite_url_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="bad sqlite URL"):
        started(QueueTasks(broker="sqlite://", storage="memory"))
