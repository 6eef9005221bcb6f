"""Prometheus metrics, fed by the engine's finished request records (an engine listener)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from ..engine.record import RequestRecord


class Metrics:
    """Per-app registry, so several gateways (tests, benches) can live in one process."""

    def __init__(self, prices: dict[str, tuple[float, float]] | None = None) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter("tierwise_requests", "Requests by answering model and HTTP status",
                                ["model", "status"], registry=r)
        self.latency = Histogram("tierwise_request_latency_seconds", "End-to-end request latency", ["model"],
                                 registry=r, buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120))
        self.route_latency = Histogram("tierwise_routing_decision_seconds", "Time the router took to decide",
                                       registry=r, buckets=(1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, .01, .05))
        self.fallbacks = Counter("tierwise_fallbacks", "Model calls that failed and fell back to another model",
                                 ["model", "reason"], registry=r)
        self.tokens = Counter("tierwise_tokens", "Tokens by model and direction", ["model", "direction"], registry=r)
        self.cost = Counter("tierwise_cost_usd", "Spend in USD by model (pyramid prices)", ["model"], registry=r)
        self.breaker_open = Gauge("tierwise_circuit_open", "1 while a model's circuit breaker keeps it out "
                                  "(0.5 half-open: one probe allowed)", ["model"], registry=r)
        self.breaker_trips = Gauge("tierwise_circuit_trips", "Times a model's circuit breaker opened",
                                   ["model"], registry=r)
        self.in_flight = Gauge("tierwise_in_flight", "Requests being answered now", registry=r)
        self.log_rows = Gauge("tierwise_log_rows", "Decision-log rows by fate since start (written, lost "
                              "after retries, dropped on a full queue, queued now)", ["fate"], registry=r)
        self.route_calls = Counter("tierwise_routing_batches", "Router calls (each decides the routed requests that "
                                   "arrived together; decisions / batches is the mean batch), by where they ran "
                                   "(the event loop, or the router's own process)", ["where"], registry=r)
        self.route_decisions = Counter("tierwise_routing_decisions", "Routing decisions made", registry=r)
        self.router_process = Gauge("tierwise_router_process", "1 while a router process makes the decisions "
                                    "of batched routed requests (router_process)", registry=r)
        self._routed_seen = (0, 0, 0)
        self.log_ok = Gauge("tierwise_log_healthy", "1 while the decision log writes every row", registry=r)

    def refresh(self, engine, log=None) -> None:
        """Gauges read at scrape time from the engine's and the log's live state."""
        if log is not None:
            h = log.health()
            for fate, key in (("written", "rows_written"), ("lost", "rows_lost"), ("dropped", "rows_dropped"),
                              ("queued", "queued")):
                self.log_rows.labels(fate).set(h[key])
            self.log_ok.set(1.0 if h["status"] == "ok" else 0.0)
        for s in engine.slots:
            state = s.breaker.state
            self.breaker_open.labels(s.name).set({"closed": 0.0, "half_open": 0.5}.get(state, 1.0))
            self.breaker_trips.labels(s.name).set(s.breaker.trips)
        self.in_flight.set(engine.pending)
        b = engine.batcher
        sent = b.remote.sent if b.remote is not None else 0
        seen, self._routed_seen = self._routed_seen, (b.batches, b.decisions, sent)
        if b.batches >= seen[0] and b.decisions >= seen[1] and sent >= seen[2]:  # (a new router counts anew)
            self.route_calls.labels("process").inc(sent - seen[2])
            self.route_calls.labels("loop").inc(b.batches - seen[0] - (sent - seen[2]))
            self.route_decisions.inc(b.decisions - seen[1])
        self.router_process.set(1.0 if b.remote is not None and b.remote.alive else 0.0)

    def observe(self, rec: RequestRecord) -> None:
        label = rec.model or "none"
        self.requests.labels(label, str(rec.status)).inc()
        self.latency.labels(label).observe(rec.latency_ms / 1000)
        if rec.route_ms:
            self.route_latency.observe(rec.route_ms / 1000)
        for f in rec.fallbacks:
            self.fallbacks.labels(f["model"], f["reason"]).inc()
        if rec.router.startswith("failed:"):
            self.fallbacks.labels("router", "router_error").inc()
        # Spend is counted whatever the outcome (a cascade whose last model failed, a stream cut
        # mid-answer: the calls made were paid for, budgets charge them, `tierwise stats` counts them).
        # A cascade spent tokens on every model it called: count them where they were spent.
        spent = ([(s["model"], s["tokens_in"], s["tokens_out"], s["cost_usd"]) for s in rec.cascade_chain]
                 if rec.cascade_chain else [(label, rec.tokens_in, rec.tokens_out, rec.cost_usd)])
        answered = rec.status == 200 and bool(rec.model)
        for name, t_in, t_out, cost in spent:
            if not answered and not (t_in or t_out or cost):
                continue  # nothing was spent (a refused request, a call that failed)
            self.tokens.labels(name or "none", "in").inc(t_in or 0)
            self.tokens.labels(name or "none", "out").inc(t_out or 0)
            self.cost.labels(name or "none").inc(cost or 0.0)
