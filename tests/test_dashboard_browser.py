"""The dashboard in a real headless Chromium (Debian's ``chromium``, driven by Playwright): the
overview shows exactly what ``tierwise stats --json`` prints for the same log, the what-if slider
changes the spend shown, the decision table filters, a client key's pages hold only its requests,
pages refresh themselves, phone width works, and no page logs a console error."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone

import pytest

from tierwise.config import Pyramid
from tierwise.dashboard.context import from_pyramid
from tierwise.dashboard.standalone import create_app
from tierwise.decision_log import DecisionLog, summarize
from tierwise.gateway.guard import key_hash
from tierwise.gateway.keys import Keys
from tierwise.testing.dashboard import KEYS, Server, fill_log, write_demo_pyramid
from tierwise.testing.traffic import DEMO_TIERS, synthetic_requests

playwright = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install 'tierwise[dev]')")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(shutil.which("chromium") is None, reason="no chromium (apt-get install chromium)")

ADMIN = "sk-demo-admin"
PRICES = {t.name: (t.input_per_1m, t.output_per_1m) for t in DEMO_TIERS}


def usd(x: float) -> str:
    """core.js fmt.usd."""
    a, sign = abs(x), "-" if x < 0 else ""
    if a >= 1000:
        return f"{sign}${round(a):,}"
    return sign + "$" + (f"{a:.2f}" if a >= 1 else f"{a:.4f}" if a >= 0.01 else f"{a:.6f}")


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    d = tmp_path_factory.mktemp("browser")
    log = fill_log(d / "log.sqlite", 400, seed=11)
    cfg = write_demo_pyramid(d / "pyramid.yaml", log.url, api_keys=KEYS, admin_keys=[ADMIN])
    pyramid = Pyramid.load(cfg)
    app = create_app(log.url, from_pyramid(pyramid), Keys(pyramid, log.url))
    with Server(app) as server, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield {"url": server.url, "log": log, "cfg": cfg, "browser": browser}
        browser.close()


class Tab:
    """One signed-in browser tab that records every console error and page error."""

    def __init__(self, site, key: str, width: int = 1280, height: int = 900):
        self.context = site["browser"].new_context(viewport={"width": width, "height": height})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(site["url"] + "/dashboard")
        assert self.page.url.endswith("/dashboard/login")  # sent to the form, not shown any data
        self.page.fill("input[name=key]", key)
        self.page.click("button[type=submit]")
        self.page.wait_for_selector("#ov-requests")

    def go(self, name: str, ready: str) -> None:
        self.page.click(f"nav a[data-page={name}]")
        self.page.wait_for_selector(ready)

    def value(self, selector: str) -> float:
        return float(self.page.get_attribute(selector, "data-value"))

    def close(self) -> None:
        self.context.close()
        assert self.errors == []


@pytest.fixture()
def admin(site):
    tab = Tab(site, ADMIN)
    yield tab
    tab.close()


def _stats_json(site) -> dict:
    out = subprocess.run([sys.executable, "-c", "from tierwise.cli import main; main()", "stats", "--json", "--config",
                          str(site["cfg"]), "--log", site["log"].url], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def test_the_overview_shows_exactly_what_tierwise_stats_prints(site, admin):
    s = _stats_json(site)
    page = admin.page
    for sel, key in [("#ov-requests", "requests"), ("#ov-answered", "answered"), ("#ov-fallbacks", "fallbacks"),
                     ("#ov-fallback-requests", "fallback_requests")]:
        assert admin.value(sel) == s[key] and page.inner_text(sel) == f"{s[key]:,}", sel
    for sel, key in [("#ov-cost", "cost_usd"), ("#ov-saved", "saved_usd"), ("#ov-baseline", "baseline_cost_usd")]:
        assert admin.value(sel) == pytest.approx(s[key], rel=1e-9) and page.inner_text(sel) == usd(s[key]), sel
    assert admin.value("#ov-saved-fraction") == pytest.approx(s["saved_fraction"], rel=1e-9)
    assert page.inner_text("#ov-saved-fraction") == pct(s["saved_fraction"])
    for sel, key in [("#ov-p50", "latency_ms_p50"), ("#ov-p99", "latency_ms_p99"), ("#ov-route-p50", "route_ms_p50"),
                     ("#ov-route-p99", "route_ms_p99")]:
        assert admin.value(sel) == pytest.approx(s[key], rel=1e-9), sel
    assert f"always {s['baseline_model']}" in page.inner_text("#ov-kpis")
    for name, m in s["models"].items():
        row = f"#ov-models tr[data-model='{name}']"
        assert admin.value(f"{row} .model-requests") == m["requests"]
        assert admin.value(f"{row} .model-cost") == pytest.approx(m["cost_usd"], rel=1e-9)
        assert page.inner_text(f"{row} .model-share") == pct(m["share"])
    for code, n in s["status"].items():
        assert f"{code}\t{n:,}" in page.inner_text("#ov-status")
    assert page.locator("#ov-traffic svg polygon").count() == len(s["models"])  # one stacked area per model


def test_a_custom_range_narrows_the_overview(site, admin):
    rows = sorted(r.ts for r in site["log"].records)
    lo = datetime.fromtimestamp(rows[len(rows) // 3], timezone.utc).replace(second=0, microsecond=0)
    hi = datetime.fromtimestamp(rows[2 * len(rows) // 3], timezone.utc).replace(second=0, microsecond=0)
    page = admin.page
    page.evaluate("() => { window.__same_page = true; }")
    page.click(".ranges button[data-range=custom]")
    tz = page.evaluate("() => new Date().getTimezoneOffset()")
    as_local = lambda d: datetime.fromtimestamp(d.timestamp() - tz * 60, timezone.utc).strftime("%Y-%m-%dT%H:%M")
    page.fill("#from", as_local(lo))
    page.fill("#to", as_local(hi))
    page.click("#apply")
    log = DecisionLog(site["log"].url)
    want = summarize([r for r in log.rows() if lo.timestamp() <= r["ts"] < hi.timestamp()], PRICES)
    log.close()
    page.wait_for_function(f"() => document.querySelector('#ov-requests')?.dataset.value === '{want['requests']}'")
    assert admin.value("#ov-cost") == pytest.approx(want["cost_usd"], rel=1e-9)
    assert page.evaluate("() => window.__same_page") is True


def test_the_whatif_slider_changes_the_spend_and_the_config_line(site, admin):
    admin.go("whatif", "#wi-spend")
    page = admin.page
    at_current = admin.value("#wi-spend")
    assert page.inner_text("#wi-yaml") == "knob: 0.4" and page.inner_text("#wi-model") == 'model="tierwise:0.4"'
    assert "the current knob" in page.inner_text("#wi-selection")
    page.focus("#wi-slider")
    page.keyboard.press("Home")  # knob 0: the best predicted quality, whatever it costs
    dearest, best = admin.value("#wi-spend"), admin.value("#wi-quality")
    assert page.inner_text("#wi-yaml") == "knob: 0"
    page.keyboard.press("End")  # the largest knob: the cheapest model nearly always
    cheapest = admin.value("#wi-spend")
    assert dearest > at_current > cheapest
    assert page.inner_text("#wi-spend") == usd(cheapest)
    assert admin.value("#wi-quality") < best
    assert page.locator("#wi-curve svg circle.current").count() == 1


def test_the_decision_table_filters_pages_and_opens_a_row(site, admin):
    records = site["log"].records
    admin.go("decisions", "#dec-rows tbody tr")
    page = admin.page
    assert admin.value("#dec-total") == len(records)
    page.select_option("#dec-model", "large-70b")
    want = sum(1 for r in records if r.model == "large-70b")
    page.wait_for_function(f"() => document.querySelector('#dec-total')?.dataset.value === '{want}'")
    models = page.locator("#dec-rows tbody .dec-model").all_inner_texts()
    assert models and all(m.endswith("large-70b") for m in models)
    page.select_option("#dec-model", "")
    page.select_option("#dec-status", "error")
    want = sum(1 for r in records if r.status != 200)
    page.wait_for_function(f"() => document.querySelector('#dec-total')?.dataset.value === '{want}'")
    assert all(s != "200" for s in page.locator("#dec-rows tbody .dec-status").all_inner_texts())
    page.select_option("#dec-status", "")
    page.check("#dec-fallbacks")
    want = [r for r in records if r.fallbacks]
    page.wait_for_function(f"() => document.querySelector('#dec-total')?.dataset.value === '{len(want)}'")
    page.uncheck("#dec-fallbacks")
    page.wait_for_function(f"() => document.querySelector('#dec-total')?.dataset.value === '{len(records)}'")
    first = page.locator("#dec-rows tbody tr").first.get_attribute("data-id")
    page.click("#dec-next")
    page.wait_for_function(f"() => document.querySelector('#dec-rows tbody tr')?.dataset.id !== '{first}'")
    page.click("#dec-prev")
    page.wait_for_function(f"() => document.querySelector('#dec-rows tbody tr')?.dataset.id === '{first}'")
    page.locator("#dec-rows tbody tr").first.click()
    page.wait_for_selector("#dec-details")
    rec = next(r for r in records if r.id == first)
    assert rec.prompt and page.inner_text("#dec-prompt") == rec.prompt  # prompt logging was on for this log
    assert "Candidate scores" in page.inner_text("#dec-details")


def test_a_client_key_sees_only_its_own_requests_on_every_page(site):
    own = [r for r in site["log"].records if r.key_hash == key_hash(KEYS[0])]
    tab = Tab(site, KEYS[0])
    try:
        assert tab.value("#ov-requests") == len(own) < len(site["log"].records)
        assert tab.page.locator("#key").is_hidden()  # no key picker for a client key
        tab.go("decisions", "#dec-rows tbody tr")
        assert tab.value("#dec-total") == len(own)
        keys = set(tab.page.locator("#dec-rows tbody tr td[title]:nth-child(11)").evaluate_all("els => els.map(e => e.title)"))
        assert keys == {key_hash(KEYS[0])}
        tab.go("quality", "#q-rated")
        assert tab.value("#q-rated") == sum(1 for rid, _ in site["log"].feedback if rid in {r.id for r in own})
    finally:
        tab.close()


def test_pages_refresh_themselves_without_reloading(site, admin):
    page = admin.page
    page.evaluate("() => { window.__same_page = true; }")
    before = admin.value("#ov-requests")
    log = DecisionLog(site["log"].url)
    now = time.time()
    for i, rec in enumerate(synthetic_requests(7, DEMO_TIERS, start=now - 5, end=now, keys=[key_hash(ADMIN)], seed=99)):
        rec.id = f"live-{i}"
        log.record(rec)
    log.close()
    page.wait_for_function(f"() => document.querySelector('#ov-requests')?.dataset.value === '{int(before) + 7}'",
                           timeout=20_000)
    assert page.evaluate("() => window.__same_page") is True


@pytest.mark.parametrize("name,ready", [("overview", "#ov-requests"), ("quality", "#q-rated"), ("whatif", "#wi-spend"),
                                        ("decisions", "#dec-rows tbody tr")])
def test_every_page_fits_a_phone(site, name, ready):
    tab = Tab(site, ADMIN, width=390, height=844)
    try:
        if name != "overview":
            tab.go(name, ready)
        tab.page.wait_for_timeout(300)
        assert tab.page.evaluate("() => document.documentElement.scrollWidth") <= 391  # no sideways scrolling
    finally:
        tab.close()
