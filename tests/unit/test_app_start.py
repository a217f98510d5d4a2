"""app.start(argv) / app.worker_main(argv): Celery's argv turned into meshnode's or
meshctl's (mesh/cli/start.py). Real nodes started this way:
tests/integration/test_e2e_celery_guides.py."""
from __future__ import annotations

import sys

import pytest

from mesh import Mesh
from mesh.cli.start import app_spec, command
from mesh.exceptions import ConfigError

app = Mesh("start-unit", mdns=False)


def test_the_module_attribute_holding_the_app() -> None:
    assert app_spec(app) == f"{__name__}:app"


@pytest.mark.parametrize(("argv", "expected"), [
    (["worker", "-l", "INFO", "-c", "2"], ("meshnode", ["-A", "SPEC", "-l", "INFO", "-c", "2"])),
    (["celery", "worker"], ("meshnode", ["-A", "SPEC"])),
    (["-A", "proj", "worker", "-Q", "a"], ("meshnode", ["-A", "proj", "-Q", "a"])),
    (["--app=proj.celery:app", "inspect", "active"], ("meshctl", ["-A", "proj.celery:app", "inspect", "active"])),
    (["--workdir", "/srv", "worker"], ("meshnode", ["-A", "SPEC", "--workdir", "/srv"])),
    (["inspect", "registered"], ("meshctl", ["-A", "SPEC", "inspect", "registered"])),
    ([], ("meshctl", ["-A", "SPEC", "--help"])),
    (["--help"], ("meshctl", ["-A", "SPEC", "--help"])),
])
def test_celerys_argv(argv: list[str], expected: tuple[str, list[str]]) -> None:
    prog, args = command(app, argv)
    assert (prog, [a.replace(app_spec(app), "SPEC") for a in args]) == expected


def test_sys_argv_loses_the_program_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["/srv/proj/celery.py", "worker", "-c", "1"])
    assert command(app, None)[0] == "meshnode"
    assert command(app, list(sys.argv))[1][2:] == ["-c", "1"]     # Celery's worker_main(sys.argv)


def test_a_broker_option_before_the_command_is_refused() -> None:
    with pytest.raises(ConfigError, match="no broker"):
        command(app, ["-b", "amqp://", "worker"])


def test_worker_main_needs_worker() -> None:
    with pytest.raises(ValueError, match="The worker sub-command must be specified"):
        app.worker_main(["inspect", "active"])


def test_an_app_no_module_holds_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="cannot tell which module holds"):
        app_spec(Mesh("nowhere", mdns=False, set_as_current=False))
