"""An HTTP client for one registry (OCI Distribution API v2) on httpx, for anyio (trio/asyncio).

It owns what every request needs: choosing https or (for insecure registries only) http, TLS
verification, authentication with one retry on 401, and retries with exponential backoff on
transient failures (connection errors, 408/429/5xx). Pull and push build on `request` (async)
and `open_in_thread` (a layer download in the thread that applies it); they never touch httpx
directly.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import os
import random
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Self

import anyio
import attrs
import httpx

from ...errors import AuthenticationError, RegistryError
from . import bodies
from .auth import DOCKER_HUB, Authenticator, Credentials, coerce, credentials_for
from .bodies import (
    Limit,
    ProgressRule,
    ProgressWatch,
    error_limit,
    headers_in_time,
    read_async,
    read_sync,
    skip_redirect_body,
    skip_redirect_body_async,
)
from .errors import printable
from .transport import HeadersTooSlow, LargeReadTransport, headers_by

# Where Docker Hub's API really lives (docker.io is only the name in references).
_API_HOST = {DOCKER_HUB: "registry-1.docker.io"}
_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
USER_AGENT = "sandkit/0.1 (+https://github.com/sandkit)"

Body = bytes | Callable[[], AsyncIterator[bytes]] | None


@attrs.frozen
class RetryPolicy:
    """How a request that failed in a way worth retrying (a connection error, 408, 429, 500, 502,
    503, 504) is tried again: ``attempts`` in all, the first included, with exponential backoff
    from ``base_delay`` up to ``max_delay`` seconds."""

    attempts: int = 5  # tries in all, the first included
    base_delay: float = 0.5
    max_delay: float = 8.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (0 for the first): exponential backoff
        capped at ``max_delay``, less a random share of up to half (jitter)."""
        # Jitter keeps parallel layer downloads from retrying in lock step.
        return min(self.max_delay, self.base_delay * 2**attempt) * random.uniform(0.5, 1.0)


RETRY = RetryPolicy()  # module default; tests shorten it


class TransientError(RegistryError):
    """A failure worth retrying (network hiccup, registry overloaded or restarting)."""


def scope(repository: str, *actions: str) -> str:
    """The token scope that grants ``actions`` (``pull``, ``push``) on ``repository``:
    ``repository:<name>:<actions>``."""
    return f"repository:{repository}:{','.join(actions)}"


def insecure_by_default(registry: str) -> bool:
    """Docker treats loopback registries as insecure without being told (plain HTTP allowed)."""
    host = registry.rsplit(":", 1)[0] if not registry.endswith("]") else registry
    host = host.strip("[]")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _ssl_context(registry: str, ca_file: str | os.PathLike[str] | None) -> ssl.SSLContext:
    """System CAs, plus ``ca_file`` and Docker's per-registry /etc/docker/certs.d/<host>/*.crt."""
    extra = [os.fspath(ca_file)] if ca_file else []
    certs_d = os.path.join("/etc/docker/certs.d", registry)
    if os.path.isdir(certs_d):
        extra += [
            os.path.join(certs_d, n) for n in sorted(os.listdir(certs_d)) if n.endswith(".crt")
        ]
    return _context_trusting(tuple((path, _version(path)) for path in extra))


def _version(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None  # loading it says why
    return st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=16)
def _context_trusting(extra: tuple[tuple[str, tuple[int, int] | None], ...]) -> ssl.SSLContext:
    """A context with the system CAs and the ``extra`` CA files, made once per set of file
    versions: loading the system bundle takes ~20 ms, half of a pull that finds every layer in
    the store. (A context is safe to share between clients and threads once it is set up.)"""
    ctx = ssl.create_default_context()
    for path, _ in extra:
        try:
            ctx.load_verify_locations(cafile=path)
        except (OSError, ssl.SSLError) as e:
            raise RegistryError(
                f"cannot load CA certificate {path} ({e}): pass a PEM file"
            ) from None
    return ctx


def error_messages(resp: httpx.Response) -> str:
    """The registry's own explanation: its JSON ``errors`` list, or the start of the body;
    printable (see `printable`) whatever the registry put in it."""
    try:
        errors = resp.json().get("errors") or []
        text = "; ".join(f"{e.get('code', '')}: {e.get('message', '')}".strip(": ") for e in errors)
    except (ValueError, AttributeError, TypeError, RecursionError, httpx.ResponseNotRead):
        text = ""
    if not text:
        try:
            text = resp.text[:200].strip()
        except httpx.ResponseNotRead:
            text = ""
    return printable(text or resp.reason_phrase)


