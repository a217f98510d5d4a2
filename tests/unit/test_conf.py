"""app.conf: Celery's names as attributes and items, three layers (defaults < sources <
code), config_from_object with Celery's namespace rule, config_from_envvar; settings
mesh does not use are accepted and logged with what mesh does instead; misspelt names
and bad values fail; settings reach the node's and the client's Config."""
from __future__ import annotations

import datetime
import logging
import math
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh import Mesh
from mesh.conf import Settings
from mesh.conf_sources import read_object
from mesh.config import Config
from mesh.exceptions import ConfigError


@pytest.fixture
def app() -> Iterator[Mesh]:
    a = Mesh("t", mdns=False)
    yield a
    a.close()


def test_attribute_and_item_access_are_the_same_and_defaults_are_there(app: Mesh) -> None:
    conf = app.conf
    assert conf.timezone == "UTC" and conf["beat_schedule"] == {}
    conf.timezone = "Europe/Berlin"
    assert conf["timezone"] == "Europe/Berlin"
    conf.update(task_always_eager=True, result_expires=60)
    assert conf.task_always_eager is True and conf.result_expires == 60
    assert conf.changed() == {"timezone": "Europe/Berlin", "task_always_eager": True, "result_expires": 60}
    del conf["timezone"]
    assert conf.timezone == "UTC"
    assert "task_acks_late" in conf and len(conf) == len(list(conf))


def test_a_misspelt_setting_names_the_closest_one() -> None:
    conf = Settings()
    with pytest.raises(ConfigError, match="did you mean 'timezone'"):
        conf.timezon = "UTC"
    with pytest.raises(AttributeError, match="unknown setting"):
        conf.no_such_thing  # noqa: B018
    with pytest.raises(ConfigError, match="did you mean 'task_always_eager'"):
        conf.update(task_always_eagre=True)


def test_a_broker_setting_is_taken_and_logged_once_with_what_mesh_does_instead(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "mesh.conf")
    conf = Settings({"broker_url": "redis://", "task_serializer": "json"})
    conf.broker_url = "amqp://"
    assert conf.broker_url == "amqp://"           # kept: code may read it back
    texts = [r.getMessage() for r in caplog.records]
    assert len([t for t in texts if "broker_url" in t]) == 1, texts
    assert any("no broker" in t for t in texts) and any("msgpack" in t for t in texts)
    conf.update(result_backend="redis://", broker_transport_options={}, redis_max_connections=3)
    texts = [r.getMessage() for r in caplog.records]
    assert any("result_backend" in t and "no result backend" in t for t in texts)
    assert any("broker_transport_options" in t for t in texts)
    assert any("redis_max_connections" in t for t in texts)


def test_mesh_broker_argument_says_mesh_has_no_broker(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "mesh.conf")
    with Mesh("tasks", broker="pyamqp://guest@localhost//", backend="rpc://", mdns=False) as app:
        text = caplog.text
        assert "broker='pyamqp://guest@localhost//'" in text and "no broker" in text
        assert "backend='rpc://'" in text and "no result backend" in text
        assert app.conf.broker_url == "pyamqp://guest@localhost//"


def test_not_yet_settings_say_so(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "mesh.conf")
    Settings({"worker_autoscaler": "x"})
    assert "mesh does not use it" in caplog.text and "--autoscale" in caplog.text


def test_routing_settings_are_taken_and_checked(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "mesh.conf")
    conf = Settings({"task_routes": {"tasks.add": "low-priority"}, "task_default_queue": "d"})
    assert conf.task_routes == {"tasks.add": "low-priority"} and not caplog.text
    with pytest.raises(ConfigError, match="a route must be"):
        conf.task_routes = {"tasks.add": 5}
    with pytest.raises(ConfigError, match="queue name"):
        conf.task_default_queue = ""
    Settings({"task_queues": ["a"]})
    assert "meshnode --queues" in caplog.text


def test_a_fixed_setting_is_silent_at_its_value_and_logged_otherwise(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "mesh.conf")
    conf = Settings({"enable_utc": True, "result_extended": True})
    assert caplog.text == ""
    conf.enable_utc = False
    assert "enable_utc=False" in caplog.text and "unix time" in caplog.text


@pytest.mark.parametrize("name,value,fragment", [
    ("worker_concurrency", 0, "integer >= 1"), ("worker_concurrency", "4", "integer"),
    ("task_time_limit", -1, "seconds > 0"), ("task_soft_time_limit", "soon", "seconds"),
    ("timezone", "Mars/Olympus", "not a zone"), ("task_always_eager", "yes", "True or False"),
    ("task_default_rate_limit", "lots", "rate limit"), ("task_default_priority", 12, "0..9"),
    ("imports", [1], "module names"), ("beat_schedule", [], "dict"),
    ("task_annotations", {"x": 1}, "task_annotations"),
    ("worker_log_format", "%(levelname)s", "message"),
])
def test_bad_values_are_refused_and_nothing_is_set(name: str, value: object, fragment: str) -> None:
    conf = Settings()
    with pytest.raises(ConfigError, match=fragment):
        conf.update({"task_track_started": True, name: value})
    assert conf.changed() == {}          # all or nothing


