"""Client keys kept in the database (next to the decision log), managed with ``tierwise keys``.

Only a hash of each key is stored; the key itself is printed once, when it is made. Every gateway
worker and replica reads the same table (and re-reads it every few seconds), so a key added or
revoked on one machine holds on all of them.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

from .decision_log.dialect import Dialect
from .errors import ConfigError
from .quota import KeyPolicy

_SCHEMA = """CREATE TABLE IF NOT EXISTS api_keys (
    key_hash TEXT PRIMARY KEY, name TEXT NOT NULL, created DOUBLE PRECISION NOT NULL,
    revoked DOUBLE PRECISION, admin INTEGER NOT NULL DEFAULT 0, usd_per_day DOUBLE PRECISION,
    usd_per_month DOUBLE PRECISION, requests_per_min INTEGER, tokens_per_min INTEGER,
    degrade_from DOUBLE PRECISION)"""
_FIELDS = ("usd_per_day", "usd_per_month", "requests_per_min", "tokens_per_min", "degrade_from")


def key_hash(key: str) -> str:
    """How a client key appears in the log (and in ownership checks): never the key itself.

    It lives here, not in the gateway, so the key store (``tierwise keys``) imports without the
    gateway package (which imports the key store through ``gateway.keys``); ``gateway.guard``
    re-exports it."""
    return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()[:24]


@dataclass
class StoredKey:
    key_hash: str
    name: str
    created: float
    revoked: float | None
    admin: bool
    policy: KeyPolicy

    def as_dict(self) -> dict[str, Any]:
        p = self.policy
        return {"name": self.name, "key_hash": self.key_hash, "created": self.created, "revoked": self.revoked,
                "admin": self.admin, **{f: getattr(p, f) for f in _FIELDS}}


def checked_policy(name: str, *, admin: bool = False, **limits: Any) -> KeyPolicy:
    """A key's limits checked by the rules of the YAML's ``keys:`` entries (``tierwise.config.KeyConfig``):
    a name, budgets and limits > 0, ``degrade_from`` in [0, 1], every number finite. A bad one is a
    :class:`ConfigError` naming the field (``param``), e.g. ``usd_per_day: must be > 0``."""
    from pydantic import ValidationError

    from .config import KeyConfig, _first_error

    unknown = sorted(set(limits) - set(_FIELDS))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown key limit (known: {', '.join(_FIELDS)})", param=unknown[0])
    try:
        # the key itself is not stored: a placeholder satisfies KeyConfig's "key or key_env"
        cfg = KeyConfig(name=name, key="sk-placeholder", admin=admin, **limits)
    except ValidationError as exc:
        field = next((str(p) for p in exc.errors()[0]["loc"] if isinstance(p, str)), None)
        raise ConfigError(_first_error(exc), param=field) from None
    return KeyPolicy(cfg.name, **{f: getattr(cfg, f) for f in _FIELDS})


class KeyStore:
    def __init__(self, url: str):
        self._d = Dialect(str(url))
        self.url = str(url)
        con = self._d.connect()
        try:
            con.execute(_SCHEMA)
            con.commit()
        finally:
            con.close()

    def _run(self, sql: str, params: tuple = (), *, fetch: bool = False) -> list[tuple]:
        con = self._d.connect()
        try:
            cur = con.cursor()
            cur.execute(sql.replace("?", self._d.ph), params)
            rows = list(cur.fetchall()) if fetch else []
            con.commit()
            return rows
        finally:
            con.close()

    def add(self, name: str, *, admin: bool = False, **limits: Any) -> str:
        """Make a new key named ``name``; returns the key (shown once, never stored)."""
        secret = "sk-tw-" + secrets.token_urlsafe(24)
        policy = checked_policy(name, admin=admin, **limits)
        if any(k.name == name and k.revoked is None for k in self.list()):
            raise ConfigError(f"{self.url}: a live key named {name!r} exists; revoke it first or pick another name")
        self._run("INSERT INTO api_keys (key_hash, name, created, revoked, admin, usd_per_day, usd_per_month, "
                  "requests_per_min, tokens_per_min, degrade_from) VALUES (?, ?, ?, NULL, ?, ?, ?, ?, ?, ?)",
                  (key_hash(secret), name, time.time(), int(admin), *(getattr(policy, f) for f in _FIELDS)))
        return secret

    def revoke(self, name: str) -> int:
        """Revoke the live key(s) named ``name``; returns how many."""
        live = [k for k in self.list() if k.name == name and k.revoked is None]
        for k in live:
            self._run("UPDATE api_keys SET revoked = ? WHERE key_hash = ?", (time.time(), k.key_hash))
        return len(live)

    def list(self, *, live_only: bool = False) -> list[StoredKey]:
        rows = self._run("SELECT key_hash, name, created, revoked, admin, usd_per_day, usd_per_month, "
                         "requests_per_min, tokens_per_min, degrade_from FROM api_keys ORDER BY created", fetch=True)
        out = []
        for h, name, created, revoked, admin, *lim in rows:
            limits = dict(zip(_FIELDS, lim))
            policy = KeyPolicy(name, **limits)
            out.append(StoredKey(h, name, float(created), None if revoked is None else float(revoked), bool(admin),
                                 policy))
        return [k for k in out if k.revoked is None] if live_only else out
