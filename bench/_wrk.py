"""Driving the gateway with ``wrk`` (C, not the bottleneck): POST bodies, one or many in rotation."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

from _proc import cpu_s, wait_port
from tierwise.testing import free_port

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


def run(url: str, lua: Path, seconds: float, connections: int, warmup_s: int = 2, pid: int | None = None) -> dict:
    """Requests/s, p50 latency (ms), non-2xx count and requests done (and in the warm-up), from one wrk run;
    with ``pid``, also that process tree's CPU ms per request during the run (``cpu_ms``).

    wrk counts a request when its answer is read; ones still in flight when it stops are not
    counted (but reach the gateway): at most ``connections`` per run."""
    warm = ""
    if warmup_s:
        warm = subprocess.run(["wrk", "-t1", "-c8", f"-d{warmup_s}s", "-s", str(lua), url], capture_output=True,
                              text=True).stdout
    warm_done = re.search(r"(\d+) requests in", warm)
    cpu0 = cpu_s(pid) if pid else 0.0
    out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{int(round(seconds))}s", "--latency", "-s",
                          str(lua), url], capture_output=True, text=True).stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if found is None:
        raise SystemExit(f"wrk printed no result:\n{out}")
    lat = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    done = re.search(r"(\d+) requests in", out)
    requests = int(done.group(1)) if done else 0
    return {"rps": float(found.group(1)),
            "p50_ms": float(lat.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[lat.group(2)] if lat else float("nan"),
            "non2xx": int(errors.group(1)) if errors else 0, "requests": requests,
            "warmup_requests": int(warm_done.group(1)) if warm_done else 0,
            "cpu_ms": (cpu_s(pid) - cpu0) * 1000 / max(1, requests) if pid else float("nan")}


_ANSWER = json.dumps({"id": "chatcmpl-nginx", "object": "chat.completion", "created": 0, "model": "echo",
                      "choices": [{"index": 0, "message": {"role": "assistant", "content": "4"},
                                   "finish_reason": "stop"}],
                      "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}})
_NGINX = """worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx.err warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 300s;
  client_body_temp_path {tmp}/body;
  server {{
    listen 127.0.0.1:{port};
    location / {{ default_type application/json; return 200 '{answer}'; }}
  }}
}}
"""


def start_nginx(tmp: Path):
    """A canned chat answer from nginx (C, one worker): a backend that costs the machine almost nothing,
    so the cores go to the gateway's workers (and wrk), not to a Python stub."""
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(_NGINX.format(tmp=tmp, port=port, answer=_ANSWER))
    p = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(tmp), "-c", str(conf)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, timeout=5.0)
    except RuntimeError:
        err = tmp / "nginx.err"
        raise SystemExit(f"nginx did not start: {err.read_text() if err.exists() else ''}") from None
    return p, port
