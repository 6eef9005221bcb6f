// tierwise dashboard: the shell (range picker, key filter, tabs, live refresh) that runs the pages.
// A page is TW.pages[name] = {title, every (seconds between refreshes), render(root, firstTime)}.
"use strict";

(function () {
  const el = TW.el;
  const s = TW.state;
  const ORDER = ["overview", "quality", "whatif", "decisions"];
  let timer = null;
  let running = false;

  function readHash() {
    const [page, query] = (window.location.hash.slice(1) || "overview").split("?");
    const q = new URLSearchParams(query || "");
    s.page = ORDER.includes(page) ? page : "overview";
    s.range = q.get("range") || s.range || "24h";
    if (q.get("from")) { s.range = "custom"; s.from = +q.get("from"); s.to = +q.get("to"); }
    if (q.has("key")) s.key = q.get("key") || "";
  }

  function writeHash() {
    const q = new URLSearchParams();
    if (s.range === "custom") { q.set("from", s.from); q.set("to", s.to); } else q.set("range", s.range);
    if (s.key) q.set("key", s.key);
    history.replaceState(null, "", "#" + s.page + "?" + q.toString());
  }

  function setStatus(text, bad) {
    const node = document.getElementById("status");
    node.textContent = text;
    node.classList.toggle("bad", !!bad);
  }

  async function refresh(first) {
    if (running) return;
    running = true;
    const page = TW.pages[s.page];
    try {
      await page.render(document.getElementById("page"), first);
      setStatus("updated " + new Date().toLocaleTimeString("en-GB", { hour12: false }));
    } catch (err) {
      setStatus("could not refresh: " + err.message, true);
    } finally {
      running = false;
    }
  }

  function schedule() {
    clearInterval(timer);
    const live = document.getElementById("live").checked;
    if (live) timer = setInterval(() => { if (!document.hidden) refresh(false); }, 1000 * TW.pages[s.page].every);
  }

  function show(first) {
    writeHash();
    for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === s.page);
    for (const b of document.querySelectorAll(".ranges button")) b.classList.toggle("active", b.dataset.range === s.range);
    document.getElementById("custom").hidden = s.range !== "custom";
    document.title = "tierwise · " + TW.pages[s.page].title;
    if (first) TW.clear(document.getElementById("page"), el("p", { class: "loading", text: "Loading…" }));
    refresh(first);
    schedule();
  }
  TW.show = show;

  function localInput(ts) {
    const d = new Date(ts * 1000 - new Date().getTimezoneOffset() * 60000);
    return d.toISOString().slice(0, 16);
  }

  function setupControls(who) {
    for (const b of document.querySelectorAll(".ranges button")) {
      b.addEventListener("click", () => {
        s.range = b.dataset.range;
        if (s.range === "custom" && !s.from) { s.to = Date.now() / 1000; s.from = s.to - 86400; }
        document.getElementById("from").value = localInput(s.from || Date.now() / 1000 - 86400);
        document.getElementById("to").value = localInput(s.to || Date.now() / 1000);
        show(true);
      });
    }
    document.getElementById("apply").addEventListener("click", () => {
      const f = Date.parse(document.getElementById("from").value) / 1000;
      const t = Date.parse(document.getElementById("to").value) / 1000;
      if (!(t > f)) return setStatus("custom range: 'from' must be before 'to'", true);
      Object.assign(s, { range: "custom", from: f, to: t });
      show(true);
    });
    document.getElementById("live").addEventListener("change", schedule);
    for (const a of document.querySelectorAll("nav a")) {
      a.addEventListener("click", (e) => { e.preventDefault(); s.page = a.dataset.page; show(true); });
    }
    window.addEventListener("hashchange", () => { readHash(); show(true); });
    const keySel = document.getElementById("key");
    if (who.admin) {
      keySel.hidden = false;
      TW.api("keys").then((body) => {
        keySel.replaceChildren(el("option", { value: "" }, "all keys"),
          ...body.keys.map((k) => el("option", { value: k.key_hash, selected: k.key_hash === s.key },
            k.name ? `${k.name} (${TW.fmt.key(k.key_hash)})` : TW.fmt.key(k.key_hash))));
      }).catch(() => {});
      keySel.addEventListener("change", () => { s.key = keySel.value; show(true); });
    }
    const me = document.getElementById("whoami");
    me.textContent = who.open ? "open (localhost only)" : who.admin ? "admin" : "key " + TW.fmt.key(who.key);
    document.getElementById("signout").hidden = who.open;
    let resized = null;
    window.addEventListener("resize", () => { clearTimeout(resized); resized = setTimeout(() => refresh(false), 250); });
  }

  async function start() {
    readHash();
    const res = await fetch("/dashboard/api/whoami", { credentials: "same-origin" });
    if (res.status === 401) { window.location.href = "/dashboard/login"; return; }
    const who = await res.json();
    s.who = who;
    s.context = who.context;
    s.models = who.context.models.map((m) => m.name);
    setupControls(who);
    show(true);
  }

  document.addEventListener("DOMContentLoaded", () => start().catch((e) => setStatus(e.message, true)));
})();
