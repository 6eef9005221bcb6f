// tierwise dashboard: shared helpers (DOM building, number formats, the JSON API client).
"use strict";

const TW = (window.TW = { pages: {}, state: {} });

// el("div", {class: "x", onclick: fn}, child, "text", ...): a DOM element (text is never parsed as HTML)
TW.el = function el(tag, attrs, ...children) {
  const ns = tag.startsWith("svg:") ? "http://www.w3.org/2000/svg" : null;
  const node = ns ? document.createElementNS(ns, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
};

TW.clear = function clear(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined));
  return node;
};

// -- formats (tests/test_dashboard_browser.py mirrors usd/pct/int) -------------------------------
const fmt = (TW.fmt = {});
fmt.int = (n) => (n === null || n === undefined ? "–" : Math.round(n).toLocaleString("en-US"));
fmt.usd = function (x) {
  if (x === null || x === undefined) return "–";
  const a = Math.abs(x);
  const sign = x < 0 ? "-" : "";
  if (a >= 1000) return sign + "$" + Math.round(a).toLocaleString("en-US");
  if (a >= 1) return sign + "$" + a.toFixed(2);
  if (a >= 0.01) return sign + "$" + a.toFixed(4);
  return sign + "$" + a.toFixed(6);
};
fmt.pct = (x, digits = 1) => (x === null || x === undefined ? "–" : (100 * x).toFixed(digits) + "%");
fmt.ms = (x) => (x === null || x === undefined ? "–" : x >= 1000 ? (x / 1000).toFixed(2) + " s" : x.toFixed(x >= 10 ? 0 : 2) + " ms");
fmt.num = (x, digits = 3) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits));
fmt.knob = (k) => (k === null || k === undefined ? "–" : Number(Number(k).toPrecision(4)).toString());
fmt.time = (ts) => new Date(ts * 1000).toLocaleString("en-GB", { hour12: false });
fmt.clock = function (ts, step) {
  const d = new Date(ts * 1000);
  const hm = d.toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit", hour12: false });
  if (step && step >= 86400) return d.toLocaleDateString("en-GB", { day: "numeric", month: "short" });
  if (step && step >= 3600) return d.toLocaleDateString("en-GB", { day: "numeric", month: "short" }) + " " + hm;
  return hm;
};
fmt.key = (h) => (h ? h.slice(0, 10) + "…" : "(none)");

// a number shown with its exact value kept in data-value (what the browser tests read)
TW.value = function value(text, raw, attrs) {
  return TW.el("span", { class: "value", "data-value": raw === null || raw === undefined ? "" : raw, ...attrs }, text);
};

// -- API -------------------------------------------------------------------------------------------
TW.query = function query(extra) {
  const s = TW.state;
  const q = new URLSearchParams();
  if (s.range === "custom") {
    q.set("from", String(s.from));
    q.set("to", String(s.to));
  } else q.set("range", s.range || "24h");
  if (s.key) q.set("key", s.key);
  for (const [k, v] of Object.entries(extra || {})) if (v !== null && v !== undefined && v !== "") q.set(k, v);
  return q.toString();
};

TW.api = async function api(path, extra) {
  const res = await fetch("/dashboard/api/" + path + "?" + TW.query(extra), { credentials: "same-origin" });
  if (res.status === 401) {
    window.location.href = "/dashboard/login";
    throw new Error("signed out");
  }
  const body = await res.json();
  if (!res.ok) throw new Error((body.error && body.error.message) || res.statusText);
  return body;
};

// one model -> one colour, cheapest first, stable across pages
TW.palette = ["#3b7dd8", "#2a9d8f", "#e9a23b", "#8e5cc4", "#d4577b", "#5a6e8c", "#7fb800", "#c46b2e"];
TW.color = function color(model) {
  const order = (TW.state.models || []).indexOf(model);
  const i = order >= 0 ? order : Math.abs([...String(model)].reduce((h, c) => (h * 31 + c.charCodeAt(0)) | 0, 7));
  return TW.palette[i % TW.palette.length];
};

// model names in pyramid order (cheapest first), unknown ones after
TW.byTier = function byTier(names) {
  const order = TW.state.models || [];
  const rank = (n) => (order.indexOf(n) >= 0 ? order.indexOf(n) : order.length);
  return names.slice().sort((a, b) => rank(a) - rank(b) || (a < b ? -1 : 1));
};

TW.card = function card(title, ...body) {
  return TW.el("section", { class: "card" }, TW.el("h2", { text: title }), ...body);
};

TW.kpi = function kpi(label, valueNode, sub, id) {
  return TW.el("div", { class: "kpi", id: id || null }, TW.el("div", { class: "kpi-label", text: label }), valueNode,
    sub ? TW.el("div", { class: "kpi-sub" }, sub) : null);
};

TW.table = function table(headers, rows, attrs) {
  return TW.el("div", { class: "table-wrap" }, TW.el("table", attrs || {},
    TW.el("thead", {}, TW.el("tr", {}, headers.map((h) => TW.el("th", { scope: "col" }, h)))),
    TW.el("tbody", {}, rows)));
};
