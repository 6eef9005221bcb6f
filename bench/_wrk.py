"""Driving the gateway with ``wrk`` (C, not the bottleneck): POST bodies, one or many in rotation."""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

_ONE = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
{auth}
wrk.body = {body}
"""

# many bodies, each connection walking the list from its own offset (distinct prompts)
_MANY = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
{auth}
local bodies = {{{bodies}}}
local i = 0
function setup(thread) thread:set("offset", math.random(1, #bodies)) end
function init(args) i = tonumber(offset) or 1 end
function request()
  i = i % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
"""


def _lua_str(s: str) -> str:
    return "[==[" + s + "]==]"


def script(tmp: Path, bodies: list[dict], key: str | None = None) -> Path:
    auth = f'wrk.headers["Authorization"] = "Bearer {key}"' if key else ""
    encoded = [json.dumps(b) for b in bodies]
    text = (_ONE.format(auth=auth, body=_lua_str(encoded[0])) if len(encoded) == 1 else
            _MANY.format(auth=auth, bodies=",\n".join(_lua_str(e) for e in encoded)))
    path = tmp / f"post-{time.monotonic_ns()}.lua"
    path.write_text(text)
    return path


def run(url: str, lua: Path, seconds: float, connections: int, warmup_s: int = 2) -> dict:
    """Requests/s, p50 latency (ms), non-2xx count and requests done (and in the warm-up), from one wrk run.

    wrk counts a request when its answer is read; ones still in flight when it stops are not
    counted (but reach the gateway): at most ``connections`` per run."""
    warm = ""
    if warmup_s:
        warm = subprocess.run(["wrk", "-t1", "-c8", f"-d{warmup_s}s", "-s", str(lua), url], capture_output=True,
                              text=True).stdout
    warm_done = re.search(r"(\d+) requests in", warm)
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{int(round(seconds))}s", "--latency", "-s",
                          str(lua), url], capture_output=True, text=True).stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if found is None:
        raise SystemExit(f"wrk printed no result:\n{out}")
    lat = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    done = re.search(r"(\d+) requests in", out)
    return {"rps": float(found.group(1)),
            "p50_ms": float(lat.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[lat.group(2)] if lat else float("nan"),
            "non2xx": int(errors.group(1)) if errors else 0, "requests": int(done.group(1)) if done else 0,
            "warmup_requests": int(warm_done.group(1)) if warm_done else 0}
