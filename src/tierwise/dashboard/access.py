"""Who may see what on the dashboard (pages and JSON API alike).

* Keys configured (the gateway's ``api_keys`` / ``admin_keys`` / ``keys:`` / ``tierwise keys``):
  every request needs one, as ``Authorization: Bearer <key>`` (scripts) or the session cookie the
  sign-in form sets (browsers). An admin key sees every request; a client key only its own (the
  log's ``key_hash``): totals, decisions, feedback.
* No key configured: the dashboard answers loopback clients only (and nobody a proxy forwarded
  from elsewhere), since anyone who reaches it would see everything.

The cookie holds no key: it is ``key_hash.admin.expiry`` signed with a secret stored in the decision
log's database (table ``secrets``, made by whichever process asks first), so every worker and
replica serving the same log accepts a cookie any of them signed; it is re-checked against the live
key set on every request, so a revoked key's session ends within the gateway's key refresh.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import sys
import threading
import time
from dataclasses import dataclass

from starlette.requests import Request

from ..errors import AuthError, RequestError
from ..gateway.guard import Guard, key_hash

__all__ = ["Access", "Viewer", "is_loopback", "COOKIE", "SESSION_S"]

COOKIE = "tierwise_dashboard"
SESSION_S = 12 * 3600


class LocalOnly(RequestError):
    status, type, code = 403, "permission_error", "localhost_only"


@dataclass(frozen=True)
class Viewer:
    """Who is looking (``key_hash`` None on an open dashboard) and whether they may see every key's requests."""

    key_hash: str | None
    admin: bool

    def sees(self, requested_key: str | None) -> str | None:
        """The key filter for a query: an admin's choice (None = all keys), a client's own key."""
        return requested_key if self.admin else self.key_hash


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


# headers in which proxies name the client they forward (nginx's X-Real-IP, CDNs' own)
_CLIENT_HEADERS = ("x-forwarded-for", "x-real-ip", "x-client-ip", "true-client-ip", "cf-connecting-ip",
                   "x-original-forwarded-for")


def _host_part(value: str) -> str:
    """``host`` of ``host[:port]`` / ``[v6]:port`` / a bare IPv6 address."""
    value = value.strip().strip('"')
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    if value.count(":") == 1:
        return value.split(":", 1)[0]
    return value


def _forwarded_from_elsewhere(request: Request) -> bool:
    """A proxy on this machine forwarding a remote client: a client address that is not loopback
    (X-Forwarded-For, X-Real-IP, ..., ``Forwarded: for=``), or a host the client asked for that is
    not this machine (X-Forwarded-Host, ``Forwarded: host=``)."""
    hosts: list[str] = []
    for name in _CLIENT_HEADERS:
        for value in request.headers.getlist(name):
            hosts += value.split(",")
    for value in request.headers.getlist("x-forwarded-host"):
        hosts += value.split(",")
    for value in request.headers.getlist("forwarded"):
        for part in value.replace(",", ";").split(";"):  # elements by ",", their pairs by ";"
            key, _, v = part.strip().partition("=")
            if key.strip().lower() in ("for", "host"):
                hosts.append(v)
    return any(_host_part(h) and not is_loopback(_host_part(h)) for h in hosts)


SECRET_NAME = "dashboard_session"


class Access:
    """``log_url``: the decision log whose ``secrets`` table holds the cookie-signing secret, so every
    process serving that log signs alike (None, or a log that cannot be written: a secret of this
    process, said on stderr)."""

    def __init__(self, guard: Guard | None, log_url: str | None = None):
        self.guard = guard
        self.log_url = log_url
        self._secret_value: bytes | None = None
        self._secret_lock = threading.Lock()
        if log_url:
            self._secret  # now, not in the event loop at the first sign-in

    @property
    def _secret(self) -> bytes:
        if self._secret_value is None:
            with self._secret_lock:
                if self._secret_value is None:
                    self._secret_value = self._load_secret()
        return self._secret_value

    def _load_secret(self) -> bytes:
        if self.log_url and self.log_url != "off":
            from ..decision_log.dialect import Dialect

            dialect = Dialect(self.log_url)
            problem = None
            for _ in range(2):  # a concurrent first creation may collide once
                try:
                    con = dialect.connect()
                    try:
                        return bytes.fromhex(dialect.shared_secret(con, SECRET_NAME))
                    finally:
                        con.close()
                except Exception as exc:
                    problem = f"{type(exc).__name__}: {exc}"
            print(f"tierwise: dashboard: cannot keep the session secret in the log ({problem}); sessions are "
                  "signed by this process only (other workers and replicas will not accept them)",
                  file=sys.stderr, flush=True)
        return secrets.token_bytes(32)

    @property
    def open(self) -> bool:
        return self.guard is None or self.guard.open

    def describe(self) -> str:
        """For the start-up line."""
        if self.open:
            return "dashboard: no keys configured, so it answers localhost only"
        return "dashboard: sign in with a key (admin keys see every request, client keys their own)"

    def viewer(self, request: Request) -> Viewer:
        """The viewer of ``request``, or AuthError (401) / LocalOnly (403)."""
        if self.open:
            client = request.client.host if request.client else None
            if not is_loopback(client) or _forwarded_from_elsewhere(request):
                raise LocalOnly("the dashboard of a gateway without keys answers localhost only; configure "
                                "api_keys/admin_keys to open it to other machines")
            return Viewer(None, True)
        assert self.guard is not None
        if request.headers.get("authorization") or request.headers.get("x-api-key"):
            client = self.guard.check_auth(request)
            return Viewer(client.key_hash, client.admin)
        session = self._verify(request.cookies.get(COOKIE, ""))
        if session is None:
            raise AuthError("sign in with an API key (or send 'Authorization: Bearer <key>')")
        return session

    # -- the browser session ---------------------------------------------------------------------

    def sign_in(self, key: str) -> str | None:
        """The session cookie's value for a valid ``key``, else None."""
        if self.open or self.guard is None:
            return None
        h = key_hash(key.strip()) if key.strip() else ""
        if h not in self.guard.api_keys:
            return None
        payload = f"{h}.{int(h in self.guard.admin_keys)}.{int(time.time() + SESSION_S)}"
        return f"{payload}.{self._sign(payload)}"

    def _sign(self, payload: str) -> str:
        mac = hmac.new(self._secret, payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def _verify(self, cookie: str) -> Viewer | None:
        parts = cookie.split(".")
        if len(parts) != 4 or self.guard is None:
            return None
        payload, mac = ".".join(parts[:3]), parts[3]
        if not hmac.compare_digest(mac, self._sign(payload)):
            return None
        h, _, expiry = parts[:3]
        if not expiry.isdigit() or int(expiry) < time.time() or h not in self.guard.api_keys:
            return None  # expired, or the key was revoked since
        return Viewer(h, h in self.guard.admin_keys)
