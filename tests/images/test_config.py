from __future__ import annotations

import pytest

from sandkit.errors import ImageError
from sandkit.images.config import ImageConfig, merge_env, parse_user, resolve_command


def test_env_merge_caller_wins():
    assert merge_env(("PATH=/bin", "A=1"), {"A": "2", "B": "3"}) == ["PATH=/bin", "A=2", "B=3"]


def test_command_rules():
    cfg = ImageConfig(entrypoint=("/ep",), cmd=("default",))
    assert resolve_command(cfg) == ["/ep", "default"]
    assert resolve_command(cfg, ["x"]) == ["/ep", "x"]
    assert resolve_command(cfg, entrypoint="/other") == ["/other"]
    assert resolve_command(cfg, ["y"], entrypoint=[]) == ["y"]
    with pytest.raises(ImageError):
        resolve_command(ImageConfig())


@pytest.mark.parametrize("text,expected", [
    ("", (0, None)), ("alice", ("alice", None)), ("1000", (1000, None)), ("alice:staff", ("alice", "staff")),
    ("1000:50", (1000, 50)), ("1000:staff", (1000, "staff")), ("alice:50", ("alice", 50)),
])
def test_user_forms(text, expected):
    assert parse_user(text) == expected


def test_config_fields_from_oci():
    cfg = ImageConfig.from_oci({"ExposedPorts": {"80/tcp": {}}, "Labels": {"a": "b"}, "User": "1:2", "WorkingDir": "/w"})
    assert cfg.exposed_ports == ("80/tcp",) and cfg.labels == {"a": "b"} and cfg.user == "1:2"
