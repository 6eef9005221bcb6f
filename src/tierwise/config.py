"""The pyramid: which models tierwise routes between, what they cost, and how the gateway runs.

One YAML file describes it (see ``examples/pyramid.yaml`` and ``docs/config.md``). Models are listed
cheapest first, because every decision rule reads "go up the pyramid only when it pays". Loading is
strict: unknown keys, duplicate names and bad values fail at once with one line naming the file and
the field (``pyramid.yaml: models[1].context_window: must be > 0``), so a typo never silently turns
into a default.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError

# The one place for defaults: the YAML keys below and the engine use these.
DEFAULT_LOG = "~/.cache/tierwise/decisions.sqlite"
DEFAULT_KNOB = 1.0
DEFAULT_CONTEXT = 4096
DEFAULT_TIMEOUT_S = 120.0
DEFAULT_MAX_BODY = 4 * 1024 * 1024
DEFAULT_MAX_PENDING = 1024  # requests waiting or running at once; past it: 503 at once, not a hang
# tokens the context-window check keeps free for the answer when the client sends no max_tokens
DEFAULT_ANSWER_RESERVE = 256
DEFAULT_COMPLETIONS_MAX_TOKENS = 16  # OpenAI's default for legacy /v1/completions (the local backend's too)
DEFAULT_BREAKER_FAILURES = 3  # consecutive failed calls that open a model's circuit breaker
DEFAULT_BREAKER_COOLDOWN_S = 30.0  # how long an open breaker keeps the model out before a probe
DEFAULT_BODY_TIMEOUT_S = 30.0  # a request body must arrive within this (slow bodies get a 408)
DEFAULT_HEADER_TIMEOUT_S = 10.0  # a request's headers must arrive within this of its first byte (408, closed)
DEFAULT_RESPONSES_TTL_DAYS = 30.0  # stored /v1/responses answers (previous_response_id) expire after this


def _cpu_count() -> int:
    return os.cpu_count() or 1


class ModelConfig(BaseModel):
    """One model of the pyramid: where it runs and what one token costs."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # every float finite

    name: str = Field(min_length=1)
    backend: Literal["llama_cpp", "openai"]
    # llama_cpp: a GGUF file, or one of the embedded models (tierwise.weights.EMBEDDED)
    path: Path | None = None
    embedded: str | None = None
    # openai: base URL (".../v1"), the remote model id, and the env var holding the key (if any)
    endpoint: str | None = None
    model: str | None = None
    api_key_env: str | None = None
    # USD per 1M tokens
    input_per_1m: float = Field(ge=0)
    output_per_1m: float = Field(ge=0)
    context_window: int = Field(DEFAULT_CONTEXT, gt=0)
    max_concurrency: int | None = Field(None, gt=0)
    timeout_s: float = Field(DEFAULT_TIMEOUT_S, gt=0)
    n_threads: int | None = Field(None, gt=0)
    tags: list[str] = Field(default_factory=list)
    # what the model can do (tools, json_object, json_schema, vision, audio, logprobs, n, completions,
    # embeddings, prefill); None = the backend's defaults (docs/config.md). Requests needing a capability
    # are routed only among models that declare it. ``embeddings`` alone marks an embedding model.
    capabilities: list[Literal["tools", "json_object", "json_schema", "vision", "audio", "logprobs", "n",
                               "completions", "embeddings", "prefill"]] | None = None
    # llama_cpp: load the GGUF for POST /v1/embeddings (an embedding model: no chat, no completions)
    embedding: bool = False
    # circuit breaker: open after this many consecutive failed calls (0 = never), probe after cooldown_s
    breaker_failures: int = Field(DEFAULT_BREAKER_FAILURES, ge=0)
    breaker_cooldown_s: float = Field(DEFAULT_BREAKER_COOLDOWN_S, gt=0)

    @field_validator("input_per_1m", "output_per_1m", mode="before")
    @classmethod
    def _not_a_boolean(cls, value: Any) -> Any:
        # lax mode reads `true` as 1.0; text stays allowed (PyYAML reads `3e-7` as a string)
        if isinstance(value, bool):
            raise ValueError(f"Input should be a valid number (got {value})")
        return value

    @field_validator("embedded")
    @classmethod
    def _known_embedded(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from .weights import EMBEDDED

        if value not in EMBEDDED:
            raise ValueError(f"unknown embedded model {value!r}; choose one of {sorted(EMBEDDED)}")
        return value

    @field_validator("endpoint")
    @classmethod
    def _http_endpoint(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"must start with http:// or https:// (got {value!r})")
        return value

    @model_validator(mode="after")
    def _backend_fields(self) -> "ModelConfig":
        if self.backend == "llama_cpp":
            if (self.path is None) == (self.embedded is None):
                raise ValueError("a llama_cpp model needs exactly one of 'path' (a .gguf file) or 'embedded'")
            for key in ("endpoint", "model", "api_key_env"):
                if getattr(self, key) is not None:
                    raise ValueError(f"'{key}' is for backend openai, not llama_cpp")
            if self.max_concurrency is None:
                self.max_concurrency = 1  # llama.cpp serves one request at a time per loaded copy
        else:
            if self.endpoint is None or self.model is None:
                raise ValueError("an openai model needs 'endpoint' (base URL) and 'model' (the remote model id)")
            for key in ("path", "embedded"):
                if getattr(self, key) is not None:
                    raise ValueError(f"'{key}' is for backend llama_cpp, not openai")
            if self.max_concurrency is None:
                self.max_concurrency = 16
        if self.n_threads is None:
            self.n_threads = _cpu_count()
        self._embedding_rules()
        return self

    def _embedding_rules(self) -> None:
        caps = set(self.capabilities or ())
        if self.embedding and self.backend != "llama_cpp":
            raise ValueError("'embedding' is for backend llama_cpp; an openai embedding model declares "
                             "`capabilities: [embeddings]`")
        if self.embedding and self.capabilities is not None and caps != {"embeddings"}:
            raise ValueError("a model with `embedding: true` serves POST /v1/embeddings only: leave out "
                             "`capabilities:` (or give `[embeddings]`)")
        if "embeddings" in caps and caps != {"embeddings"}:
            raise ValueError("an embedding model serves POST /v1/embeddings only: declare `capabilities: "
                             "[embeddings]` alone and list chat models as their own entries")
        if "embeddings" in caps and self.backend == "llama_cpp" and not self.embedding:
            raise ValueError("a llama_cpp model serves embeddings only when loaded for them: set `embedding: true`")

    @property
    def is_embedding(self) -> bool:
        """An embedding model: it answers POST /v1/embeddings only and is never routed chat."""
        return self.embedding or "embeddings" in (self.capabilities or ())

    def serves(self, endpoint: str) -> bool:
        """Whether the model answers ``POST /v1/<endpoint>`` (``embeddings`` or ``completions``), read
        from the config alone (both backends serve completions by default, embeddings only when marked)."""
        if endpoint == "embeddings" or self.is_embedding:
            return endpoint == "embeddings" and self.is_embedding
        return self.capabilities is None or endpoint in self.capabilities

    def api_key(self) -> str | None:
        """The API key from ``api_key_env``; read when a backend starts so a missing key fails loudly then."""
        if self.api_key_env is None:
            return None
        value = os.environ.get(self.api_key_env)
        if not value:
            raise ConfigError(
                f"model {self.name!r}: api_key_env: environment variable {self.api_key_env} is not set"
            )
        return value

    def gguf_path(self) -> Path:
        """The GGUF file to load: the configured path, or the embedded model assembled and verified."""
        if self.path is not None:
            return self.path
        from .weights import model_path

        return model_path(self.embedded or "")

    @property
    def blended_per_1m(self) -> float:
        return self.input_per_1m + self.output_per_1m


class KeyConfig(BaseModel):
    """One client key with its limits (``keys:``); keys can also live in the database (`tierwise keys`)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # every float finite

    name: str = Field(min_length=1)
    key: str | None = Field(None, min_length=8)  # the key itself ... or:
    key_env: str | None = None  # the env var holding it (read at start)
    admin: bool = False
    usd_per_day: float | None = Field(None, gt=0)
    usd_per_month: float | None = Field(None, gt=0)
    requests_per_min: int | None = Field(None, gt=0)
    tokens_per_min: int | None = Field(None, gt=0)
    degrade_from: float | None = Field(0.8, ge=0, le=1)  # budget fraction where routing turns cheaper; null: never

    @model_validator(mode="after")
    def _one_key(self) -> "KeyConfig":
        if (self.key is None) == (self.key_env is None):
            raise ValueError(f"key {self.name!r}: give exactly one of 'key' or 'key_env'")
        return self

    def secret(self) -> str:
        if self.key is not None:
            return self.key
        value = os.environ.get(self.key_env or "", "").strip()
        if len(value) < 8:
            raise ConfigError(f"keys[{self.name}].key_env: environment variable {self.key_env} is not set "
                              "(or shorter than 8 characters)")
        return value


class Pyramid(BaseModel):
    """Models cheapest first, plus the router and gateway settings that go with them."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # every float finite

    models: list[ModelConfig] = Field(min_length=1)
    router: str | None = None  # path to a router artifact; None = the gateway's default
    cascade: str | None = None  # thresholds file from `tierwise cascade calibrate`; serves model "tierwise:cascade"
    knob: float | str = DEFAULT_KNOB  # a number, or a target resolved by a trained router ("quality=0.95")
    rule: Literal["cost_weight", "threshold"] = "cost_weight"
    log: str = DEFAULT_LOG  # SQLite path, postgres:// URL, or off

    @field_validator("log", mode="before")
    @classmethod
    def _log_off(cls, value: Any) -> Any:
        return "off" if value is False else value  # YAML reads a bare `off` as false
    api_keys: list[str] | None = None  # keys clients must present to the gateway
    api_keys_env: str | None = None  # or: env var with comma-separated keys
    admin_keys: list[str] | None = None  # keys that may also act on other keys' requests (feedback, dashboard)
    admin_keys_env: str | None = None
    body_timeout_s: float = Field(DEFAULT_BODY_TIMEOUT_S, gt=0)  # a body must arrive within this (408)
    header_timeout_s: float = Field(DEFAULT_HEADER_TIMEOUT_S, gt=0)  # a request's headers, from its first byte
    max_body_bytes: int = Field(DEFAULT_MAX_BODY, gt=0)
    max_pending: int = Field(DEFAULT_MAX_PENDING, gt=0)
    max_pending_per_key: int | None = Field(None, gt=0)  # one client key's requests in flight at most (429 past it)
    keys: list[KeyConfig] = Field(default_factory=list)  # client keys with budgets and rate limits
    redis: str | None = None  # redis:// URL: counters shared by every worker and replica (needed with --workers > 1)
    responses_ttl_days: float = Field(DEFAULT_RESPONSES_TTL_DAYS, gt=0)  # stored Responses API answers
    # the model answering /v1/embeddings and /v1/completions for model "tierwise" (those are not routed)
    default_embeddings_model: str | None = None
    default_completions_model: str | None = None
    # routing decisions in a process of their own (engine/router_process.py): auto = for a trained router
    # when the machine has a core more than the gateway has workers
    router_process: Literal["auto", "on", "off"] = "auto"

    @field_validator("router_process", mode="before")
    @classmethod
    def _on_off(cls, value: Any) -> Any:
        return {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else value  # YAML's on/off

    @model_validator(mode="after")
    def _pyramid_rules(self) -> "Pyramid":
        seen: dict[str, int] = {}
        for i, m in enumerate(self.models):
            if m.name in seen:
                raise ValueError(f"models[{i}].name: duplicate model name {m.name!r} (also models[{seen[m.name]}])")
            seen[m.name] = i
        chat = [(i, m) for i, m in enumerate(self.models) if not m.is_embedding]  # the tiers (not embedding models)
        if not chat:
            raise ValueError("models: needs at least one chat model (embedding models serve /v1/embeddings "
                             "beside them)")
        for (_, prev), (i, cur) in zip(chat, chat[1:]):
            if cur.blended_per_1m < prev.blended_per_1m:
                raise ValueError(
                    f"models[{i}]: {cur.name!r} costs less than {prev.name!r} (input+output "
                    f"{cur.blended_per_1m:g} < {prev.blended_per_1m:g} USD/1M); list models cheapest first"
                )
        if isinstance(self.knob, str):
            try:
                self.knob = float(self.knob)
            except ValueError:
                pass
        if isinstance(self.knob, float) and not math.isfinite(self.knob):  # a quoted "nan" / "inf"
            raise ValueError(f"knob: must be a finite number (got {self.knob!r})")
        if isinstance(self.knob, str):
            from .decision import parse_target

            try:
                parse_target(self.knob)
            except ValueError:
                raise ValueError(f"knob: {self.knob!r} is neither a number nor a target like quality=0.95, "
                                 "share=0.3, cost=0.0004, budget=0.5") from None
        elif self.rule == "threshold" and not 0.0 <= self.knob <= 1.0001:
            raise ValueError("knob: the threshold rule needs a knob in [0, 1]")
        elif self.rule == "cost_weight" and self.knob < 0:
            raise ValueError("knob: the cost_weight rule needs a knob >= 0")
        self._default_models(seen)
        for name in ("api_keys", "admin_keys"):
            keys = getattr(self, name)
            if keys is not None and getattr(self, name + "_env") is not None:
                raise ValueError(f"{name}: give either '{name}' or '{name}_env', not both")
            if keys is not None and (not keys or any(not k.strip() for k in keys)):
                raise ValueError(f"{name}: an empty key list or an empty key would turn auth off silently; "
                                 f"list real keys, or remove '{name}' for an open gateway (localhost only)")
        return self

    def _default_models(self, index: dict[str, int]) -> None:
        for endpoint in ("embeddings", "completions"):
            key = f"default_{endpoint}_model"
            name = getattr(self, key)
            if name is None:
                continue
            if name not in index:
                raise ValueError(f"{key}: no model {name!r} in the pyramid (models: {', '.join(self.names)})")
            if not self.models[index[name]].serves(endpoint):
                hint = ("mark an embedding model with `capabilities: [embeddings]` (llama_cpp: `embedding: true`)"
                        if endpoint == "embeddings" else "name a chat model whose `capabilities:` include "
                        "completions (or leave `capabilities:` out)")
                raise ValueError(f"{key}: model {name!r} does not serve /v1/{endpoint}; {hint}")

    # ---- accessors -------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.models]

    @property
    def chat_models(self) -> list[ModelConfig]:
        """The pyramid's tiers, cheapest first: every model but the embedding models (what is routed,
        collected, cascaded and trained on)."""
        return [m for m in self.models if not m.is_embedding]

    @property
    def chat_names(self) -> list[str]:
        return [m.name for m in self.chat_models]

    def model(self, name: str) -> ModelConfig:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(f"no model {name!r} in the pyramid (models: {', '.join(self.names)})")

    def client_keys(self) -> list[str] | None:
        """Keys the gateway accepts, or None for an open gateway (meant for localhost only)."""
        return self._keys("api_keys")

    def admin_client_keys(self) -> list[str] | None:
        return self._keys("admin_keys")

    def _keys(self, name: str) -> list[str] | None:
        env = getattr(self, name + "_env")
        if env is None:
            return getattr(self, name)
        raw = os.environ.get(env)
        if not raw:
            raise ConfigError(f"{name}_env: environment variable {env} is not set")
        keys = [k.strip() for k in raw.split(",") if k.strip()]
        if not keys:
            raise ConfigError(f"{name}_env: environment variable {env} holds no keys (got {raw!r}); "
                              f"set comma-separated keys, or remove '{name}_env' for an open gateway")
        return keys

    def log_target(self) -> str:
        """The decision log as a postgres URL or an absolute SQLite path (``~`` expanded)."""
        if self.log.startswith(("postgres://", "postgresql://")) or self.log.strip().lower() == "off":
            return self.log.strip() if self.log.strip().lower() != "off" else "off"
        return str(Path(self.log).expanduser())

    # ---- loading ---------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | Path) -> "Pyramid":
        """Read and validate a pyramid YAML file; relative paths are taken from the file's folder."""
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"{path}: pyramid file not found")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            raise ConfigError(f"{path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping with a 'models:' list")
        return cls.from_dict(data, source=str(path), base_dir=path.parent)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "<pyramid>", base_dir: Path | None = None) -> "Pyramid":
        try:
            pyramid = cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"{source}: {_first_error(exc)}") from None
        base = base_dir or Path.cwd()
        for i, m in enumerate(pyramid.models):
            if m.path is not None:
                p = m.path.expanduser()
                m.path = p if p.is_absolute() else (base / p).resolve()
                if not m.path.is_file():
                    raise ConfigError(f"{source}: models[{i}].path: file not found: {m.path}")
        if pyramid.router is not None:
            r = Path(pyramid.router).expanduser()
            pyramid.router = str(r if r.is_absolute() else (base / r).resolve())
        if pyramid.cascade is not None:
            c = Path(pyramid.cascade).expanduser()
            pyramid.cascade = str(c if c.is_absolute() else (base / c).resolve())
        return pyramid