class RegistryClient:
    """``async with RegistryClient("host:5000") as c: r = await c.request("GET", ...)``."""

    def __init__(
        self,
        registry: str,
        *,
        insecure: bool = False,
        ca_file: str | os.PathLike[str] | None = None,
        auth: Credentials | tuple[str, str] | None = None,
        retry: RetryPolicy | None = None,
        timeout: float = 60.0,
        progress: ProgressRule | None = None,
    ) -> None:
        self.registry = registry
        self.progress = progress or bodies.PROGRESS
        self.insecure = insecure
        self.allow_http = insecure or insecure_by_default(registry)
        self.retry = retry or RETRY
        creds = coerce(auth)
        self.auth = Authenticator(
            registry, creds if creds is not None else credentials_for(registry), self.progress
        )
        # An explicitly insecure registry may also have a self-signed certificate (as in Docker).
        verify: ssl.SSLContext | bool = False if insecure else _ssl_context(registry, ca_file)
        self._settings: dict[str, Any] = {
            "verify": verify,
            # A read waits at most one progress period: the progress rule decides what then.
            "timeout": httpx.Timeout(
                timeout, connect=15.0, read=min(timeout, self.progress.period)
            ),
            "follow_redirects": True,  # blobs are often a redirect to object storage
            # Bodies are read raw against their limits: a compressed one could be 1000x larger.
            "headers": {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
            "limits": httpx.Limits(max_connections=16, max_keepalive_connections=8),
        }
        # An upload's answer may take a registry a while (it checks the digest of what it got,
        # object storage commits it): those wait the whole timeout, and sent bytes count as progress.
        self._upload_timeout = httpx.Timeout(timeout, connect=15.0)
        self.http = httpx.AsyncClient(
            **self._settings, event_hooks={"response": [skip_redirect_body_async]}
        )
        self._blocking: httpx.Client | None = None  # made on first use: only pulls need it
        self._blocking_lock = threading.Lock()
        self._base: str | None = None
        self._base_lock = anyio.Lock()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._blocking is not None:
            self._blocking.close()
        await self.http.aclose()

    # --- https or http -----------------------------------------------------------------------

    async def base_url(self) -> str:
        """``https://host`` or ``http://host``, found once by asking /v2/ (Docker's ping)."""
        async with self._base_lock:
            if self._base is None:
                self._base = await self._ping()
            return self._base

    async def _ping(self) -> str:
        host = _API_HOST.get(self.registry, self.registry)
        schemes = ("https", "http") if self.allow_http else ("https",)
        failures: list[str] = []
        watch = ProgressWatch(self.progress, f"the ping of registry {self.registry} (GET /v2/)")
        for attempt in range(self.retry.attempts):
            failures.clear()
            transient = False
            for s in schemes:
                try:
                    with self._no_redirect_loop("GET", f"{s}://{host}/v2/"), headers_in_time(watch):
                        resp = await self.http.send(
                            self.http.build_request("GET", f"{s}://{host}/v2/"), stream=True
                        )
                    resp = await read_async(
                        resp, error_limit(f"the answer of {s}://{host}/v2/"), watch
                    )
                except httpx.TransportError as e:
                    failures.append(_describe_transport(s, host, e))
                    transient = transient or isinstance(
                        e, (httpx.TimeoutException, httpx.ReadError)
                    )
                    continue
                # 200: open; 401: needs auth. Anything else is not a registry speaking this scheme
                # (a TLS port answers plain HTTP with 400, for instance).
                if resp.status_code in (200, 401):
                    return f"{s}://{host}"
                if resp.status_code in _TRANSIENT_STATUS:
                    transient = True
                failures.append(
                    f"{s}://{host}/v2/ answered HTTP {resp.status_code} ({error_messages(resp)})"
                )
            if not transient:
                break
            watch.check("; ".join(failures))
            await anyio.sleep(self.retry.delay(attempt))
        hint = (
            "check the address and that the registry is running"
            if self.allow_http
            else "check the address; for a registry without TLS pass insecure=True (--insecure)"
        )
        raise RegistryError(
            f"cannot talk to registry {self.registry}: {'; '.join(failures)}: {hint}"
        )

    # --- requests ----------------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        url: str,
        scopes: frozenset[str],
        headers: dict[str, str],
        body: Body,
        watch: ProgressWatch,
    ) -> httpx.Response:
        """One request with authentication: cached credentials first, one retry after a 401.
        Credentials go only to the registry's own origin (see `_own_origin`)."""
        own = self._own_origin(url)
        auth_header = await self.auth.header_for(self.http, scopes) if own else None
        for retried in (False, True):
            upload = callable(body)
            content = (
                _counted(body(), watch) if callable(body) else body
            )  # (mypy narrows by callable(), not `upload`)
            req = self.http.build_request(
                method,
                url,
                headers=_authorized(headers, auth_header),
                content=content,
                timeout=self._upload_timeout if upload else httpx.USE_CLIENT_DEFAULT,
            )
            # An upload's answer keeps its long timeout (above); every other answer's headers
            # arrive within a progress period.
            in_time = contextlib.nullcontext() if upload else headers_in_time(watch)
            with self._no_redirect_loop(method, url), in_time:
                resp = await self.http.send(req, stream=True)
            if resp.status_code != 401:
                return resp  # streamed: the caller reads its body
            resp = await read_async(
                resp, error_limit(f"the answer to {method} {httpx.URL(url).path}"), watch
            )
            if retried or not self._own_origin(str(resp.url)):
                break
            auth_header = await self.auth.on_unauthorized(self.http, resp, scopes, auth_header)
        raise self._refused(method, url, resp)

    def _own_origin(self, url: str) -> bool:
        """Whether ``url`` is on the registry's own origin (scheme, host and port), the only one
        its credentials and tokens were issued for. Docker's authorizer works the same way: it
        answers only challenges from the registry's ping, so an upload Location or a redirect to
        another host never gets the registry's Authorization header, and a 401 from there is
        not answered with the user's credentials. (httpx drops the header on redirects to
        another origin by itself.)"""
        return self._base is not None and _origin(url) == _origin(self._base)

    @contextlib.contextmanager
    def _no_redirect_loop(self, method: str, url: str) -> Iterator[None]:
        try:
            yield
        except httpx.TooManyRedirects:
            raise RegistryError(
                f"registry {self.registry} redirected {method} {httpx.URL(url).path} more than "
                f"{self.http.max_redirects} times (a redirect loop): the registry or the storage behind it "
                "is misconfigured; tell its operator"
            ) from None

    def _refused(self, method: str, url: str, resp: httpx.Response) -> AuthenticationError:
        if not self._own_origin(str(resp.url)):
            other = f"{resp.url.scheme}://{resp.url.netloc.decode('ascii')}"
            return AuthenticationError(
                f"registry {self.registry} sent {method} {httpx.URL(url).path} on to {other}, which asks for "
                "credentials: sandkit sends a registry's credentials only to the registry itself (as Docker "
                "does); the registry is misconfigured or hostile, tell its operator"
            )
        who = f"as {self.auth.credentials.username!r}" if self.auth.credentials else "anonymously"
        return AuthenticationError(
            f"registry {self.registry} refused {method} {httpx.URL(url).path} {who} ({error_messages(resp)}): "
            f"check the user name, password and permissions (`sandkit login {self.registry}`)"
        )

    async def url(self, path: str) -> str:
        """The absolute URL of ``path`` (/v2/...; an absolute URL is returned as it is)."""
        return path if path.startswith(("http://", "https://")) else await self.base_url() + path

    async def request(
        self,
        method: str,
        path: str,
        *,
        scopes: frozenset[str],
        headers: dict[str, str] | None = None,
        body: Body = None,
        limit: Limit | None = None,
    ) -> httpx.Response:
        """Send and read the response, retrying transient failures. ``path`` is /v2/... or an
        absolute URL (an upload Location). Status codes other than 401 are the caller's. A
        successful answer's body is read against ``limit`` (none given: only its start, as of
        every other answer, which only ever explains an error); see bodies.py."""
        url = await self.url(path)
        what = f"{method} {httpx.URL(url).path}"
        watch = ProgressWatch(
            self.progress,
            f"{what} on registry {self.registry}",
            limit.size if limit and limit.exact else None,
        )

        async def once() -> httpx.Response:
            resp = await self._send(method, url, scopes, headers or {}, body, watch)
            success = limit is not None and 200 <= resp.status_code < 300
            resp = await read_async(
                resp, limit if success and limit else error_limit(f"the answer to {what}"), watch
            )
            if resp.status_code in _TRANSIENT_STATUS:
                raise TransientError(
                    f"{method} {resp.url.path} answered HTTP {resp.status_code} ({error_messages(resp)})"
                )
            return resp

        return await self.with_retries(once, what, watch)

    @property
    def blocking(self) -> httpx.Client:
        """The sync client, with the same settings, for the threads that apply layers as they
        download them (see download.py). Its connections read bodies in big pieces (transport.py)."""
        with self._blocking_lock:
            if self._blocking is None:
                transport = LargeReadTransport(
                    verify=self._settings["verify"], limits=self._settings["limits"]
                )
                self._blocking = httpx.Client(
                    **self._settings,
                    transport=transport,
                    event_hooks={"response": [skip_redirect_body]},
                )
            return self._blocking

    def open_in_thread(
        self,
        url: str,
        *,
        scopes: frozenset[str],
        headers: dict[str, str],
        loop: anyio.lowlevel.EventLoopToken,
        watch: ProgressWatch,
    ) -> httpx.Response:
        """A streamed GET sent with the sync client from a thread other than the loop's; the
        loop (``loop``, its anyio token) authenticates it: one token cache for every request.
        No retries here: the caller resumes with Range requests. Failures worth retrying raise
        TransientError."""
        own = self._own_origin(url)
        auth_header = (
            anyio.from_thread.run(self.auth.header_for, self.http, scopes, token=loop)
            if own
            else None
        )
        for retried in (False, True):
            blocking = self.blocking
            request = blocking.build_request("GET", url, headers=_authorized(headers, auth_header))
            try:
                with (
                    self._no_redirect_loop("GET", url),
                    headers_by(time.monotonic() + self.progress.period),
                ):
                    resp = blocking.send(request, stream=True)
            except HeadersTooSlow:
                raise watch.headers_late() from None
            except httpx.TransportError as e:
                raise TransientError(
                    _describe_transport(url.split(":", 1)[0], self.registry, e)
                ) from None
            if resp.status_code not in _TRANSIENT_STATUS and resp.status_code != 401:
                return resp
            resp = read_sync(
                resp, error_limit(f"the answer to GET {httpx.URL(url).path}"), watch
            )  # for error_messages
            if resp.status_code != 401:
                raise TransientError(
                    f"GET {resp.url.path} answered HTTP {resp.status_code} ({error_messages(resp)})"
                )
            if retried or not self._own_origin(str(resp.url)):
                break
            auth_header = anyio.from_thread.run(
                self.auth.on_unauthorized, self.http, resp, scopes, auth_header, token=loop
            )
        raise self._refused("GET", url, resp)

    async def with_retries(
        self, fn: Callable[[], Awaitable[Any]], what: str, watch: ProgressWatch
    ) -> Any:
        """Run ``fn`` again after transient failures, with exponential backoff and jitter, while
        ``watch`` sees enough progress."""
        for attempt in range(self.retry.attempts):
            try:
                return await fn()
            except (TransientError, httpx.TransportError) as e:
                last = (
                    e
                    if isinstance(e, TransientError)
                    else TransientError(_describe_transport("", self.registry, e))
                )
                watch.check(last)
                if attempt + 1 < self.retry.attempts:
                    await anyio.sleep(self.retry.delay(attempt))
        raise RegistryError(
            f"{what} on registry {self.registry} kept failing after {self.retry.attempts} attempts: {last}; "
            "check that the registry is up and reachable, then try again"
        )


