from __future__ import annotations

import pytest

from sandkit.errors import ImageError
from sandkit.images.config import ImageConfig, resolve_command


def test_command_rules():
    cfg = ImageConfig(entrypoint=("/ep",), cmd=("default",))
    assert resolve_command(cfg) == ["/ep", "default"]
    assert resolve_command(cfg, ["x"]) == ["/ep", "x"]
    assert resolve_command(cfg, entrypoint="/other") == ["/other"]
    assert resolve_command(cfg, ["y"], entrypoint=[]) == ["y"]
    with pytest.raises(ImageError):
        resolve_command(ImageConfig())


def test_config_fields_from_oci():
    cfg = ImageConfig.from_oci(
        {"ExposedPorts": {"80/tcp": {}}, "Labels": {"a": "b"}, "User": "1:2", "WorkingDir": "/w"}
    )
    assert cfg.exposed_ports == ("80/tcp",) and cfg.labels == {"a": "b"} and cfg.user == "1:2"
