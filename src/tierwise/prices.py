"""Model prices: USD per 1M input / output tokens.

Routing is only as good as the cost it trades against. Tables without cost columns get their
per-prompt cost from a price book (YAML or CSV) times token counts; a bundled book covers the
models of the shipped tables, and a parameter count (``size_b``, or "70B" in the name) gives a
documented fallback estimate so a new table still evaluates instead of failing.
"""

from __future__ import annotations

import csv
import functools
import math
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import yaml

from .errors import TierwiseError


class PriceError(TierwiseError, ValueError):
    def __init__(self, path: str | Path, problem: str):
        super().__init__(f"{path}: {problem}")


def token_cost(tokens_in, tokens_out, input_per_1m: float, output_per_1m: float):
    """USD for one request (or arrays of them): the one cost formula everything uses."""
    return (tokens_in * input_per_1m + tokens_out * output_per_1m) / 1e6


@dataclass(frozen=True)
class Price:
    input_per_1m: float
    output_per_1m: float

    def request_cost(self, tokens_in, tokens_out):
        return token_cost(np.asarray(tokens_in), np.asarray(tokens_out), self.input_per_1m, self.output_per_1m)


def estimate_tokens(text: str) -> int:
    """Cheap token estimate (~4 characters per token for English BPE vocabularies)."""
    return max(1, (len(text) + 3) // 4)


def price_from_size(size_b: float) -> Price:
    """Open-weight hosting price as a function of parameter count.

    A linear fit to typical serverless prices (7B ~ $0.2/M, 70B ~ $0.9/M tokens); only used when
    neither the table nor a price book gives a price, and reported as such.
    """
    per_1m = 0.1 + 0.0115 * float(size_b)
    return Price(per_1m, per_1m)


_SIZE_IN_NAME = re.compile(r"(?:(\d+)x)?(\d+(?:\.\d+)?)\s*[bB](?![a-zA-Z])")


def size_from_name(name: str) -> float | None:
    """Parameter count in billions read from a model name ("Llama-3-70B" -> 70, "8x7B" -> ~47)."""
    best = None
    for experts, size in _SIZE_IN_NAME.findall(name):
        value = float(size)
        if experts:
            value = int(experts) * value * 0.84  # MoE experts share attention weights
        best = value if best is None else max(best, value)
    return best


class PriceBook:
    """Prices by model name (case-insensitive), plus an assumed answer length."""

    def __init__(self, prices: dict[str, Price], output_tokens: int = 256, path: str = "<memory>"):
        self.prices = {k.lower(): v for k, v in prices.items()}
        self.output_tokens = int(output_tokens)
        self.path = path

    def __contains__(self, model: str) -> bool:
        return model.lower() in self.prices

    def lookup(self, model: str, size_b: float | None = None) -> tuple[Price | None, str]:
        """The price of ``model`` and a few words on where it came from."""
        hit = self.prices.get(model.lower())
        if hit is not None:
            return hit, f"price book {Path(self.path).name}"
        if size_b is None:
            size_b = size_from_name(model)
            if size_b is None:
                return None, ""
            return price_from_size(size_b), f"estimated from size in name ({size_b:g}B)"
        return price_from_size(size_b), f"estimated from size_b column ({size_b:g}B)"

    @classmethod
    def load(cls, path: str | Path) -> "PriceBook":
        path = Path(path)
        if not path.exists():
            raise PriceError(path, "price file not found")
        try:
            if path.suffix.lower() == ".csv":
                return cls._from_csv(path)
            return cls._from_yaml(path)
        except PriceError:
            raise
        except Exception as exc:
            raise PriceError(path, f"cannot be parsed ({type(exc).__name__}: {exc})") from None

    @classmethod
    def _from_yaml(cls, path: Path) -> "PriceBook":
        data = yaml.safe_load(path.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
            raise PriceError(path, "expected a mapping with a 'models:' section")
        prices = {}
        for name, entry in data["models"].items():
            if isinstance(entry, (int, float)) and not isinstance(entry, bool):  # shorthand: one price for both
                price = _positive(path, name, entry)
                prices[str(name)] = Price(price, price)
                continue
            if not isinstance(entry, dict) or "input" not in entry or "output" not in entry:
                raise PriceError(path, f"model {name!r} needs 'input' and 'output' (USD per 1M tokens)")
            prices[str(name)] = Price(_positive(path, name, entry["input"], "input"),
                                      _positive(path, name, entry["output"], "output"))
        return cls(prices, _answer_length(path, data.get("output_tokens", 256)), str(path))

    @classmethod
    def _from_csv(cls, path: Path) -> "PriceBook":
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            need = {"model", "input_per_1m", "output_per_1m"}
            if reader.fieldnames is None or not need <= set(reader.fieldnames):
                raise PriceError(path, f"CSV price table needs columns {sorted(need)}")
            prices = {
                row["model"]: Price(
                    _positive(path, row["model"], row["input_per_1m"], "input"),
                    _positive(path, row["model"], row["output_per_1m"], "output"),
                )
                for row in reader
            }
        return cls(prices, 256, str(path))


def _positive(path, name, value, which: str = "") -> float:
    """A price as given for model ``name``: a finite number >= 0 (USD per 1M tokens), or a PriceError
    naming the file, the model and the value."""
    what = f"{which} price of {name!r}" if which else f"price of {name!r}"
    try:
        if isinstance(value, bool):
            raise TypeError
        v = float(value)
    except (TypeError, ValueError):
        raise PriceError(path, f"{what} is not a number: {value!r}") from None
    if not math.isfinite(v) or v < 0:
        raise PriceError(path, f"{what} is {value!r}: a price must be a finite number >= 0 (USD per 1M tokens)")
    return v


def _answer_length(path, value) -> int:
    """``output_tokens``: the answer length assumed where a table records none, a whole number of tokens >= 1."""
    ok = (isinstance(value, int) and not isinstance(value, bool)) or (
        isinstance(value, float) and math.isfinite(value) and value.is_integer())
    if not ok or value < 1:
        raise PriceError(path, f"output_tokens is {value!r}: the assumed answer length must be a whole number "
                               "of tokens >= 1")
    return int(value)


@functools.lru_cache(maxsize=1)
def default_price_book() -> PriceBook:
    """The bundled book (``tierwise/data/prices.yaml``), covering the shipped tables' models."""
    ref = resources.files("tierwise") / "data" / "prices.yaml"
    with resources.as_file(ref) as p:
        return PriceBook.load(p)