def test_result_expires_takes_timedelta_and_none_means_for_ever() -> None:
    conf = Settings({"result_expires": datetime.timedelta(hours=1)})
    assert conf.result_expires == 3600.0
    conf.result_expires = None
    assert conf.result_expires == math.inf
    assert Config.build(env={}, defaults=conf.node_options()).result_expires == math.inf


def test_code_wins_over_a_configuration_source_whatever_the_order(app: Mesh) -> None:
    app.conf.timezone = "Europe/Oslo"
    app.config_from_object({"timezone": "Asia/Tokyo", "task_track_started": True})
    assert app.conf.timezone == "Europe/Oslo"
    assert app.conf.task_track_started is True


def test_config_from_object_reads_a_module_by_name_skipping_its_imports(
        app: Mesh, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mesh_test_celeryconfig.py").write_text(
        "import os\nfrom datetime import timedelta\n"
        "broker_url = 'pyamqp://'\nresult_backend = 'rpc://'\n"
        "task_serializer = 'json'\ntimezone = 'Europe/Oslo'\nenable_utc = True\n"
        "result_expires = timedelta(minutes=5)\nSOME_CONSTANT = 1\n"
        "def helper():\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    app.config_from_object("mesh_test_celeryconfig")
    assert (app.conf.timezone, app.conf.result_expires) == ("Europe/Oslo", 300.0)
    sys.modules.pop("mesh_test_celeryconfig", None)


def test_config_from_object_is_lazy_until_conf_is_used(
        app: Mesh, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    app.config_from_object("mesh_test_later:Settings")   # not importable yet
    (tmp_path / "mesh_test_later.py").write_text(
        "class Settings:\n    task_acks_late = False\n    worker_concurrency = 3\n")
    assert app.conf.task_acks_late is False and app.conf.worker_concurrency == 3
    sys.modules.pop("mesh_test_later", None)


def test_config_from_object_force_reads_now_and_names_the_source(app: Mesh) -> None:
    with pytest.raises(ConfigError, match=r"config_from_object\('mesh_no_such_module'\).*cannot import"):
        app.config_from_object("mesh_no_such_module", force=True)
    app.config_from_object("mesh_no_such_module_either", silent=True, force=True)
    assert app.conf.changed() == {}


def test_an_object_s_methods_are_not_settings(app: Mesh) -> None:
    class DjangoLikeSettings:
        DEBUG = True
        timezone = "Europe/Oslo"

        def is_overridden(self, setting: str) -> bool:
            return False
    app.config_from_object(DjangoLikeSettings())
    assert app.conf.timezone == "Europe/Oslo"


def test_namespace_takes_prefixed_upper_case_names_only() -> None:
    settings = types.SimpleNamespace(
        DEBUG=True, INSTALLED_APPS=["x"], MESH_TASK_ALWAYS_EAGER=True, MESH_PEERS=["tcp://a:1"],
        MESH_TIMEZONE="Europe/Berlin", MESH_="nothing", CELERY_TASK_ACKS_LATE=False)
    assert read_object(settings, "MESH") == {"task_always_eager": True, "peers": ["tcp://a:1"],
                                             "timezone": "Europe/Berlin"}
    assert read_object({"mesh_worker_concurrency": 2, "other": 1}, "MESH") == {"worker_concurrency": 2}
    with Mesh("ns", mdns=False, namespace="MESH") as app:
        app.config_from_object(settings)
        assert app.conf.task_always_eager is True
        assert app.config.peers == ("tcp://a:1",)     # mesh's own options too


def test_a_misspelt_namespaced_setting_fails_at_first_use(app: Mesh) -> None:
    app.config_from_object({"MESH_TASK_ALWAYS_EAGR": True}, namespace="MESH")
    # named as the source writes them (session 22: 'task_always_eagr' is in no file)
    with pytest.raises(ConfigError, match="unknown setting MESH_TASK_ALWAYS_EAGR; "
                                          "did you mean MESH_TASK_ALWAYS_EAGER"):
        app.conf.timezone  # noqa: B018


def test_config_from_envvar(app: Mesh, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MESH_TEST_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="MESH_TEST_CONFIG is not set"):
        app.config_from_envvar("MESH_TEST_CONFIG")
    assert app.config_from_envvar("MESH_TEST_CONFIG", silent=True) is False
    (tmp_path / "mesh_test_envconfig.py").write_text("task_track_started = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("MESH_TEST_CONFIG", "mesh_test_envconfig")
    assert app.config_from_envvar("MESH_TEST_CONFIG") is True
    assert app.conf.task_track_started is True
    sys.modules.pop("mesh_test_envconfig", None)


# ---- what reaches the node and the client --------------------------------------------

def test_node_options_come_from_conf_under_env_and_flags() -> None:
    conf = Settings({"worker_concurrency": 3, "task_time_limit": 30, "task_soft_time_limit": 25,
                     "worker_max_tasks_per_child": 100, "worker_max_memory_per_child": 200_000,
                     "result_expires": 600, "worker_send_task_events": False})
    c = Config.build(env={}, defaults=conf.node_options())
    assert (c.concurrency, c.time_limit, c.soft_time_limit, c.max_tasks_per_child,
            c.max_memory_per_child, c.result_expires, c.events) == (3, 30, 25, 100, 200_000, 600, False)
    c = Config.build(env={"MESH_CONCURRENCY": "5"}, defaults=conf.node_options(), time_limit=9)
    assert (c.concurrency, c.time_limit, c.soft_time_limit) == (5, 9, 25)


def test_client_options_come_from_conf_until_the_client_runs(
        app: Mesh, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MESH_PEERS", raising=False)
    app.conf.peers = "tcp://127.0.0.1:1,tcp://127.0.0.1:2"
    app.conf.result_timeout = 5
    assert app.config.peers == ("tcp://127.0.0.1:1", "tcp://127.0.0.1:2")
    assert app.config.result_timeout == 5
    app.client  # noqa: B018   (starts the client: its seeds are fixed now)
    with pytest.raises(ConfigError, match="already runs"):
        app.conf.peers = ["tcp://127.0.0.1:3"]
    app.conf.peers = "tcp://127.0.0.1:1,tcp://127.0.0.1:2"   # the same value is fine


def test_keyword_arguments_to_mesh_win_over_conf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MESH_PEERS", raising=False)
    with Mesh("k", peers=["tcp://127.0.0.1:9"], mdns=False) as app:
        app.conf.peers = ["tcp://127.0.0.1:1"]
        assert app.config.peers == ("tcp://127.0.0.1:9",)


def test_a_bad_mesh_keyword_still_fails_at_once() -> None:
    with pytest.raises(ConfigError, match="did you mean 'peers'"):
        Mesh("x", peer=["tcp://a:1"])


def test_a_celery_config_gets_one_warning_for_the_settings_mesh_does_not_take(
        caplog: pytest.LogCaptureFixture) -> None:
    """A Celery config module sets several settings mesh does not take: one warning
    line per load (in every web worker that loads it), grouped by reason, not one each."""
    caplog.set_level(logging.WARNING, "mesh.conf")
    conf = Settings()
    celery_config = {"broker_url": "redis://localhost:6379/0", "accept_content": ["json"],
                     "task_serializer": "json", "result_serializer": "json",
                     "broker_connection_retry_on_startup": True, "task_acks_late": True}
    conf.add_source("config_from_object('cconf')", lambda: celery_config, force=True)
    assert len(caplog.records) == 1, caplog.text
    lines = caplog.records[0].getMessage().splitlines()   # a head, then a line per reason
    assert lines[0] == ("config_from_object('cconf'): 5 settings are ignored, mesh does not "
                        "use them (docs/configuration.md, \"Names that are not mesh's\"):")
    assert lines[1].startswith("  broker_url, broker_connection_retry_on_startup: mesh has "
                               "no broker: "), lines
    assert lines[2].startswith("  accept_content, task_serializer, result_serializer: mesh "
                               "always encodes with msgpack"), lines
    assert len(lines) == 3 and conf.task_acks_late is True
    caplog.clear()
    conf.add_source("again", lambda: {"broker_url": "x", "result_backend": "y"}, force=True)
    assert caplog.text.count("mesh has no broker") == 0        # broker_url was said already
    assert "again: 1 setting is ignored, mesh does not use it" in caplog.text
    assert "\n  result_backend: mesh keeps results" in caplog.text
    caplog.clear()
    Settings({"enable_utc": False, "worker_direct": True})
    assert "\n  enable_utc=False: mesh takes only True: times travel" in caplog.text
    assert "\n  worker_direct: not available in this version of mesh yet: " in caplog.text


def test_a_database_beat_scheduler_is_said_not_to_run_its_entries(
        caplog: pytest.LogCaptureFixture) -> None:
    """(A user trial: Celery's Django guide with django-celery-beat) the settings'
    CELERY_BEAT_SCHEDULER was logged as 'no beat process: every node carries the
    schedule', which does not tell a user that the entries in the database (made in
    its admin) will never run."""
    caplog.set_level(logging.WARNING, "mesh.conf")
    Settings().add_source("config_from_object('django.conf:settings', namespace='CELERY')",
                          lambda: {"beat_scheduler":
                                   "django_celery_beat.schedulers:DatabaseScheduler"},
                          force=True)
    assert ("beat_scheduler: mesh loads no scheduler class: entries a scheduler keeps "
            "elsewhere (django_celery_beat's DatabaseScheduler: its tables, its admin) do not "
            "run; put them in beat_schedule") in caplog.text, caplog.text
