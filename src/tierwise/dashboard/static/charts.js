// tierwise dashboard: small hand-rolled SVG charts (no library, nothing from the network).
// plot(container, spec) draws axes, then any of: areas (stacked), lines, points, bars, vertical rules.
"use strict";

(function () {
  const el = TW.el;
  const svg = (tag, attrs, ...kids) => el("svg:" + tag, attrs, ...kids);

  function ticks(lo, hi, n) {
    if (!(hi > lo)) return [lo];
    const raw = (hi - lo) / Math.max(1, n);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
    return out;
  }

  function extent(values, pad) {
    const finite = values.filter((v) => v !== null && v !== undefined && isFinite(v));
    if (!finite.length) return [0, 1];
    let lo = Math.min(...finite), hi = Math.max(...finite);
    if (lo === hi) { lo -= 0.5 || 1; hi += 0.5; }
    const p = (hi - lo) * (pad || 0);
    return [lo - p, hi + p];
  }

  // spec: {height, x: {min, max, fmt, time, step}, y: {min, max, fmt}, areas, lines, points, bars, rules,
  //        diagonal, legend: [{name, color}], label}
  TW.plot = function plot(container, spec) {
    const width = Math.max(280, container.clientWidth || 600);
    const height = spec.height || 240;
    const m = { l: 58, r: spec.marginRight || 14, t: 12, b: 30 };
    const xs = [], ys = [];
    for (const a of spec.areas || []) for (const p of a.points) { xs.push(p[0]); ys.push(p[1], p[2]); }
    for (const l of spec.lines || []) for (const p of l.points) { xs.push(p[0]); ys.push(p[1]); }
    for (const p of spec.points || []) { xs.push(p.x); ys.push(p.y); }
    for (const b of spec.bars || []) { ys.push(b.y, 0); }
    const xe = extent(xs, spec.x?.pad || 0);
    const [x0, x1] = [spec.x?.min ?? xe[0], spec.x?.max ?? xe[1]];
    const [y0, y1] = [spec.y?.min ?? Math.min(0, extent(ys, 0.05)[0]), spec.y?.max ?? extent(ys, 0.08)[1]];
    const X = (v) => m.l + ((v - x0) / (x1 - x0 || 1)) * (width - m.l - m.r);
    const Y = (v) => height - m.b - ((v - y0) / (y1 - y0 || 1)) * (height - m.t - m.b);
    const xf = spec.x?.fmt || ((v) => String(v));
    const yf = spec.y?.fmt || ((v) => String(v));
    const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img",
      "aria-label": spec.label || "chart", class: "chart" });
    for (const t of ticks(y0, y1, 4)) {
      root.append(svg("line", { x1: m.l, x2: width - m.r, y1: Y(t), y2: Y(t), class: "grid" }),
        svg("text", { x: m.l - 6, y: Y(t) + 4, "text-anchor": "end", class: "tick" }, yf(t)));
    }
    const xt = spec.bars ? [] : ticks(x0, x1, Math.max(2, Math.floor((width - m.l) / 110)));
    for (const t of xt) root.append(svg("text", { x: X(t), y: height - 10, "text-anchor": "middle", class: "tick" }, xf(t)));
    root.append(svg("line", { x1: m.l, x2: width - m.r, y1: Y(y0), y2: Y(y0), class: "axis" }));
    if (spec.diagonal) root.append(svg("line", { x1: X(Math.max(x0, y0)), y1: Y(Math.max(x0, y0)),
      x2: X(Math.min(x1, y1)), y2: Y(Math.min(x1, y1)), class: "diagonal" }));
    for (const a of spec.areas || []) {
      const top = a.points.map((p) => `${X(p[0])},${Y(p[2])}`);
      const bottom = a.points.slice().reverse().map((p) => `${X(p[0])},${Y(p[1])}`);
      root.append(svg("polygon", { points: top.concat(bottom).join(" "), fill: a.color, class: "area" },
        svg("title", {}, a.name)));
    }
    for (const l of spec.lines || []) {
      const d = l.points.filter((p) => p[1] !== null).map((p) => `${X(p[0])},${Y(p[1])}`).join(" ");
      root.append(svg("polyline", { points: d, stroke: l.color, class: "line" + (l.dashed ? " dashed" : "") },
        svg("title", {}, l.name)));
    }
    const bw = spec.bars ? (width - m.l - m.r) / Math.max(1, spec.bars.length) : 0;
    (spec.bars || []).forEach((b, i) => {
      const x = m.l + i * bw + bw * 0.12;
      root.append(svg("rect", { x, y: Y(Math.max(b.y, 0)), width: bw * 0.76, height: Math.abs(Y(0) - Y(b.y)),
        fill: b.color || "#3b7dd8", class: "bar" }, svg("title", {}, b.title || yf(b.y))));
      if (b.label && bw > 26) root.append(svg("text", { x: x + bw * 0.38, y: height - 10, "text-anchor": "middle",
        class: "tick" }, b.label));
    });
    for (const r of spec.rules || []) {
      root.append(svg("line", { x1: X(r.x), x2: X(r.x), y1: m.t, y2: height - m.b, class: "rule", stroke: r.color || "#b3261e" }),
        svg("text", { x: X(r.x) + 4, y: m.t + 10, class: "rule-label" }, r.label || ""));
    }
    for (const p of spec.points || []) {
      const shape = p.shape === "diamond"
        ? svg("rect", { x: X(p.x) - (p.r || 5), y: Y(p.y) - (p.r || 5), width: 2 * (p.r || 5), height: 2 * (p.r || 5),
          transform: `rotate(45 ${X(p.x)} ${Y(p.y)})`, fill: p.color, class: "point " + (p.cls || "") })
        : svg("circle", { cx: X(p.x), cy: Y(p.y), r: p.r || 4, fill: p.color, class: "point " + (p.cls || "") });
      shape.append(svg("title", {}, p.title || ""));
      root.append(shape);
      if (p.label) root.append(svg("text", { x: X(p.x) + 8, y: Y(p.y) - 6, class: "point-label" }, p.label));
    }
    const wrap = el("figure", { class: "plot" }, root);
    if (spec.legend?.length) {
      wrap.append(el("figcaption", { class: "legend" }, spec.legend.map((s) =>
        el("span", { class: "legend-item" }, el("i", { class: "swatch" + (s.dashed ? " dashed" : ""),
          "data-color": s.color }), s.name))));
    }
    container.replaceChildren(wrap);
    for (const sw of wrap.querySelectorAll(".swatch")) sw.style.background = sw.dataset.color;  // CSSOM: CSP-safe
  };

  // stacked shares per bucket: series {name: [counts]} over starts -> areas of fractions
  TW.stackedShares = function stackedShares(starts, step, series, names) {
    const totals = starts.map((_, i) => names.reduce((s, n) => s + (series[n][i] || 0), 0));
    const base = starts.map(() => 0);
    return names.map((n) => {
      const pts = starts.map((t, i) => {
        const f = totals[i] ? series[n][i] / totals[i] : 0;
        const p = [t + step / 2, base[i], base[i] + f];
        base[i] += f;
        return p;
      });
      return { name: n, color: TW.color(n), points: pts };
    });
  };
})();
