// tierwise dashboard: What-if (the cost/quality curve at other knobs, a slider, the config line).
"use strict";

(function () {
  const el = TW.el, f = TW.fmt;
  let data = null;

  function mixBar(mix) {
    const bar = el("div", { class: "mix", role: "img", "aria-label": "traffic mix" });
    for (const [m, share] of Object.entries(mix)) {
      if (share <= 0) continue;
      const part = el("span", { title: `${m}: ${f.pct(share)}` });
      part.style.width = 100 * share + "%";
      part.style.background = TW.color(m);
      bar.append(part);
    }
    return bar;
  }

  function curve(box, w, selected) {
    const pts = w.points.filter((p) => p.quality !== null);
    const marks = [
      ...w.singles.filter((s) => s.quality !== null).map((s) => ({ x: s.spend_usd, y: s.quality, color: TW.color(s.model),
        shape: "diamond", r: 5, label: "always " + s.model, title: `always ${s.model}: ${f.usd(s.spend_usd)}, quality ${f.num(s.quality)}` })),
    ];
    if (w.actual.quality !== null) marks.push({ x: w.actual.spend_usd, y: w.actual.quality, color: "#1d2330", r: 5,
      title: `what the log did: ${f.usd(w.actual.spend_usd)}, quality ${f.num(w.actual.quality)}` });
    if (w.current_index !== null && w.points[w.current_index].quality !== null) {
      const c = w.points[w.current_index];
      marks.push({ x: c.spend_usd, y: c.quality, color: "#e9a23b", r: 7, cls: "current",
        title: `current knob ${f.knob(c.knob)}: ${f.usd(c.spend_usd)}` });
    }
    const s = w.points[selected];
    if (s.quality !== null) marks.push({ x: s.spend_usd, y: s.quality, color: "#2f5bd3", r: 7, cls: "selected",
      title: `knob ${f.knob(s.knob)}: ${f.usd(s.spend_usd)}, quality ${f.num(s.quality)}` });
    const qs = [...pts.map((p) => p.quality), ...marks.map((m) => m.y)];
    const ylo = Math.max(0, Math.min(...qs) - 0.05), yhi = Math.min(1, Math.max(...qs) + 0.03);
    TW.plot(box, { height: 300, label: "spend against predicted quality over knobs",
      lines: [{ name: "at each knob", color: "#2f5bd3", points: pts.map((p) => [p.spend_usd, p.quality]) }], points: marks,
      x: { fmt: (v) => f.usd(v), pad: 0.04 }, y: { min: ylo, max: yhi, fmt: (v) => v.toFixed(2) }, marginRight: 110,
      legend: [{ name: "what the range would have cost at each knob", color: "#2f5bd3" }, { name: "current knob", color: "#e9a23b" },
        { name: "slider's knob", color: "#2f5bd3" }, { name: "what the log did", color: "#1d2330" },
        { name: "always one model (◆)", color: "#9aa3b2" }] });
  }

  function selection(w, i) {
    const p = w.points[i];
    const delta = p.spend_usd - w.actual.spend_usd;
    return el("div", {},
      el("div", { class: "whatif-values" },
        TW.kpi("Knob", TW.value(f.knob(p.knob), p.knob, { id: "wi-knob" }), i === w.current_index ? "the current knob" : w.rule + " rule"),
        TW.kpi("Spend", TW.value(f.usd(p.spend_usd), p.spend_usd, { id: "wi-spend" }),
          el("span", { class: delta <= 0 ? "good" : "bad" }, (delta <= 0 ? "" : "+") + f.usd(delta) + " vs logged " + f.usd(w.actual.spend_usd))),
        TW.kpi("Predicted quality", TW.value(f.num(p.quality), p.quality, { id: "wi-quality" }),
          "logged: " + f.num(w.actual.quality)),
        TW.kpi("Traffic mix", el("div", { id: "wi-mix" }, mixBar(p.mix)),
          Object.entries(p.mix).map(([m, v]) => m + " " + f.pct(v, 0)).join(" · "))),
      el("h2", { text: "To run at this knob" }),
      el("p", { class: "note", text: "In the pyramid YAML:" }), el("pre", { id: "wi-yaml" }, p.yaml),
      el("p", { class: "note", text: "or per request, as the model name:" }), el("pre", { id: "wi-model" }, `model="${p.model}"`));
  }

  function update(i) {
    TW.state.whatifKnob = data.points[i].knob;
    TW.clear(document.getElementById("wi-selection"), selection(data, i));
    curve(document.getElementById("wi-curve"), data, i);
  }

  function nearest(w, knob) {
    if (knob === undefined || knob === null) return w.current_index ?? Math.floor(w.points.length / 2);
    let best = 0;
    w.points.forEach((p, i) => { if (Math.abs(p.knob - knob) < Math.abs(w.points[best].knob - knob)) best = i; });
    return best;
  }

  TW.pages.whatif = {
    title: "What-if",
    every: 30,
    async render(root) {
      const w = await TW.api("whatif");
      data = w;
      if (!w.requests.redecided) {
        return TW.clear(root, TW.card("What-if", el("p", { text: "No routed requests with router scores in this range: nothing to re-decide." })));
      }
      const i = nearest(w, TW.state.whatifKnob);
      const slider = el("input", { type: "range", class: "slider", id: "wi-slider", min: 0, max: w.points.length - 1, step: 1,
        value: i, "aria-label": "knob", oninput: (e) => update(+e.target.value) });
      const ends = w.rule === "cost_weight" ? ["best quality", "cheapest"] : ["cheapest", "best quality"];
      const cur = w.current_knob === null ? "unknown" : f.knob(w.current_knob) + (w.current_knob_source ? ` (${w.current_knob_source})` : "");
      TW.clear(root,
        el("div", { class: "grid-2" },
          TW.card("Cost and predicted quality at other knobs", el("div", { id: "wi-curve" })),
          TW.card("Pick a knob", el("div", { class: "legend" }, el("span", { text: "← " + ends[0] }), el("span", { text: ends[1] + " →" })),
            slider, el("div", { id: "wi-selection" }))),
        TW.card("How this is computed", el("p", { class: "note" },
          `Each of the ${f.int(w.requests.redecided)} routed requests in range is decided again with the ${w.rule} rule from its logged per-model scores; ` +
          `${f.int(w.requests.kept)} other answered requests (a model named directly, the cascade, embeddings/completions) keep their logged cost (${f.usd(w.requests.kept_spend_usd)}). ` +
          `Current knob: ${cur}. ` + w.estimate + " " +
          (w.agreement.rate === null ? "" : `At each request's own logged knob, the what-if picks the logged model ${f.pct(w.agreement.rate)} of the time (${f.int(w.agreement.same)} of ${f.int(w.agreement.compared)}).`))));
      update(i);
    },
  };
})();
