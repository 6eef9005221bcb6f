"""GBNF grammars that constrain the local backend's output: JSON mode, JSON schemas, forced tool calls.

* ``json_object``: llama.cpp's own ``JSON_GBNF`` (any JSON object; whitespace bounded).
* ``json_schema``: llama.cpp's JSON-schema converter (``LlamaGrammar.from_json_schema``).
* a forced tool call (``tool_choice`` ``"required"`` or a named function): the Hermes format the
  Qwen2.5 templates teach, ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``, with
  ``name`` one of the allowed tools and ``arguments`` matching that tool's ``parameters`` schema
  (any JSON object when the converter cannot handle the schema).

``LlamaGrammar.from_string`` does not parse anything (llama.cpp parses the text when the sampler is
built, and a grammar it rejects would silently be dropped from the chain), so every grammar is
compiled once here against the model's vocabulary; one llama.cpp cannot compile is the client's
error (HTTP 400). Compiled grammars are cached by their source (schema / tool list), LRU-bounded.
"""

from __future__ import annotations

import copy
import json
import threading
from collections import OrderedDict
from typing import Any

from ._llama_request import reject

_CACHE_SIZE = 128
_MAX_PARALLEL_CALLS = 8


def _lit(text: str) -> str:
    """A GBNF string literal."""
    return json.dumps(text, ensure_ascii=False)


def _converter():
    from llama_cpp.llama_grammar import SchemaConverter

    return SchemaConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)


# llama-cpp-python's converter lets JSON strings hold raw control characters (a newline inside a
# string), which is not JSON: ``json.loads`` refuses it. Strings get JSON's own character class.
_LOOSE_CHAR = 'char ::= [^"\\\\] |'
_JSON_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |'


def json_chars(gbnf: str) -> str:
    """``gbnf`` with its string characters restricted to what JSON allows unescaped."""
    return gbnf.replace(_LOOSE_CHAR, _JSON_CHAR)


def _convertible(schema: dict) -> bool:
    try:
        conv = _converter()
        conv.visit(conv.resolve_refs(copy.deepcopy(schema), "probe"), "")
        return True
    except Exception:
        return False


def tool_call_gbnf(tools: list[dict], *, parallel: bool, exact_args: bool = True) -> str:
    """The grammar of one (or, with ``parallel``, up to 8) Hermes tool-call blocks over ``tools``."""
    conv = _converter()
    alts = []
    for i, tool in enumerate(tools):
        fn = tool["function"]
        params = fn.get("parameters") or {"type": "object"}
        if not exact_args or not _convertible(params):
            params = {"type": "object"}
        args = conv.visit(conv.resolve_refs(copy.deepcopy(params), f"tool{i}"), f"tool{i}-args")
        alts.append(conv._add_rule(
            f"tool{i}-call",
            f'"{{" space {_lit(_lit("name"))} space ":" space {_lit(_lit(fn["name"]))} space "," space '
            f'{_lit(_lit("arguments"))} space ":" space {args} "}}"',
        ))
    conv._add_rule("call", " | ".join(alts))
    conv._add_rule("block", r'"<tool_call>\n" call "\n</tool_call>"')
    more = f' ("\\n" block){{0,{_MAX_PARALLEL_CALLS - 1}}}' if parallel else ""
    conv._rules["root"] = "block" + more
    return json_chars(conv.format_grammar())


class GrammarBook:
    """Compiled grammars for one model, cached by source."""

    def __init__(self, backend: str, vocab: Any):
        self.backend = backend
        self._vocab = vocab
        self._cache: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()

    def for_response_format(self, rf: dict | None):
        if rf is None:
            return None
        if rf["type"] == "json_object":
            from llama_cpp.llama_grammar import JSON_GBNF

            return self._get("json_object", lambda: JSON_GBNF)
        schema = rf["schema"]
        key = json.dumps(schema, ensure_ascii=False)

        def build() -> str:
            from llama_cpp.llama_grammar import json_schema_to_gbnf

            try:
                return json_chars(json_schema_to_gbnf(key))
            except Exception as exc:
                raise reject(self.backend, f"response_format json_schema cannot be turned into a grammar: "
                             f"{type(exc).__name__}: {exc}", param="response_format") from None

        return self._get("schema:" + key, build, what="response_format json_schema")

    def for_tools(self, tools: list[dict], *, parallel: bool):
        key = "tools:" + json.dumps([parallel, tools], ensure_ascii=False, sort_keys=True)
        try:
            return self._get(key, lambda: tool_call_gbnf(tools, parallel=parallel), what="tools")
        except Exception:  # an odd parameters schema: constrain the name, accept any arguments object
            return self._get(key + ":loose", lambda: tool_call_gbnf(tools, parallel=parallel, exact_args=False),
                             what="tools")

    def _get(self, key: str, build, *, what: str = "grammar"):
        from llama_cpp import LlamaGrammar

        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        gbnf = build()
        self._check(gbnf, what)
        grammar = LlamaGrammar.from_string(gbnf, verbose=False)
        with self._lock:
            self._cache[key] = grammar
            while len(self._cache) > _CACHE_SIZE:
                self._cache.popitem(last=False)
        return grammar

    def _check(self, gbnf: str, what: str) -> None:
        """Compile ``gbnf`` with llama.cpp's parser (as the sampler will); refuse it when it fails."""
        import llama_cpp

        sampler = llama_cpp.llama_sampler_init_grammar(self._vocab, gbnf.encode("utf-8"), b"root")
        if not sampler:
            raise reject(self.backend, f"{what}: llama.cpp cannot compile the grammar built from it",
                         param="response_format" if what.startswith("response_format") else "tools")
        llama_cpp.llama_sampler_free(sampler)
