"""A real registry (Debian's docker-registry, distribution 2.8) on 127.0.0.1 for tests and the
benchmark, in four variants: plain HTTP, TLS with a CA made here, htpasswd basic auth, and
token auth with a small in-process token server issuing RS256 JWTs. No pytest in here."""

from __future__ import annotations

import base64
import datetime
import hashlib
import http.server
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import attrs
import httpx
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

REGISTRY_BIN = "/usr/bin/docker-registry"
USER, PASSWORD = "alice", "s3cret-pass"
SERVICE, ISSUER = "sandkit-test-registry", "sandkit-test-issuer"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert(
    subject: str,
    key: rsa.RSAPrivateKey,
    issuer: tuple[str, rsa.RSAPrivateKey] | None = None,
    *,
    ca: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer or (subject, key)
    b = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        b = b.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        b = b.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
    return b.sign(issuer_key, hashes.SHA256())


def write_tls(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate for 127.0.0.1/localhost signed by it: (ca, cert, key)."""
    ca_key, server_key = _key(), _key()
    ca = _cert("sandkit test CA", ca_key, ca=True)
    server = _cert("127.0.0.1", server_key, ("sandkit test CA", ca_key))
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(_pem_key(server_key))
    return paths


def libtrust_key_id(public_key: Any) -> str:
    """The key id registry 2.8 (docker/libtrust) expects in a token's ``kid`` header: base32 of
    the first 240 bits of SHA-256 over the DER public key, as 12 groups of 4 joined by ':'."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode()
    return ":".join(b32[i : i + 4] for i in range(0, 48, 4))


class TokenServer:
    """GET /token?service=..&scope=..: Basic-authenticated users get what they ask for;
    anonymous callers get a token with no access; a wrong password gets 401."""

    def __init__(self, directory: Path, *, lifetime: int = 300) -> None:
        self.key = _key()
        self.cert_path = directory / "token-signer.pem"
        self.cert_path.write_bytes(
            _cert("token signer", self.key).public_bytes(serialization.Encoding.PEM)
        )
        self.kid = libtrust_key_id(self.key.public_key())
        self.lifetime = lifetime
        self.requests: list[dict[str, Any]] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = urllib.parse.parse_qs(url.query)
                user = server.check(self.headers.get("Authorization", ""))
                server.requests.append({"user": user, "scope": query.get("scope", [])})
                if user is False:
                    self.send_response(401)
                    self.end_headers()
                    return
                token = server.issue(user, query.get("service", [""])[0], query.get("scope", []))
                body = json.dumps({"token": token, "expires_in": server.lifetime}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @staticmethod
    def check(header: str) -> str | bool | None:
        """The user name, None for anonymous, False for wrong credentials."""
        if not header:
            return None
        try:
            user, _, password = base64.b64decode(header.split(" ", 1)[1]).decode().partition(":")
        except (ValueError, IndexError):
            return False
        return user if (user, password) == (USER, PASSWORD) else False

    def issue(self, user: str | None, service: str, scopes: list[str]) -> str:
        access = []
        for s in " ".join(scopes).split():
            kind, _, rest = s.partition(":")
            name, _, actions = rest.rpartition(":")
            if user:
                access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": user or "",
            "aud": service,
            "exp": now + self.lifetime,
            "nbf": now - 30,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": self.kid})

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@attrs.define
class Registry:
    variant: str
    host: str  # 127.0.0.1:port
    root: Path
    config: Path
    proc: subprocess.Popen[bytes] | None = None
    ca_file: Path | None = None
    auth: tuple[str, str] | None = None
    token_server: TokenServer | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.ca_file else "http"

    def client_kwargs(self) -> dict[str, Any]:
        """What sandkit needs to talk to this registry (plain HTTP is allowed for 127.0.0.1)."""
        return {"ca_file": self.ca_file, "auth": self.auth}

    def ref(self, name: str) -> str:
        return f"{self.host}/{name}"

    def blob_file(self, digest: str) -> Path:
        hex_ = digest.split(":", 1)[1]
        return self.root / "data/docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"

    def start(self, timeout: float = 15.0) -> None:
        log = open(self.root / "registry.log", "ab")  # noqa: SIM115 - handed to the child, closed here
        self.proc = subprocess.Popen(
            [REGISTRY_BIN, "serve", str(self.config)],
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        verify = ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else False
        with httpx.Client(verify=verify) as c:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"docker-registry exited: {(self.root / 'registry.log').read_text()[-2000:]}"
                    )
                try:
                    if c.get(f"{self.scheme}://{self.host}/v2/").status_code in (200, 401):
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"docker-registry did not answer on {self.host} within {timeout}s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: only what we started
            self.proc.wait()
        self.proc = None

    def close(self) -> None:
        self.stop()
        if self.token_server:
            self.token_server.close()


def make_registry(root: Path, variant: str = "http") -> Registry:
    """Write a config for ``variant`` (http, tls, basic, token) under ``root`` and start it."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    host = f"127.0.0.1:{port}"
    http_cfg: dict[str, Any] = {
        "addr": host,
        "secret": secrets.token_hex(16),
        "headers": {"X-Content-Type-Options": ["nosniff"]},
    }
    cfg: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(root / "data")},
            "delete": {"enabled": True},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": http_cfg,
    }
    reg = Registry(variant, host, root, root / "config.yml")
    if variant == "tls":
        ca, cert, key = write_tls(root)
        http_cfg["tls"] = {"certificate": str(cert), "key": str(key)}
        reg.ca_file = ca
    elif variant == "basic":
        line = subprocess.run(
            ["htpasswd", "-Bbn", USER, PASSWORD], capture_output=True, check=True, text=True
        ).stdout
        (root / "htpasswd").write_text(line.strip() + "\n")
        cfg["auth"] = {"htpasswd": {"realm": "sandkit-test", "path": str(root / "htpasswd")}}
        reg.auth = (USER, PASSWORD)
    elif variant == "token":
        reg.token_server = TokenServer(root)
        cfg["auth"] = {
            "token": {
                "realm": reg.token_server.url,
                "service": SERVICE,
                "issuer": ISSUER,
                "rootcertbundle": str(reg.token_server.cert_path),
            }
        }
        reg.auth = (USER, PASSWORD)
    elif variant != "http":
        raise ValueError(variant)
    # JSON is YAML: no YAML library needed.
    reg.config.write_text(json.dumps(cfg, indent=1))
    if not shutil.which(REGISTRY_BIN):
        raise FileNotFoundError("docker-registry is not installed: apt-get install docker-registry")
    reg.start()
    return reg
