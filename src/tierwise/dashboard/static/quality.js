// tierwise dashboard: Quality (feedback per model and over time, calibration, thin margins).
"use strict";

(function () {
  const el = TW.el, f = TW.fmt;
  const THRESHOLDS = [0.02, 0.05, 0.1];

  function calibration(q, box) {
    const bins = q.calibration.bins;
    if (!bins.length) return TW.clear(box, el("p", { class: "note", text: "No rated requests with a router score in this range." }));
    const biggest = Math.max(...bins.map((b) => b.rated));
    const points = bins.map((b) => ({ x: b.mean_predicted, y: b.mean_feedback, r: 3 + 7 * Math.sqrt(b.rated / biggest),
      color: "#3b7dd8", title: `predicted ${f.num(b.lo, 1)}–${f.num(b.hi, 1)}: mean predicted ${f.num(b.mean_predicted)}, mean feedback ${f.num(b.mean_feedback)} (${b.rated} rated)` }));
    TW.plot(box, { height: 260, label: "calibration: predicted quality against feedback", diagonal: true, points,
      lines: [{ name: "observed", color: "#3b7dd8", points: bins.map((b) => [b.mean_predicted, b.mean_feedback]) }],
      x: { min: 0, max: 1, fmt: (v) => v.toFixed(1) }, y: { min: 0, max: 1, fmt: (v) => v.toFixed(1) },
      legend: [{ name: "mean feedback per bin of predicted score (size: ratings)", color: "#3b7dd8" }, { name: "perfectly calibrated", color: "#9aa3b2", dashed: true }] });
    box.append(el("p", { class: "note" }, "Above the diagonal the router was too cautious, below it too confident. Expected calibration error: ",
      TW.value(f.num(q.calibration.expected_calibration_error), q.calibration.expected_calibration_error, { id: "q-ece" }), "."));
  }

  function overTime(q, box) {
    const models = Object.keys(q.over_time.models);
    if (!models.length) return TW.clear(box, el("p", { class: "note", text: "No feedback in this range." }));
    const step = q.over_time.step;
    TW.plot(box, { height: 230, label: "mean feedback per model over time",
      lines: models.map((m) => ({ name: m, color: TW.color(m), points: q.over_time.models[m].map((p) => [p[0] + step / 2, p[1]]) })),
      points: models.flatMap((m) => q.over_time.models[m].map((p) => ({ x: p[0] + step / 2, y: p[1], r: 3, color: TW.color(m),
        title: `${m} ${f.clock(p[0], step)}: ${f.num(p[1])} over ${p[2]} ratings` }))),
      x: { min: q.range.t0, max: q.range.t1, fmt: (v) => f.clock(v, step) }, y: { min: 0, max: 1, fmt: (v) => v.toFixed(1) },
      legend: models.map((m) => ({ name: m, color: TW.color(m) })) });
  }

  function margins(q, box) {
    const mg = q.margins;
    if (!mg.requests) return TW.clear(box, el("p", { class: "note", text: "No routed requests with two or more scores in this range." }));
    const bars = mg.histogram.map((n, i) => ({ y: n, color: (i + 1) * mg.width <= mg.threshold + 1e-9 ? "#d4577b" : "#8e9bb3",
      label: i % 5 === 0 ? f.num(i * mg.width, 2) : "", title: `margin ${f.num(i * mg.width, 2)}–${f.num((i + 1) * mg.width, 2)}${i === mg.histogram.length - 1 ? "+" : ""}: ${n} requests` }));
    TW.plot(box, { height: 200, label: "histogram of the top-two score margin", bars, y: { fmt: (v) => f.int(v) } });
    box.append(el("p", { class: "note" }, "Margin = best predicted score minus the second best; pink: below the threshold (close calls, where a small error in the scores changes the model)."));
  }

  function perModel(q) {
    return TW.table(["model", "rated", "mean feedback", "mean predicted", "gap"], q.models.map((m) => el("tr", { "data-model": m.model },
      el("td", {}, m.model), el("td", { class: "num" }, f.int(m.rated)),
      el("td", { class: "num" }, TW.value(f.num(m.mean_feedback), m.mean_feedback, { class: "value q-feedback" })),
      el("td", { class: "num" }, f.num(m.mean_predicted)),
      el("td", { class: "num" }, m.mean_predicted === null ? "–" : f.num(m.mean_predicted - m.mean_feedback)))), { id: "q-models" });
  }

  TW.pages.quality = {
    title: "Quality",
    every: 15,
    async render(root) {
      const thin = TW.state.thin || 0.05;
      const q = await TW.api("quality", { thin });
      const boxes = { cal: el("div", { id: "q-calibration" }), time: el("div", { id: "q-time" }), margin: el("div", { id: "q-margins" }) };
      const picker = el("select", { id: "q-thin", "aria-label": "thin-margin threshold", onchange: (e) => { TW.state.thin = +e.target.value; TW.show(false); } },
        THRESHOLDS.map((t) => el("option", { value: t, selected: t === thin }, "< " + t)));
      TW.clear(root,
        el("div", { class: "kpis" },
          TW.kpi("Rated requests", TW.value(f.int(q.rated), q.rated, { id: "q-rated" }), "latest rating per request"),
          TW.kpi("Mean feedback", TW.value(f.num(q.mean_feedback), q.mean_feedback, { id: "q-mean" }), "0 = bad, 1 = good"),
          TW.kpi("Calibration error", TW.value(f.num(q.calibration.expected_calibration_error), q.calibration.expected_calibration_error), "predicted vs feedback, weighted by bin"),
          TW.kpi("Thin margins", TW.value(f.pct(q.margins.thin_share), q.margins.thin_share, { id: "q-thin-share" }),
            el("span", {}, f.int(q.margins.thin) + " of " + f.int(q.margins.requests) + " routed, margin ", picker))),
        el("div", { class: "grid-2" }, TW.card("Predicted quality vs feedback", boxes.cal), TW.card("Feedback over time", boxes.time)),
        el("div", { class: "grid-2" }, TW.card("Feedback per model", perModel(q)), TW.card("Router margin", boxes.margin)));
      calibration(q, boxes.cal);
      overTime(q, boxes.time);
      margins(q, boxes.margin);
    },
  };
})();
