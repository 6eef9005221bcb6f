"""Test fixtures for tierwise's gateway, shared by the test suite and ``bench/``.

* :class:`StubBackend` (``stub.py``): a recording OpenAI-compatible stub server whose behaviour is
  chosen per request by ``model`` (echo, fail, stall, tools, rich, reject-400, ratelimit, ...).
* ``gateway.py``: ``write_pyramid`` (a YAML pyramid of stub-backed models), ``start_gateway`` /
  ``stop_gateway`` (a real ``tierwise serve`` process), :class:`Gateway`, and decision-log readers.

Nothing here is imported by the gateway itself.
"""

from .gateway import Gateway, free_port, log_row, log_rows, start_gateway, stop_gateway, write_pyramid
from .stub import StubBackend, schema_example, tool_call_arguments

__all__ = ["StubBackend", "schema_example", "tool_call_arguments", "Gateway", "free_port", "write_pyramid",
           "start_gateway", "stop_gateway", "log_rows", "log_row"]
