// tierwise dashboard: Decisions (the log as a filterable, paginated table; a row opens its details).
"use strict";

(function () {
  const el = TW.el, f = TW.fmt;
  const dec = (TW.state.dec = { page: 0, size: 50, model: "", status: "", surface: "", fallbacks: false, cascade: false, q: "" });
  let built = false;

  function select(id, label, options, value, onchange) {
    return el("select", { id, "aria-label": label, onchange },
      options.map(([v, text]) => el("option", { value: v, selected: v === value }, text)));
  }

  function changed(key, value) {
    dec[key] = value;
    dec.page = 0;
    refreshTable();
  }

  function filters() {
    const models = TW.state.models || [];
    let typing = null;
    return el("div", { class: "filters", id: "dec-filters" },
      select("dec-model", "model", [["", "any model"], ...models.map((m) => [m, m])], dec.model, (e) => changed("model", e.target.value)),
      select("dec-status", "status", [["", "any status"], ["ok", "answered (200)"], ["error", "errors (not 200)"],
        ...["400", "401", "404", "429", "499", "502", "503"].map((c) => [c, c])], dec.status, (e) => changed("status", e.target.value)),
      select("dec-surface", "API", [["", "any API"], ...["chat", "responses", "messages", "embeddings", "completions"].map((s) => [s, s])],
        dec.surface, (e) => changed("surface", e.target.value)),
      el("label", {}, el("input", { type: "checkbox", id: "dec-fallbacks", checked: dec.fallbacks, onchange: (e) => changed("fallbacks", e.target.checked) }), " with fallbacks"),
      el("label", {}, el("input", { type: "checkbox", id: "dec-cascade", checked: dec.cascade, onchange: (e) => changed("cascade", e.target.checked) }), " cascade"),
      el("input", { type: "search", id: "dec-search", placeholder: "request id…", value: dec.q, "aria-label": "request id",
        oninput: (e) => { clearTimeout(typing); typing = setTimeout(() => changed("q", e.target.value.trim()), 300); } }),
      select("dec-size", "rows per page", [25, 50, 100, 200].map((n) => [String(n), n + " / page"]), String(dec.size),
        (e) => changed("size", +e.target.value)));
  }

  function row(r) {
    const model = r.model ? (r.chosen && r.chosen !== r.model ? `${r.chosen} → ${r.model}` : r.model) : "–";
    return el("tr", { class: "clickable", "data-id": r.id, tabindex: 0, onclick: () => details(r.id),
      onkeydown: (e) => { if (e.key === "Enter") details(r.id); } },
      el("td", {}, f.time(r.ts)), el("td", { title: r.id }, r.id.slice(-12)), el("td", {}, r.requested_model || ""),
      el("td", { class: "dec-model" }, model),
      el("td", {}, el("span", { class: "pill dec-status " + (r.status === 200 ? "ok" : "err") }, String(r.status))),
      el("td", { class: "num" }, r.fallbacks ? String(r.fallbacks) : ""), el("td", {}, r.cascade ? "cascade" : ""),
      el("td", { class: "num" }, `${f.int(r.tokens_in)} / ${f.int(r.tokens_out)}`), el("td", { class: "num" }, f.ms(r.latency_ms)),
      el("td", { class: "num" }, f.usd(r.cost_usd)), el("td", { title: r.key_hash || "" }, f.key(r.key_hash)), el("td", {}, r.surface));
  }

  async function refreshTable() {
    const box = document.getElementById("dec-table");
    if (!box) return;
    const body = await TW.api("decisions", { page: dec.page, size: dec.size, model: dec.model, status: dec.status,
      surface: dec.surface, fallbacks: dec.fallbacks ? "1" : "", cascade: dec.cascade ? "1" : "", q: dec.q });
    const pages = Math.max(1, Math.ceil(body.total / body.size));
    const total = f.int(body.total) + (body.total_capped ? "+" : "");
    TW.clear(box,
      TW.table(["time", "id", "requested", "model", "status", "fallbacks", "", "tokens in / out", "latency", "cost", "key", "API"],
        body.items.map(row), { id: "dec-rows" }),
      body.items.length ? null : el("p", { class: "note", text: "No request matches." }),
      el("div", { class: "pager" },
        el("button", { type: "button", id: "dec-prev", disabled: dec.page === 0, onclick: () => { dec.page -= 1; refreshTable(); } }, "← newer"),
        el("span", { id: "dec-count" }, `page ${dec.page + 1} of ${body.total_capped ? pages + "+" : pages} · `, TW.value(total, body.total, { id: "dec-total" }), " requests"),
        el("button", { type: "button", id: "dec-next", disabled: dec.page + 1 >= pages, onclick: () => { dec.page += 1; refreshTable(); } }, "older →")));
  }

  function dl(pairs) {
    return el("dl", {}, pairs.filter(([, v]) => v !== null && v !== undefined && v !== "").flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  }

  function scores(d) {
    const entries = Object.entries(d.scores || {}).sort((a, b) => b[1] - a[1]);
    if (!entries.length) return el("p", { class: "note", text: "No router scores (not routed by the router)." });
    return TW.table(["model", "predicted", ""], entries.map(([m, v]) => {
      const bar = el("span", { class: "scorebar" });
      bar.style.width = Math.round(120 * v) + "px";
      return el("tr", {}, el("td", {}, m + (m === d.chosen ? " (chosen)" : "") + (m === d.model && m !== d.chosen ? " (answered)" : "")),
        el("td", { class: "num" }, f.num(v)), el("td", {}, bar));
    }));
  }

  async function details(id) {
    document.getElementById("dec-details")?.remove();
    for (const tr of document.querySelectorAll("#dec-rows tr")) tr.classList.toggle("selected", tr.dataset.id === id);
    const res = await fetch("/dashboard/api/decisions/" + encodeURIComponent(id), { credentials: "same-origin" });
    const d = await res.json();
    if (!res.ok) return;
    const close = el("button", { type: "button", id: "dec-close", onclick: () => panel.remove() }, "Close");
    const prompt = d.prompt !== null && d.prompt !== undefined
      ? el("pre", { id: "dec-prompt" }, d.prompt)
      : el("p", { class: "note", id: "dec-no-prompt", text: "Prompt not stored (prompt logging is off: `tierwise serve --log-prompts` stores it)." });
    const panel = el("aside", { class: "details", id: "dec-details", "aria-label": "request details" },
      el("div", { class: "filters" }, el("strong", {}, "Request"), close),
      dl([["id", d.id], ["time", f.time(d.ts)], ["status", String(d.status)], ["error", d.error], ["API", d.surface + (d.stream ? " (stream)" : "")],
        ["requested", d.requested_model], ["router", d.router], ["rule / knob", d.rule ? `${d.rule} / ${f.knob(d.knob)}` : ""],
        ["chosen", d.chosen], ["answered by", d.model], ["tokens in / out", `${d.tokens_in} / ${d.tokens_out}` + (d.usage_estimated ? " (estimated)" : "")],
        ["latency", f.ms(d.latency_ms)], ["routing", f.ms(d.route_ms)], ["cost", f.usd(d.cost_usd)], ["key", d.key_hash],
        ["upstream id", d.upstream_id], ["needs", (d.needs || []).join(", ")]]),
      el("h3", { text: "Candidate scores" }), scores(d),
      Object.keys(d.excluded || {}).length ? [el("h3", { text: "Left out" }), dl(Object.entries(d.excluded))] : null,
      d.fallbacks?.length ? [el("h3", { text: "Chain (models that failed before the answer)" }),
        TW.table(["model", "reason", "detail"], d.fallbacks.map((x) => el("tr", {}, el("td", {}, x.model), el("td", {}, x.reason), el("td", {}, x.error))))] : null,
      d.cascade_chain?.length ? [el("h3", { text: "Cascade steps" }), TW.table(["model", "confidence", "outcome", "tokens", "cost"],
        d.cascade_chain.map((x) => el("tr", {}, el("td", {}, x.model), el("td", { class: "num" }, f.num(x.confidence)), el("td", {}, x.outcome),
          el("td", { class: "num" }, `${x.tokens_in} / ${x.tokens_out}`), el("td", { class: "num" }, f.usd(x.cost_usd)))))] : null,
      el("h3", { text: "Feedback" }), d.feedback.length ? dl(d.feedback.map((x) => [f.time(x.ts), f.num(x.score, 2)])) : el("p", { class: "note", text: "Not rated." }),
      el("h3", { text: "Prompt" }), prompt);
    document.body.append(panel);
  }

  TW.pages.decisions = {
    title: "Decisions",
    every: 5,
    async render(root, first) {
      if (first || !built || !document.getElementById("dec-table")) {
        TW.clear(root, TW.card("Decisions", filters(), el("div", { id: "dec-table" })));
        built = true;
      }
      await refreshTable();
    },
  };
})();
