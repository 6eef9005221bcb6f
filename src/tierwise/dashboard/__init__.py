"""A web dashboard over the decision log: traffic, spend and savings, routing quality, a knob what-if,
and the decisions themselves (docs/dashboard.md).

* On the gateway: ``GET /dashboard`` (``register`` is called by :func:`tierwise.gateway.create_app`).
* Standalone over any log: ``tierwise dashboard --log PATH_OR_URL`` (:mod:`.standalone`).

Parts: :mod:`.sql` (read-only connections, the SQLite/Postgres differences, the scope every query
is filtered by), :mod:`.totals` + :mod:`.percentiles` + :mod:`.series` -> :mod:`.overview`,
:mod:`.quality`, :mod:`.whatif`, :mod:`.decisions`; :mod:`.access` (who sees what), :mod:`.api`
(the JSON endpoints), :mod:`.pages` (the page, its files, sign-in), ``static/`` (HTML, CSS, JS
with hand-rolled SVG charts: nothing from the network).
"""

from __future__ import annotations

from typing import Any

from .access import Access
from .api import Dashboard
from .context import Context, from_engine, from_pyramid

__all__ = ["register", "mount", "Dashboard", "Context", "from_engine", "from_pyramid"]


def mount(app: Any, log_url: str, context: Context, access: Access) -> Dashboard:
    """Add the dashboard's pages and API to ``app``."""
    from . import pages

    dash = Dashboard(log_url, context, access)
    dash.register(app)
    pages.register(app, access)
    app.state.dashboard = dash
    return dash


def register(app: Any, engine: Any, guard: Any, log: Any) -> Dashboard:
    """The gateway's dashboard: its engine's pyramid and breakers, its keys, its log."""
    return mount(app, log.url, from_engine(engine), Access(guard, log.url))
