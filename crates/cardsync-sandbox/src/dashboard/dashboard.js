// The CardSync sandbox dashboard: polls GET /_sandbox/overview (masked: no card number, no key)
// and steers the emulator through the control endpoints, with the page's per-run token.
"use strict";

(function () {
  const TOKEN = document.querySelector('meta[name="cardsync-sandbox-token"]').content;
  const POLL_MS = 1000;
  const HIDDEN_POLL_MS = 5000;

  let state = null;
  let base = 0; // emulator wall-clock milliseconds at emulator time 0
  let lastUpdate = 0;
  const signatures = {};

  // ---- DOM helpers (text only: nothing from the server is parsed as HTML) ----

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v;
      else if (k === "text") el.textContent = v;
      else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function table(caption, headers, rows) {
    return h("table", {},
      caption ? h("caption", { text: caption }) : null,
      h("thead", {}, h("tr", {}, headers.map((t) => {
        const [label, cls] = Array.isArray(t) ? t : [t, null];
        return h("th", { scope: "col", class: cls }, label);
      }))),
      h("tbody", {}, rows));
  }

  function badge(word) {
    return h("span", { class: "badge " + word }, word);
  }

  function mono(text) {
    return h("span", { class: "mono" }, text);
  }

  // ---- time: the emulator's clock, and "2 s ago" ----

  function clockText(ms) {
    const d = new Date(base + ms);
    const now = new Date(base + (state ? state.now_ms : 0));
    const iso = d.toISOString();
    const day = iso.slice(0, 10);
    const time = iso.slice(11, 19);
    return day === now.toISOString().slice(0, 10) ? time : day + " " + time;
  }

  function agoText(ms) {
    const delta = Math.round(((state ? state.now_ms : 0) - ms) / 1000);
    const span = Math.abs(delta);
    let amount;
    if (span < 1) return "now";
    if (span < 90) amount = span + " s";
    else if (span < 90 * 60) amount = Math.round(span / 60) + " min";
    else if (span < 36 * 3600) amount = Math.round(span / 3600) + " h";
    else amount = Math.round(span / 86400) + " d";
    return delta >= 0 ? amount + " ago" : "in " + amount;
  }

  function when(ms) {
    if (ms === null || ms === undefined) return "—";
    return h("span", { class: "when", "data-ms": ms },
      h("time", { datetime: new Date(base + ms).toISOString() }, clockText(ms)),
      " ", h("span", { class: "ago" }, "(" + agoText(ms) + ")"));
  }

  function refreshTimes() {
    for (const el of document.querySelectorAll("[data-ms]")) {
      const ms = Number(el.dataset.ms);
      const ago = el.querySelector(".ago");
      if (ago) ago.textContent = "(" + agoText(ms) + ")";
    }
  }

  // ---- regions: rebuilt only when their data changed, keeping focus, open details and
  // choices made in them ----

  function region(id, data, build) {
    const signature = JSON.stringify(data);
    if (signatures[id] === signature) return;
    signatures[id] = signature;
    const el = document.getElementById(id);
    const active = document.activeElement;
    const focusKey = active && el.contains(active) ? active.dataset.key : null;
    const open = new Set([...el.querySelectorAll("details[open][data-key]")].map((d) => d.dataset.key));
    const values = new Map([...el.querySelectorAll("select[data-key], input[data-key]")].map((c) => [c.dataset.key, c.value]));
    el.replaceChildren(build());
    for (const d of el.querySelectorAll("details[data-key]")) if (open.has(d.dataset.key)) d.open = true;
    for (const c of el.querySelectorAll("select[data-key], input[data-key]")) {
      if (values.has(c.dataset.key)) c.value = values.get(c.dataset.key);
    }
    if (focusKey) {
      const again = el.querySelector('[data-key="' + CSS.escape(focusKey) + '"]');
      if (again) again.focus();
    }
  }

  function empty(text) {
    return h("p", { class: "empty" }, text);
  }

  function resultsTable(rows, total, se) {
    const headers = ["Id", "Card", "Expiry", "Status"];
    if (se) headers.push("SE number");
    const body = rows.map((r) => h("tr", {},
      h("td", { class: "mono" }, r.id),
      h("td", { class: "mono" }, r.card),
      h("td", {}, r.exp || "—"),
      h("td", {}, r.status || "—"),
      se ? h("td", { class: "mono" }, r.se_number || "—") : null));
    const caption = total > rows.length ? "The first " + rows.length + " of " + total + " results" : null;
    return table(caption, headers, body);
  }

  function statsText(stats) {
    const parts = Object.entries(stats || {}).map(([k, v]) => k + " " + v);
    return parts.length ? parts.join(", ") : "no change";
  }

  function buildBatches() {
    if (!state.batches.length) return empty("No batch yet. Submit a card file (cardsync submit FILE) to see it here.");
    const rows = [];
    for (const b of state.batches) {
      const brands = Object.entries(b.brands).map(([k, v]) => k + " " + v).join(", ") || "—";
      let details = null;
      const sub = (content) => h("tr", { class: "sub", "data-results": b.batch_id }, h("td", { colspan: 7 }, content));
      if (b.state === "completed" && b.results_total) {
        details = sub(h("details", { "data-key": "batch-" + b.batch_id },
          h("summary", { "data-key": "batch-summary-" + b.batch_id },
            "Results: " + b.results_total + " row" + (b.results_total === 1 ? "" : "s") + " (" + statsText(b.stats) + ")"),
          resultsTable(b.results, b.results_total, false)));
      } else if (b.state === "completed") {
        details = sub(h("span", { class: "note" }, "Results: no rows (" + statsText(b.stats) + ")"));
      } else if (b.state === "error") {
        details = sub(h("span", { class: "alert" }, b.errors + " card" + (b.errors === 1 ? "" : "s") + " failed validation"));
      }
      const done = b.completed_ms !== null && b.completed_ms !== undefined
        ? when(b.completed_ms)
        : h("span", {}, "due ", when(b.completes_ms));
      rows.push(h("tr", { "data-batch": b.batch_id },
        h("td", { class: "mono" }, b.batch_id),
        h("td", {}, b.merchant_id),
        h("td", {}, badge(b.state)),
        h("td", { class: "num" }, b.cards),
        h("td", {}, brands),
        h("td", {}, when(b.created_ms)),
        h("td", {}, done)));
      if (details) rows.push(details);
    }
    const caption = state.batches_total > state.batches.length
      ? "The newest " + state.batches.length + " of " + state.batches_total + " batches" : null;
    return table(caption, ["Batch", "Merchant", "State", ["Cards", "num"], "Brands", "Created", "Completed"], rows);
  }

  function buildDeliveries() {
    if (!state.deliveries.length) return empty("No webhook sent yet. Register a URL (cardsync webhooks set) and complete a batch.");
    const rows = state.deliveries.map((d) => {
      const attempts = d.history.length
        ? h("ol", { class: "attempts" }, d.history.map((a) => h("li", {},
            a.status !== null && a.status !== undefined
              ? h("span", { class: a.status >= 200 && a.status < 300 ? "" : "fault" }, "answered " + a.status)
              : h("span", { class: "fault" }, "failed: " + a.error),
            " ", when(a.at_ms))))
        : "none yet";
      const next = d.state === "pending" && d.next_attempt_ms !== null && d.next_attempt_ms !== undefined
        ? h("span", {}, "retry ", when(d.next_attempt_ms)) : "—";
      return h("tr", { "data-delivery": d.delivery_id },
        h("td", {}, d.trigger_id + " " + triggerName(d.trigger_id)),
        h("td", { class: "mono" }, d.event_id || "—"),
        h("td", { class: "mono" }, d.url),
        h("td", {}, badge(d.state)),
        h("td", {}, when(d.created_ms)),
        h("td", {}, attempts),
        h("td", {}, next));
    });
    const caption = state.deliveries_total > state.deliveries.length
      ? "The newest " + state.deliveries.length + " of " + state.deliveries_total + " deliveries" : null;
    return table(caption, ["Trigger", "Event", "URL", "State", "Fired", "Attempts", "Next attempt"], rows);
  }

  function triggerName(id) {
    return { 20: "batch available", 21: "enrollment complete", 22: "batch error", 23: "American Express update" }[id] || "";
  }

  function buildRequests() {
    if (!state.requests.length) return empty("No API request yet.");
    const rows = state.requests.map((r) => h("tr", { "data-request": r.number },
      h("td", { class: "num" }, r.number),
      h("td", {}, when(r.at_ms)),
      h("td", {}, r.method),
      h("td", { class: "mono" }, r.path),
      h("td", { class: r.status >= 400 ? "fault" : "" }, r.status),
      h("td", {}, r.fault ? h("span", { class: "fault" }, "injected: " + r.fault) : "—")));
    const caption = state.requests_total > state.requests.length
      ? "The newest " + state.requests.length + " of " + state.requests_total + " requests" : null;
    return table(caption, [["#", "num"], "Answered", "Method", "Path", "Status", "Fault"], rows);
  }

  function buildCounters() {
    const entries = Object.entries(state.counters);
    if (!entries.length) return empty("Nothing received yet.");
    const repeated = entries.filter(([, c]) => c.repeats > 0);
    const rows = entries.map(([endpoint, c]) => h("tr", { class: c.repeats > 0 ? "repeat" : "" },
      h("td", { class: "mono" }, endpoint),
      h("td", { class: "num" }, c.requests),
      h("td", { class: "num" }, c.cards),
      h("td", { class: "num" }, c.distinct_cards),
      h("td", { class: "num" }, c.repeats > 0 ? h("span", { class: "alert" }, "⚠ " + c.repeats) : "0")));
    return h("div", {},
      repeated.length
        ? h("p", { class: "alert", role: "alert" }, "Some cards arrived more than once: " +
            repeated.map(([e, c]) => e + " (" + c.repeats + ")").join(", ") + ".")
        : h("p", { class: "note" }, "Every card arrived once."),
      table(null, ["Endpoint", ["Requests", "num"], ["Cards", "num"], ["Distinct", "num"], ["Repeats", "num"]], rows));
  }

  function hooksList(hooks) {
    if (!hooks.length) return "none";
    return h("ul", { class: "attempts" }, hooks.map((w) => h("li", {}, w.trigger_id + " " + w.trigger + " → ", mono(w.url))));
  }

  function buildMerchants() {
    const rows = state.merchants.map((m) => h("tr", {},
      h("td", { class: "mono" }, m.merchant_id),
      h("td", {}, m.legal_business_name),
      h("td", {}, m.username),
      h("td", {}, badge(m.enrollment)),
      h("td", {}, hooksList(m.webhooks))));
    return h("div", {},
      table(null, ["Merchant", "Legal name", "Username", "Enrollment", "Webhooks"], rows),
      h("p", {}, "Partner webhooks (for merchants without their own): "), hooksList(state.partner_webhooks));
  }

  function buildAmex() {
    const parts = [];
    if (!state.subscriptions.length && !state.amex_events.length && !state.amex_pending.length) {
      return empty("No subscription yet. American Express cards go to POST /v2/subscribe.");
    }
    parts.push(h("h3", {}, "Subscriptions (" + state.subscriptions_total + ")"));
    parts.push(state.subscriptions.length
      ? table(null, ["Merchant", "Id", "Card", "SE number", "Expiry"], state.subscriptions.map((s) => h("tr", {},
          h("td", {}, s.merchant_id), h("td", { class: "mono" }, s.id), h("td", { class: "mono" }, s.card),
          h("td", { class: "mono" }, s.se_number), h("td", {}, s.exp))))
      : empty("None."));
    if (state.amex_pending.length) {
      parts.push(h("h3", {}, "Updates on their way"));
      parts.push(table(null, ["Merchant", "Due", ["Cards", "num"]], state.amex_pending.map((p) => h("tr", {},
        h("td", {}, p.merchant_id), h("td", {}, when(p.due_ms)), h("td", { class: "num" }, p.cards)))));
    }
    parts.push(h("h3", {}, "Update events (trigger 23)"));
    parts.push(state.amex_events.length
      ? table(null, ["Event", "Merchant", "Fired", ["Results", "num"]], state.amex_events.flatMap((e) => [
          h("tr", { "data-event": e.event_id },
            h("td", { class: "mono" }, e.event_id), h("td", {}, e.merchant_id), h("td", {}, when(e.fired_ms)),
            h("td", { class: "num" }, e.results_total)),
          h("tr", { class: "sub" }, h("td", { colspan: 4 },
            h("details", { "data-key": "event-" + e.event_id },
              h("summary", { "data-key": "event-summary-" + e.event_id }, "Results of event " + e.event_id),
              resultsTable(e.results, e.results_total, true))))]))
      : empty("None yet."));
    return h("div", {}, parts);
  }

  function buildIssuer() {
    if (!state.issuer_cards.length) return empty("No card registered with the issuing platform. Register one under Steer.");
    const rows = state.issuer_cards.map((c) => {
      const gets = c.merchants_get
        ? h("span", {}, h("strong", {}, c.merchants_get.status), " ", mono(c.merchants_get.card), " ", c.merchants_get.exp || "")
        : "nothing";
      let actions = h("span", { class: "note" }, "final");
      if (c.status !== "TERMINATED") {
        const statusSelect = h("select", { "data-key": "status-" + c.card_id, "aria-label": "New status of card " + c.card },
          c.status === "SUSPENDED"
            ? h("option", { value: "ACTIVE" }, "Reactivate")
            : h("option", { value: "SUSPENDED" }, "Suspend"),
          h("option", { value: "TERMINATED" }, "Terminate"));
        const reasonSelect = h("select", { "data-key": "reason-" + c.card_id, "aria-label": "Reason for card " + c.card },
          state.reasons.map((r) => h("option", { value: r.code },
            r.code + " — " + r.description + " (terminated: " + r.merchants_get + ")")));
        actions = h("div", { class: "actions" }, statusSelect, reasonSelect,
          h("button", {
            type: "button", "data-key": "apply-" + c.card_id,
            onclick: () => changeCard(c, statusSelect.value, reasonSelect.value),
          }, "Apply"));
      }
      return h("tr", { "data-card": c.card_id },
        h("td", { class: "mono" }, c.card_id),
        h("td", { class: "mono" }, c.card),
        h("td", {}, c.exp),
        h("td", {}, badge(c.status), c.reason ? " " + c.reason + " — " + c.reason_description : ""),
        h("td", { class: "mono" }, c.reissued_from ? "from " + c.reissued_from : c.reissued_to ? "to " + c.reissued_to : "—"),
        h("td", {}, gets),
        h("td", {}, actions));
    });
    return table("Merchants holding a card get its outcome in the results of batches submitted after the event, and subscribers an American Express update.",
      ["Card id", "Card", "Expiry", "Status", "Reissue", "Merchants get", "Change"], rows);
  }

  function faultsText(f, injected) {
    const on = f.error_rate > 0 || f.drop_rate > 0 || f.latency_ms > 0;
    if (!on) return "No fault injected.";
    const parts = [];
    if (f.error_rate > 0) {
      parts.push("status " + (f.statuses.length ? f.statuses.join("/") : "503") + " on " + Math.round(f.error_rate * 100) + "% of requests " +
        (f.when === "after" ? "after handling them" : "instead of handling them"));
    }
    if (f.drop_rate > 0) parts.push(Math.round(f.drop_rate * 100) + "% of answers cut mid-body");
    if (f.latency_ms > 0) parts.push(f.latency_ms + " ms latency");
    if (f.paths.length) parts.push("on " + f.paths.join(", "));
    if (f.limit !== null && f.limit !== undefined) parts.push("at most " + f.limit + " (" + injected + " so far)");
    return "Injecting: " + parts.join("; ") + ".";
  }

  function render() {
    base = Date.parse(state.now_at) - state.now_ms;
    document.getElementById("clock-now").textContent = state.now_at.replace("T", " ").slice(0, 19) + " UTC";
    document.getElementById("clock-advanced").textContent = state.advanced_ms
      ? "(advanced by " + Math.round(state.advanced_ms / 1000) + " s)" : "";
    document.getElementById("batches-count").textContent = "(" + state.batches_total + ")";
    document.getElementById("deliveries-count").textContent = "(" + state.deliveries_total + ")";
    document.getElementById("requests-count").textContent = "(" + state.requests_total + ")";
    region("batches-body", state.batches, buildBatches);
    region("deliveries-body", state.deliveries, buildDeliveries);
    region("requests-body", state.requests, buildRequests);
    region("counters-body", state.counters, buildCounters);
    region("merchants-body", [state.merchants, state.partner_webhooks], buildMerchants);
    region("amex-body", [state.subscriptions, state.amex_events, state.amex_pending], buildAmex);
    region("issuer-body", [state.issuer_cards, state.reasons], buildIssuer);
    document.getElementById("faults-now").textContent = faultsText(state.faults, state.faults_injected);
    refreshTimes();
  }

  // ---- polling ----

  let timer = null;
  async function poll() {
    clearTimeout(timer);
    const live = document.getElementById("live");
    try {
      // The token is needed to read as well when the sandbox can be reached from other machines.
      const answer = await fetch("/_sandbox/overview", {
        cache: "no-store",
        headers: { "x-cardsync-sandbox-token": TOKEN },
      });
      if (!answer.ok) throw new Error("status " + answer.status);
      state = await answer.json();
      lastUpdate = Date.now();
      render();
      live.textContent = "Live: updates every second";
      live.classList.remove("lost");
    } catch (e) {
      const since = lastUpdate ? " (last update " + Math.round((Date.now() - lastUpdate) / 1000) + " s ago)" : "";
      live.textContent = "Cannot reach the sandbox: retrying" + since;
      live.classList.add("lost");
    }
    timer = setTimeout(poll, document.hidden ? HIDDEN_POLL_MS : POLL_MS);
  }
  document.addEventListener("visibilitychange", () => { if (!document.hidden) poll(); });

  // ---- steering ----

  function say(text, bad) {
    const el = document.getElementById("steer-result");
    el.textContent = text;
    el.classList.toggle("bad", !!bad);
  }

  async function steer(method, path, body, done) {
    try {
      const answer = await fetch(path, {
        method,
        headers: { "content-type": "application/json", "x-cardsync-sandbox-token": TOKEN },
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
      });
      const text = await answer.text();
      let value = null;
      try { value = JSON.parse(text); } catch (_) { /* not JSON */ }
      if (!answer.ok) {
        say("Refused (" + answer.status + "): " + ((value && (value.message || value.msg)) || text), true);
        return;
      }
      say(done(value), false);
    } catch (e) {
      say("Cannot reach the sandbox: " + e.message, true);
    }
    poll();
  }

  function advance(seconds) {
    steer("POST", "/_sandbox/clock/advance", { seconds }, () => "Clock advanced by " + seconds + " s.");
  }

  function changeCard(card, status, reason) {
    const body = { card_status: status };
    if (status !== "ACTIVE" || reason) body.reason = reason;
    steer("POST", "/_sandbox/issuer/cards/" + encodeURIComponent(card.card_id) + "/status", body, (c) =>
      "Card " + card.card + " is " + status + (c && c.merchants_get ? "; merchants get " + c.merchants_get.status + "." : "; merchants get nothing."));
  }

  function number(id) {
    const v = document.getElementById(id).value.trim();
    return v === "" ? null : Number(v);
  }

  document.addEventListener("DOMContentLoaded", () => {
    for (const b of document.querySelectorAll("[data-advance]")) {
      b.addEventListener("click", () => advance(Number(b.dataset.advance)));
    }
    document.getElementById("advance-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const s = number("advance-seconds");
      if (s === null || !(s >= 0)) { say("Give a number of seconds, 0 or more.", true); return; }
      advance(s);
    });
    document.getElementById("faults-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const paths = document.getElementById("fault-paths").value.split(",").map((p) => p.trim()).filter(Boolean);
      const faults = {
        error_rate: number("fault-rate") || 0,
        statuses: [Number(document.getElementById("fault-status").value)],
        when: document.getElementById("fault-when").value,
        paths,
        latency_ms: number("fault-latency") || 0,
        drop_rate: number("fault-drop") || 0,
        html: document.getElementById("fault-html").checked,
      };
      const limit = number("fault-limit");
      if (limit !== null) faults.limit = limit;
      const retryAfter = number("fault-retry-after");
      if (retryAfter !== null) faults.retry_after = retryAfter;
      steer("POST", "/_sandbox/faults", faults, () => "Faults set.");
    });
    document.getElementById("faults-clear").addEventListener("click", () =>
      steer("DELETE", "/_sandbox/faults", undefined, () => "Faults cleared."));
    document.getElementById("issuer-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const input = document.getElementById("issuer-card");
      const card = input.value.replace(/[\s-]/g, "");
      const exp = document.getElementById("issuer-exp").value.trim();
      input.value = "";
      steer("POST", "/_sandbox/issuer/cards", { card, exp }, (c) =>
        "Registered " + c.bin + "…" + c.last_four + " as card " + c.card_id + ".");
    });
    poll();
  });
})();
