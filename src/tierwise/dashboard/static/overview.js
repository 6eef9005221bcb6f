// tierwise dashboard: Overview (requests, spend, savings, traffic share over time, latency, failures).
"use strict";

(function () {
  const el = TW.el, f = TW.fmt;

  function kpis(o) {
    const st = o.stats, best = o.best_single, r = o.rates;
    const saved = st.saved_usd;
    return el("div", { class: "kpis", id: "ov-kpis" },
      TW.kpi("Requests", TW.value(f.int(st.requests), st.requests, { id: "ov-requests" }),
        el("span", {}, TW.value(f.int(st.answered), st.answered, { id: "ov-answered" }), " answered"), "kpi-requests"),
      TW.kpi("Spend", TW.value(f.usd(st.cost_usd), st.cost_usd, { id: "ov-cost" }),
        st.forwarded_cost_usd || st.unanswered_cost_usd ? el("span", {}, "incl. ",
          st.forwarded_cost_usd ? [TW.value(f.usd(st.forwarded_cost_usd), st.forwarded_cost_usd,
            { id: "ov-forwarded" }), " embeddings/completions"] : null,
          st.forwarded_cost_usd && st.unanswered_cost_usd ? ", " : null,
          // requests that paid for model calls but got no answer (a failed cascade, a cut stream)
          st.unanswered_cost_usd ? [TW.value(f.usd(st.unanswered_cost_usd), st.unanswered_cost_usd,
            { id: "ov-unanswered" }), " without an answer"] : null) : "routed and forwarded answers"),
      TW.kpi("Saved vs always " + (st.baseline_model || "the largest"),
        TW.value(f.usd(saved), saved, { id: "ov-saved", class: "value " + (saved >= 0 ? "good" : "bad") }),
        (st.unpriced_models || []).length
          ? el("span", { id: "ov-unpriced" }, "no price for " + st.unpriced_models.join(", ") + " in this pyramid (--config)")
          : el("span", {}, TW.value(f.pct(st.saved_fraction), st.saved_fraction, { id: "ov-saved-fraction" }), " of ",
            TW.value(f.usd(st.baseline_cost_usd), st.baseline_cost_usd, { id: "ov-baseline" }))),
      TW.kpi("Saved vs best single" + (best.model ? " (" + best.model + ")" : ""),
        TW.value(f.usd(best.saved_usd), best.saved_usd, { id: "ov-saved-best",
          class: "value " + ((best.saved_usd || 0) >= 0 ? "good" : "bad") }),
        best.model ? f.pct(best.saved_fraction) + " of " + f.usd(best.cost_usd) : "no router scores in range"),
      TW.kpi("Latency p50 / p99", TW.value(f.ms(st.latency_ms_p50), st.latency_ms_p50, { id: "ov-p50" }),
        el("span", {}, "p99 ", TW.value(f.ms(st.latency_ms_p99), st.latency_ms_p99, { id: "ov-p99" }))),
      TW.kpi("Routing p50 / p99", TW.value(f.ms(st.route_ms_p50), st.route_ms_p50, { id: "ov-route-p50" }),
        el("span", {}, "p99 ", TW.value(f.ms(st.route_ms_p99), st.route_ms_p99, { id: "ov-route-p99" }))),
      TW.kpi("Errors", TW.value(f.pct(r.error), r.error, { id: "ov-error-rate" }), "of requests: no answer"),
      TW.kpi("Fallbacks", TW.value(f.pct(r.fallback), r.fallback, { id: "ov-fallback-rate" }),
        el("span", {}, TW.value(f.int(st.fallbacks), st.fallbacks, { id: "ov-fallbacks" }), " in ",
          TW.value(f.int(st.fallback_requests), st.fallback_requests, { id: "ov-fallback-requests" }), " requests")),
      TW.kpi("Cascade escalations", TW.value(f.pct(r.cascade_escalation), r.cascade_escalation, { id: "ov-escalation" }),
        f.int(o.cascade.requests) + " cascade requests, " + f.int(o.cascade.models_called) + " model calls"));
  }

  function traffic(o, box) {
    const ser = o.series, names = TW.byTier(Object.keys(ser.models));
    if (!ser.starts.length || !names.length) return TW.clear(box, el("p", { class: "note", text: "No answered requests in this range." }));
    const areas = TW.stackedShares(ser.starts, ser.step, ser.models, names);
    const totals = ser.starts.map((_, i) => names.reduce((a, n) => a + ser.models[n][i], 0) + ser.unanswered[i]);
    const errors = ser.starts.map((t, i) => [t + ser.step / 2, totals[i] ? ser.unanswered[i] / totals[i] : null]);
    TW.plot(box, { height: 230, label: "traffic share per model over time", areas,
      lines: [{ name: "unanswered (share of all requests)", color: "#b3261e", points: errors, dashed: true }],
      x: { min: ser.starts[0], max: ser.starts[ser.starts.length - 1] + ser.step, fmt: (v) => f.clock(v, ser.step) },
      y: { min: 0, max: 1, fmt: (v) => Math.round(v * 100) + "%" },
      legend: [...names.map((n) => ({ name: n, color: TW.color(n) })), { name: "unanswered", color: "#b3261e", dashed: true }] });
    box.append(el("p", { class: "note" }, `Share of answered requests per ${ser.step >= 3600 ? ser.step / 3600 + " h" : ser.step / 60 + " min"} bucket.`));
  }

  function latency(o, box) {
    const rows = o.models.filter((m) => m.requests);
    if (!rows.length) return TW.clear(box, el("p", { class: "note", text: "No latencies in this range." }));
    const bars = [];
    for (const m of rows) {
      bars.push({ y: m.latency_ms_p50 || 0, color: TW.color(m.model), label: "p50", title: m.model + " p50 " + f.ms(m.latency_ms_p50) });
      bars.push({ y: m.latency_ms_p99 || 0, color: TW.color(m.model), label: "p99", title: m.model + " p99 " + f.ms(m.latency_ms_p99) });
    }
    TW.plot(box, { height: 200, label: "latency p50 and p99 per model", bars, y: { fmt: (v) => f.ms(v) },
      legend: rows.map((m) => ({ name: m.model, color: TW.color(m.model) })) });
  }

  function breaker(b) {
    if (!b) return "–";
    const title = b.state === "closed" ? "" : `${b.consecutive_failures} consecutive failures; retry in ${b.retry_in_s}s`;
    return el("span", { class: "pill " + b.state, title }, b.state.replace("_", "-") + (b.trips ? ` · ${b.trips} trips` : ""));
  }

  function models(o) {
    const withBreakers = !!o.breakers;
    const head = ["model", "requests", "share", "tokens in", "tokens out", "spend", "p50", "p99", "failed over", ...(withBreakers ? ["breaker"] : [])];
    const rows = o.models.map((m) => el("tr", { "data-model": m.model },
      el("td", {}, el("i", { class: "swatch", "data-color": TW.color(m.model) }), m.model),
      el("td", { class: "num" }, TW.value(f.int(m.requests), m.requests, { class: "value model-requests" })),
      el("td", { class: "num" }, TW.value(f.pct(m.share), m.share, { class: "value model-share" })),
      el("td", { class: "num" }, f.int(m.tokens_in)), el("td", { class: "num" }, f.int(m.tokens_out)),
      el("td", { class: "num" }, TW.value(f.usd(m.cost_usd), m.cost_usd, { class: "value model-cost" })),
      el("td", { class: "num" }, f.ms(m.latency_ms_p50)), el("td", { class: "num" }, f.ms(m.latency_ms_p99)),
      el("td", {}, Object.entries(m.failed_over || {}).map(([k, v]) => `${v} ${k}`).join(", ") || "–"),
      withBreakers ? el("td", {}, breaker(m.breaker)) : null));
    return TW.table(head, rows, { id: "ov-models" });
  }

  function breakdown(title, counts, id) {
    const total = Object.values(counts).reduce((a, b) => a + b, 0) || 1;
    return TW.card(title, TW.table(["", "requests", "share"], Object.entries(counts).map(([k, v]) => el("tr", {},
      el("td", {}, k), el("td", { class: "num" }, f.int(v)), el("td", { class: "num" }, f.pct(v / total)))), { id }));
  }

  TW.pages.overview = {
    title: "Overview",
    every: 5,
    async render(root) {
      const o = await TW.api("overview");
      const trafficBox = el("div", { id: "ov-traffic" }), latencyBox = el("div", { id: "ov-latency" });
      const st = o.stats;
      TW.clear(root, kpis(o),
        el("div", { class: "grid-2" }, TW.card("Traffic share per model", trafficBox), TW.card("Latency per model", latencyBox)),
        TW.card("Models", models(o), el("p", { class: "note" },
          `Savings re-price every routed answer's tokens at the baseline model's prices; the best single model is the one with the highest mean predicted quality over the latest ${f.int(o.best_single.sample)} routed requests. Embeddings and legacy completions are not routed and not in the baselines.`)),
        el("div", { class: "grid-2" }, breakdown("Status", st.status, "ov-status"), breakdown("APIs", st.surfaces, "ov-surfaces")));
      traffic(o, trafficBox);
      latency(o, latencyBox);
      for (const sw of root.querySelectorAll(".swatch[data-color]")) sw.style.background = sw.dataset.color;
    },
  };
})();
