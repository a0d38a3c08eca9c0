"""Registry credentials and the authentication handshake.

Where credentials come from, in Docker's order: passed explicitly, else the Docker config file
(``$DOCKER_CONFIG/config.json``, default ``~/.docker/config.json``): a credential helper named by
``credHelpers[registry]`` or ``credsStore``, else ``auths[registry]`` (``auth`` = base64
"user:password", or ``username``/``password``, or ``identitytoken``).

How they are used: a request goes out with whatever the cache holds for its scope; a 401 carries
a ``WWW-Authenticate`` challenge: ``Basic`` means send the password with every request, ``Bearer
realm=...,service=...,scope=...`` means fetch a token from ``realm`` for the scopes needed (the
Docker token protocol) and cache it per scope until it expires.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import attrs
import httpx

from ...errors import AuthenticationError, RegistryError
from .bodies import (
    MAX_TOKEN,
    Limit,
    ProgressRule,
    ProgressWatch,
    error_limit,
    headers_in_time,
    read_async,
)
from .errors import printable

DOCKER_HUB = "docker.io"
# What `docker login` writes for Docker Hub; other spellings seen in the wild map to docker.io.
_HUB_KEY = "https://index.docker.io/v1/"
_HUB_ALIASES = {"index.docker.io", "registry-1.docker.io", "registry.hub.docker.com", DOCKER_HUB}
_TOKEN_MARGIN = 10.0  # refresh a token this many seconds before it expires
_MIN_TOKEN_LIFE = 60  # the token spec: a missing or smaller expires_in means 60 seconds


@attrs.frozen(repr=False)
class Credentials:
    """A user name and password (or an identity/refresh token from an OAuth login)."""

    username: str = ""
    password: str = ""
    identity_token: str = ""

    def __repr__(self) -> str:  # never print secrets in tracebacks or logs
        return f"Credentials(username={self.username!r}, password=***)"

    def basic(self) -> str:
        """The ``Authorization`` header value for HTTP Basic authentication with these
        credentials."""
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


def coerce(auth: Credentials | tuple[str, str] | None) -> Credentials | None:
    """``auth`` as `Credentials`: a ``(username, password)`` tuple is converted, None and
    `Credentials` pass through; anything else is a `TypeError`."""
    if auth is None or isinstance(auth, Credentials):
        return auth
    if isinstance(auth, tuple) and len(auth) == 2 and all(isinstance(x, str) for x in auth):
        return Credentials(auth[0], auth[1])
    raise TypeError("auth must be sandkit Credentials or a (username, password) tuple")


# --- the Docker config file ------------------------------------------------------------------


def config_path() -> Path:
    """The Docker config file: ``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``
    (which may not exist)."""
    base = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    return Path(base) / "config.json"


def normalize_host(server: str) -> str:
    """The registry a config key or a `login` argument names: scheme and path dropped."""
    host = re.sub(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", "", server.strip()).split("/", 1)[0]
    return DOCKER_HUB if host.lower() in _HUB_ALIASES else host


def _config_key(registry: str) -> str:
    return _HUB_KEY if registry == DOCKER_HUB else registry


def _read_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise AuthenticationError(
            f"cannot read Docker config {path} ({e}): fix or remove the file"
        ) from None
    if not isinstance(data, dict):
        raise AuthenticationError(
            f"Docker config {path} is not a JSON object: fix or remove the file"
        )
    return data


def _from_entry(entry: dict[str, Any], registry: str, path: Path) -> Credentials | None:
    if entry.get("identitytoken"):
        return Credentials(str(entry.get("username") or ""), "", str(entry["identitytoken"]))
    if entry.get("auth"):
        try:
            user, sep, password = (
                base64.b64decode(entry["auth"], validate=False).decode().partition(":")
            )
        except (ValueError, UnicodeDecodeError):
            sep = ""
        if not sep:
            raise AuthenticationError(
                f"the 'auth' entry for {registry} in {path} is not base64 of 'user:password': "
                f"run `sandkit login {registry}` again"
            )
        return Credentials(user, password)
    if entry.get("username"):
        return Credentials(str(entry["username"]), str(entry.get("password") or ""))
    return None


def _run_helper(helper: str, registry: str) -> Credentials | None:
    """Ask `docker-credential-<helper> get` (the credential helper protocol)."""
    program = f"docker-credential-{helper}"
    try:
        proc = subprocess.run(
            [program, "get"],
            input=_config_key(registry).encode(),
            capture_output=True,
            timeout=30,
            check=False,
        )
    except FileNotFoundError:
        raise AuthenticationError(
            f"the Docker config names credential helper {helper!r} but {program} is not on PATH: "
            "install it or remove credsStore/credHelpers from the config"
        ) from None
    except OSError as e:  # on PATH but not runnable (not executable, a bad interpreter...)
        raise AuthenticationError(
            f"credential helper {program} cannot be run ({e.strerror or e}): fix its "
            "installation or remove credsStore/credHelpers from the Docker config"
        ) from None
    except subprocess.TimeoutExpired:
        raise AuthenticationError(f"{program} did not answer within 30 s") from None
    if proc.returncode != 0:
        if b"credentials not found" in proc.stdout + proc.stderr:
            return None
        raise AuthenticationError(
            f"{program} get failed: {(proc.stderr or proc.stdout).decode(errors='replace').strip()}"
        )
    try:
        out = json.loads(proc.stdout)
    except ValueError:
        out = None
    if not isinstance(out, dict):
        raise AuthenticationError(f"{program} get printed something that is not a JSON object")
    if out.get("Username") == "<token>":  # the protocol's spelling of an identity token
        return Credentials("", "", str(out.get("Secret") or ""))
    return Credentials(str(out.get("Username") or ""), str(out.get("Secret") or ""))


def credentials_for(registry: str) -> Credentials | None:
    """What a Docker user logged in to ``registry`` has, or None (anonymous)."""
    path = config_path()
    config = _read_config(path)
    helper = (config.get("credHelpers") or {}).get(_config_key(registry)) or (
        config.get("credHelpers") or {}
    ).get(registry)
    if helper:
        return _run_helper(str(helper), registry)
    for key, entry in (config.get("auths") or {}).items():
        if normalize_host(key) == registry and isinstance(entry, dict):
            found = _from_entry(entry, registry, path)
            if found:
                return found
    if config.get("credsStore"):
        return _run_helper(str(config["credsStore"]), registry)
    return None


def _write_config(path: Path, config: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".config-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:  # mkstemp makes it 0600: the file holds passwords
            json.dump(config, f, indent="\t")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def save_credentials(registry: str, creds: Credentials) -> Path:
    """Record ``creds`` in the Docker config's ``auths``, as `docker login` does without a helper."""
    registry = normalize_host(registry)
    path = config_path()
    config = _read_config(path)
    auths = config.setdefault("auths", {})
    for key in [k for k in auths if normalize_host(k) == registry]:
        del auths[key]
    entry = {"auth": base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode()}
    if creds.identity_token:
        entry = {"identitytoken": creds.identity_token}
    auths[_config_key(registry)] = entry
    _write_config(path, config)
    return path