def _first_error(exc: ValidationError) -> str:
    """One line for the first problem: ``models[1].context_window: must be > 0``."""
    err = exc.errors()[0]
    kind, ctx = err["type"], err.get("ctx") or {}
    parts = err["loc"]
    if kind == "finite_number" and parts[-1:] == ("float",):
        parts = parts[:-1]  # a union's member (``knob: float | str``), not a key of the file
    loc = ""
    for part in parts:
        if isinstance(part, int):
            loc += f"[{part}]"
        else:
            loc += ("." if loc else "") + str(part)
    if kind == "greater_than":
        msg = f"must be > {ctx.get('gt')}"
    elif kind == "greater_than_equal":
        msg = f"must be >= {ctx.get('ge')}"
    elif kind == "finite_number":
        msg = f"must be a finite number (got {err.get('input')!r})"
    elif kind == "extra_forbidden":
        msg = "unknown key"
    elif kind == "missing":
        msg = "required"
    elif kind == "literal_error":
        msg = f"must be one of {ctx.get('expected')} (got {err.get('input')!r})"
    elif kind == "too_short" and err["loc"] == ("models",):
        msg = "needs at least one model"
    elif kind == "value_error":
        msg = str(ctx.get("error", err["msg"]))
    else:
        msg = f"{err['msg']} (got {err.get('input')!r})"
    return f"{loc}: {msg}" if loc else msg