async def _counted(chunks: AsyncIterator[bytes], watch: ProgressWatch) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        watch.advance(len(chunk))
        yield chunk


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(url: str) -> tuple[str, str, int | None]:
    u = httpx.URL(url)
    return u.scheme, u.host, u.port or _DEFAULT_PORTS.get(u.scheme)


def _authorized(headers: dict[str, str], auth_header: str | None) -> dict[str, str]:
    return {**headers, "Authorization": auth_header} if auth_header else headers


def _describe_transport(scheme: str, host: str, e: Exception) -> str:
    # httpx often wraps the informative error (ssl.SSLCertVerificationError, OSError) without
    # repeating its text: collect the whole cause chain.
    texts, seen = [], set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if str(cur) and str(cur) not in texts and str(cur) != type(cur).__name__:
            texts.append(str(cur))
        cur = cur.__cause__ or cur.__context__
    text = "; ".join(texts) or type(e).__name__
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return (
            f"the TLS certificate of {host} could not be verified ({text}): pass ca_file= (--ca-file) "
            "with the CA that signed it, or mark the registry insecure"
        )
    if "WRONG_VERSION_NUMBER" in text or "wrong version number" in text:
        return f"{host} does not speak TLS ({scheme})"
    kinds: dict[type[Exception], str] = {
        httpx.ConnectError: "cannot connect",
        httpx.ConnectTimeout: "connection timed out",
    }
    kind = kinds.get(type(e), "connection failed")
    return f"{kind} to {scheme + '://' if scheme else ''}{host} ({type(e).__name__}: {text})"
