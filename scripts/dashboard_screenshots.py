"""Screenshots of the dashboard's pages for docs/dashboard.md (docs/img/dashboard_*.png).

    python scripts/dashboard_screenshots.py [--out docs/img] [--rows 6000]

Fills a log with 24 hours of synthetic traffic (``tierwise.testing.dashboard``), serves
``tierwise dashboard``'s app over it, signs in with an admin key in Debian's headless chromium
(Playwright) and photographs each page at 1280 px, and the overview at phone width.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

ADMIN = "sk-demo-admin"
PAGES = (("overview", "#ov-requests"), ("quality", "#q-rated"), ("whatif", "#wi-spend"), ("decisions", "#dec-rows tbody tr"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs/img")
    ap.add_argument("--rows", type=int, default=6000)
    ap.add_argument("--chromium", default="/usr/bin/chromium")
    args = ap.parse_args()

    from playwright.sync_api import sync_playwright

    from tierwise.config import Pyramid
    from tierwise.dashboard.context import from_pyramid
    from tierwise.dashboard.standalone import create_app
    from tierwise.gateway.keys import Keys
    from tierwise.testing.dashboard import KEYS, Server, fill_log, write_demo_pyramid

    tmp = Path(tempfile.mkdtemp(prefix="tierwise-shots-"))
    log = fill_log(tmp / "log.sqlite", args.rows, seed=21)
    pyramid = Pyramid.load(write_demo_pyramid(tmp / "pyramid.yaml", log.url, api_keys=KEYS, admin_keys=[ADMIN]))
    app = create_app(log.url, from_pyramid(pyramid), Keys(pyramid, log.url))
    args.out.mkdir(parents=True, exist_ok=True)
    with Server(app) as server, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=["--no-sandbox"])
        for width, height, suffix, pages in ((1280, 900, "", PAGES), (390, 844, "_phone", PAGES[:1])):
            page = browser.new_page(viewport={"width": width, "height": height}, device_scale_factor=1)
            page.goto(server.url + "/dashboard/login")
            page.fill("input[name=key]", ADMIN)
            page.click("button[type=submit]")
            for name, ready in pages:
                page.click(f"nav a[data-page={name}]")
                page.wait_for_selector(ready)
                if name == "whatif":
                    page.focus("#wi-slider")
                    for _ in range(6):
                        page.keyboard.press("ArrowRight")  # a knob past the current one: both markers show
                if name == "decisions":
                    page.locator("#dec-rows tbody tr[data-id]").nth(3).click()
                    page.wait_for_selector("#dec-details")
                page.wait_for_timeout(400)
                shot = args.out / f"dashboard_{name}{suffix}.png"
                page.screenshot(path=str(shot), full_page=name != "decisions")
                print(shot)
            page.close()
        browser.close()


if __name__ == "__main__":
    main()
