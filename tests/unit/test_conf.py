"""app.conf: Celery's names as attributes and items; unknown and broker-only names fail
with a message that says why."""
from __future__ import annotations

import pytest

from mesh import Mesh
from mesh.conf import Settings
from mesh.exceptions import ConfigError


def test_attribute_and_item_access_are_the_same_and_defaults_are_there() -> None:
    conf = Mesh("t", mdns=False).conf
    assert conf.timezone == "UTC" and conf["beat_schedule"] == {}
    conf.timezone = "Europe/Berlin"
    assert conf["timezone"] == "Europe/Berlin"
    conf.update(task_always_eager=True, result_expires=60)
    assert conf.task_always_eager is True and conf.result_expires == 60
    assert conf.changed() == {"timezone": "Europe/Berlin", "task_always_eager": True, "result_expires": 60}
    del conf["timezone"]
    assert conf.timezone == "UTC"


def test_a_misspelt_setting_names_the_closest_one() -> None:
    conf = Settings()
    with pytest.raises(ConfigError, match="did you mean 'timezone'"):
        conf.timezon = "UTC"
    with pytest.raises(AttributeError, match="unknown setting"):
        conf.no_such_thing  # noqa: B018


def test_a_broker_setting_says_what_mesh_does_instead() -> None:
    with pytest.raises(ConfigError, match="no broker"):
        Settings({"broker_url": "redis://"})
    with pytest.raises(ConfigError, match="no result backend"):
        Settings().update(result_backend="redis://")