def default_pyramid() -> Pyramid:
    """The embedded local pyramid: SmolLM2-135M < Qwen2.5-Coder-0.5B < Qwen2.5-Coder-1.5B on CPU.

    Prices come from the bundled price book so the defaults and offline evaluation agree. The
    router is the shipped one trained on these models' own outcomes, when the package has it.
    """
    from .prices import default_price_book
    from .weights import EMBEDDED

    book = default_price_book()
    models = []
    for model_id in EMBEDDED:
        price, _ = book.lookup(model_id)
        if price is None:  # pragma: no cover - the bundled book lists every embedded model
            raise ConfigError(f"{book.path}: no price for embedded model {model_id!r}")
        models.append(
            {
                "name": model_id,
                "backend": "llama_cpp",
                "embedded": model_id,
                "input_per_1m": price.input_per_1m,
                "output_per_1m": price.output_per_1m,
                "context_window": DEFAULT_CONTEXT,
                "tags": ["local", "embedded"],
            }
        )
    shipped = default_router_path()
    spec = {"models": models, "router": str(shipped) if shipped.exists() else None}
    return Pyramid.from_dict(spec, source="<default pyramid>")


def default_router_path() -> Path:
    """The router trained on the embedded pyramid's own outcomes (scripts/build_default_router.sh)."""
    return Path(__file__).resolve().parent / "assets" / "default_router.tw"
