"""examples/code_service.py: the web service, run as its own process (uvicorn on 127.0.0.1),
and asked over HTTP with httpx, by well-behaved and hostile clients at once."""

from __future__ import annotations

import base64
import concurrent.futures
import signal
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from polling import wait_until
from registry.server import free_port

from .conftest import EXAMPLES

pytestmark = pytest.mark.slow

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def service(example_env, tmp_path_factory) -> Iterator[httpx.Client]:
    """The service on a port of its own; a client for it. Stopped by Ctrl-C (SIGINT) at the
    end, which must close its pool and end it cleanly. Its log (a line per request) goes to a
    file: a pipe nobody reads while the tests run would fill and stop it."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("code_service") / "log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            [sys.executable, str(EXAMPLES / "code_service.py"), str(port)],
            env=example_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            wait_until(lambda: _answers(client) or server.poll() is not None, "the service")
            assert server.poll() is None, log_path.read_text()
            yield client
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=60) == 0, log_path.read_text()
        assert "Traceback" not in log_path.read_text(), log_path.read_text()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def _answers(client: httpx.Client) -> bool:
    try:
        client.post("/run", json={"code": "1"})
    except httpx.TransportError:
        return False
    return True


def run(client: httpx.Client, code: str) -> dict:
    response = client.post("/run", json={"code": code})
    assert response.status_code == 200, response.text
    return response.json()


def test_a_snippet_gives_its_output_value_and_figure_as_json(service):
    result = run(
        service,
        "import matplotlib.pyplot as plt\nprint('squares')\nplt.plot([1, 4, 9])\nsum(range(10))",
    )
    assert result["stdout"] == "squares\n"
    assert result["value"] == "45"
    assert result["error"] is None
    (figure,) = result["figures"]
    assert base64.b64decode(figure).startswith(PNG_SIGNATURE)
    assert not result["timed_out"] and not result["truncated"]


def test_each_request_gets_a_fresh_interpreter_and_container(service):
    run(service, "secret = 42\nopen('/tmp/mark', 'w').write('x')")
    result = run(service, "import os\n(os.path.exists('/tmp/mark'), 'secret' in globals())")
    assert result["value"] == "(False, False)"


def test_an_error_is_a_result(service):
    result = run(service, "def f(:\n    pass")
    assert result["error"]["name"] == "SyntaxError"
    result = run(service, "import no_such_module")
    assert result["error"]["name"] == "ModuleNotFoundError"


# (name, code, what its result must show): each breaks one limit of the service.
HOSTILE = {
    "loops forever": ("while True:\n    pass", lambda r: r["timed_out"]),
    "floods its output": (
        "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)",
        lambda r: r["truncated"] and len(r["stdout"]) <= 1024 * 1024,
    ),
    "allocates without end": (
        "blocks = []\nwhile True:\n    blocks.append(bytearray(16 << 20))",
        lambda r: r["restarted"] and "memory" in r["error"]["value"],
    ),
    "forks without end": (
        "import os\nwhile True:\n    os.fork()",
        lambda r: r["error"]["name"] == "BlockingIOError",  # (the pids limit: EAGAIN)
    ),
    "reaches for the network": (
        "import socket\nsocket.create_connection(('192.0.2.1', 80), timeout=2)",
        lambda r: r["error"]["name"] == "OSError" and "unreachable" in r["error"]["value"],
    ),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_snippet_fails_in_its_container_while_others_are_served(service, name):
    code, shows_it = HOSTILE[name]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        hostile = pool.submit(run, service, code)
        honest = [pool.submit(run, service, f"{n} * {n}") for n in range(3)]
        assert [f.result()["value"] for f in honest] == ["0", "1", "4"]
        result = hostile.result()
    assert shows_it(result), result
    assert run(service, "'still serving'")["value"] == "'still serving'"


def test_bad_requests_are_refused_with_a_reason(service):
    too_big = service.post("/run", content=b'{"code": "' + b"#" * (64 * 1024) + b'"}')
    assert too_big.status_code == 413
    for body in (b"not json", b'{"code": 42}', b"[" * 60000, b'["code"]'):
        refused = service.post("/run", content=body)
        assert refused.status_code == 422, body[:20]
        assert "code" in refused.json()["detail"]