def remove_credentials(registry: str) -> bool:
    """Forget the stored login for ``registry``; False if there was none."""
    registry = normalize_host(registry)
    path = config_path()
    config = _read_config(path)
    auths = config.get("auths") or {}
    keys = [k for k in auths if normalize_host(k) == registry]
    for key in keys:
        del auths[key]
    if keys:
        _write_config(path, config)
    return bool(keys)


# --- challenges and tokens -------------------------------------------------------------------

_PARAM = re.compile(r'\s*([a-zA-Z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^",\s]*))\s*,?')


@attrs.frozen
class Challenge:
    """One challenge of a ``WWW-Authenticate`` header: its ``scheme`` in lower case (``basic`` or
    ``bearer``) and its parameters (``realm``, ``service``, ``scope``...)."""

    scheme: str  # lower case: "basic" or "bearer"
    params: dict[str, str]


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a WWW-Authenticate value (RFC 7235): ``Scheme k="v", k2=v2, Scheme2 ...``.

    Quoted values may hold commas (``scope="repository:a:pull,push"``), so this is a small
    tokenizer rather than a split on ','.
    """
    out: list[Challenge] = []
    pos = 0
    while pos < len(header):
        m = re.compile(r"\s*,?\s*([A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*)").match(header, pos)
        if not m:
            break
        scheme, pos = m.group(1).lower(), m.end()
        params: dict[str, str] = {}
        while True:
            p = _PARAM.match(header, pos)
            if not p or p.end() == pos:
                break
            value = p.group(2) if p.group(2) is not None else p.group(3)
            params[p.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
            pos = p.end()
        out.append(Challenge(scheme, params))
    return out


@attrs.define
class _Token:
    header: str
    expires: float  # time.monotonic()


class Authenticator:
    """Per-registry authentication state: which scheme it wants, and tokens cached per scope."""

    def __init__(
        self, registry: str, credentials: Credentials | None, progress: ProgressRule
    ) -> None:
        self.registry = registry
        self.credentials = credentials
        self.progress = progress
        self._challenge: Challenge | None = None  # remembered so later scopes skip the 401 round
        self._tokens: dict[tuple[str, str, frozenset[str]], _Token] = {}
        self._lock = anyio.Lock()

    async def header_for(self, http: httpx.AsyncClient, scopes: frozenset[str]) -> str | None:
        """The Authorization value to send first for a request needing ``scopes`` (None: none)."""
        c = self._challenge
        if c is None:
            return None
        if c.scheme == "basic":
            return self.credentials.basic() if self.credentials else None
        return await self._token(http, c, scopes)

    async def on_unauthorized(
        self,
        http: httpx.AsyncClient,
        response: httpx.Response,
        scopes: frozenset[str],
        sent: str | None,
    ) -> str:
        """Answer a 401 to a request sent with ``sent``: the header to retry with. Raises
        AuthenticationError when no retry can work (no credentials for Basic)."""
        challenges = parse_challenges(response.headers.get("www-authenticate", ""))
        usable = [c for c in challenges if c.scheme in ("bearer", "basic")]
        if not usable:
            raise AuthenticationError(
                f"registry {self.registry} asks for authentication of a kind sandkit does not speak "
                f"({printable(response.headers.get('www-authenticate') or 'no WWW-Authenticate header')})"
            )
        c = next((c for c in usable if c.scheme == "bearer"), usable[0])
        self._challenge = c
        if c.scheme == "basic":
            if not self.credentials:
                raise AuthenticationError(
                    f"registry {self.registry} requires a login: run `sandkit login {self.registry}` "
                    "(or `docker login`), or pass auth=(user, password)"
                )
            return self.credentials.basic()
        if not scopes and c.params.get("scope"):
            scopes = frozenset(c.params["scope"].split(" "))
        cached = self._tokens.get(self._key(c, scopes))
        if cached and cached.header == sent:
            # Rejected although cached: revoked, or expired early. Fetch a new one; if parallel
            # requests already did, the cache now holds a different token and that is reused.
            del self._tokens[self._key(c, scopes)]
        return await self._token(http, c, scopes)

    @staticmethod
    def _key(c: Challenge, scopes: frozenset[str]) -> tuple[str, str, frozenset[str]]:
        return (c.params.get("realm", ""), c.params.get("service", ""), scopes)

    async def _token(self, http: httpx.AsyncClient, c: Challenge, scopes: frozenset[str]) -> str:
        key = self._key(c, scopes)
        async with self._lock:  # parallel layer tasks share one token fetch per scope
            cached = self._tokens.get(key)
            if cached and cached.expires > time.monotonic():
                return cached.header
            header, life = await self._fetch_token(http, c, scopes)
            self._tokens[key] = _Token(header, time.monotonic() + life - _TOKEN_MARGIN)
            return header

    async def _fetch_token(
        self, http: httpx.AsyncClient, c: Challenge, scopes: frozenset[str]
    ) -> tuple[str, int]:
        realm = c.params.get("realm") or ""
        if not realm.startswith(("https://", "http://")):
            raise AuthenticationError(
                f"registry {self.registry} sent a Bearer challenge without a usable realm: {c.params!r}"
            )
        shown = printable(realm)  # (the realm comes from a header: its text goes into messages)
        query: list[tuple[str, str]] = (
            [("service", c.params["service"])] if c.params.get("service") else []
        )
        query += [("scope", s) for s in sorted(scopes)]
        creds = self.credentials
        if creds and creds.identity_token:
            # OAuth2 refresh-token grant: what `docker login` leaves for SSO registries.
            form = dict(
                query,
                grant_type="refresh_token",
                refresh_token=creds.identity_token,
                client_id="sandkit",
            )
            form["scope"] = " ".join(sorted(scopes))
            request = http.build_request("POST", realm, data=form)
        else:
            # The password goes to the realm whatever its host, as Docker and skopeo send it: the
            # realm is named by the registry's own challenge (see client._own_origin).
            headers = {"Authorization": creds.basic()} if creds else {}
            request = http.build_request("GET", realm, params=tuple(query), headers=headers)
        watch = ProgressWatch(self.progress, f"the token request to {shown}")
        try:
            with headers_in_time(watch):
                resp = await http.send(request, stream=True)
            limit = (
                Limit(MAX_TOKEN, f"the token response of {shown}")
                if resp.status_code == 200
                else error_limit(shown)
            )
            resp = await read_async(resp, limit, watch)
        except httpx.HTTPError as e:
            raise RegistryError(
                f"cannot reach the token server {shown} of {self.registry} ({e!r}): check the network"
            ) from None
        if resp.status_code in (401, 403):
            who = f"user {creds.username!r}" if creds else "anonymous access"
            raise AuthenticationError(
                f"the token server of {self.registry} refused {who} (HTTP {resp.status_code}): check the "
                f"user name and password (`sandkit login {self.registry}`)"
            )
        if resp.status_code != 200:
            raise RegistryError(
                f"the token server {shown} of {self.registry} answered HTTP {resp.status_code}"
            )
        try:
            body = resp.json()
            token = body.get("token") or body.get("access_token")
            life = max(int(body.get("expires_in") or 0), _MIN_TOKEN_LIFE)
        except (ValueError, AttributeError, TypeError, RecursionError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"the token server {shown} of {self.registry} sent no token")
        return f"Bearer {token}", life
