// The node dashboard: reads the public API with the bearer token kept in sessionStorage (never a URL),
// and follows the event stream (fetch, since EventSource cannot send a header) for live updates.
"use strict";

const KEY = "statechannel-api-token";
const WINDOW_S = 300;
const $ = (id) => document.getElementById(id);
const state = { node: null, channels: new Map(), quotes: new Map(), streams: [], lastId: null,
  rate: new Map(), latency: [], lastBuckets: null, dirty: new Set(), refreshTimer: null };

function token() { return sessionStorage.getItem(KEY); }

async function api(method, path, body) {
  const headers = { Authorization: "Bearer " + token() };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store", referrerPolicy: "no-referrer" });
  if (r.status === 401) { logout("the token was refused"); throw new Error("unauthorized"); }
  const text = await r.text();
  const data = text && (r.headers.get("content-type") || "").includes("json") ? JSON.parse(text) : text;
  if (!r.ok) {
    const e = data && data.error ? data.error : { reason: "http_" + r.status, detail: String(text).slice(0, 200) };
    throw new Error(e.reason + ": " + e.detail);
  }
  return data;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v); else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function short(hex) { return hex.length > 14 ? hex.slice(0, 8) + "…" + hex.slice(-4) : hex; }
function assetName(a) { return a === "eth" ? "ETH" : short(a); }
function say(text, bad) { const m = $("message"); m.textContent = text; m.className = bad ? "error" : "ok"; }

async function act(what, fn) {
  try { await fn(); say(what + ": done"); } catch (e) { say(what + " failed: " + e.message, true); }
}

// ------------------------------------------------------------------ login

function logout(why) {
  sessionStorage.removeItem(KEY);
  $("main").hidden = true; $("login").hidden = false;
  $("login-error").textContent = why || "";
}

async function login(candidate) {
  sessionStorage.setItem(KEY, candidate);
  try { await start(); } catch (e) { if (token()) logout(e.message); }
}

// ------------------------------------------------------------------ views

function renderNode() {
  const n = state.node;
  $("node").replaceChildren(
    el("span", { "data-testid": "address" }, n.address), " · chain " + n.chain_id + " · block " + n.chain_head +
    " · " + (n.eth_balance === null ? "balance unknown" : (BigInt(n.eth_balance) / 10n ** 15n).toString() + " mETH on chain"));
}

function countdown(d) {
  const left = d.finalizes_at - Math.floor(Date.now() / 1000);
  return left > 0 ? "dispute v" + d.version + ": finalizes in " + left + " s" : "dispute v" + d.version + ": window over";
}

function channelRow(ch) {
  const cid = ch.channel_id;
  const balances = el("td", { "data-testid": "balances" });
  for (const b of ch.balances) {
    balances.append(el("div", { "data-asset": b.asset },
      assetName(b.asset) + " ", el("b", { "data-testid": "mine" }, b.my_balance), " / ",
      el("span", { "data-testid": "theirs" }, b.peer_balance)));
  }
  const chain = el("td", { "data-testid": "onchain" });
  if (ch.dispute) chain.append(el("span", { class: "countdown", "data-finalizes": ch.dispute.finalizes_at,
    "data-version": ch.dispute.version }, countdown(ch.dispute)));
  else if (ch.outcome) chain.append((ch.outcome.cooperative ? "closed cooperatively" : "settled") + " at v" + ch.outcome.version);
  else chain.append(ch.phase === "open" || ch.phase === "funding" ? "funded " +
    ch.balances.map((b) => assetName(b.asset) + " " + b.my_funded + " + " + b.peer_funded).join(", ") : "-");
  const towers = el("td", { "data-testid": "towers" },
    ch.protection.length ? ch.protection.map((p) => short(p.address) + " holds v" + p.version).join("; ") : "-");
  const actions = el("td", { class: "actions" });
  if (ch.phase === "open") {
    const amount = el("input", { size: 10, placeholder: "wei", "data-testid": "pay-amount", value: "1000" });
    actions.append(amount, el("button", { "data-testid": "pay", onclick: () => act("pay", () =>
      api("POST", `/channels/${cid}/payments`, { asset: "eth", amount: amount.value.trim() })) }, "Pay"));
    actions.append(el("button", { "data-testid": "deposit", onclick: () => act("deposit", () =>
      api("POST", `/channels/${cid}/deposit`, { asset: "eth", amount: amount.value.trim() })) }, "Deposit"));
    actions.append(el("button", { "data-testid": "stream", onclick: () => act("stream", async () => {
      await api("POST", "/streams", { channel_id: cid, asset: "eth", rate_per_s: amount.value.trim(),
        cap: (BigInt(amount.value.trim()) * 3600n).toString(), tick_ms: 100 });
      await refreshStreams();
    }) }, "Stream /s"));
    actions.append(el("button", { "data-testid": "close", onclick: () => act("close", () =>
      api("POST", `/channels/${cid}/close`, { unilateral: false })) }, "Close"));
    actions.append(el("button", { "data-testid": "force-close", title: "close on chain without the peer: the challenge window runs",
      onclick: () => { if (confirm("Close on chain without the peer? The money waits out the challenge window.")) {
        act("force close", () => api("POST", `/channels/${cid}/close`, { unilateral: true })); } } }, "Force close"));
  }
  return el("tr", { "data-channel": cid, "data-phase": ch.phase },
    el("td", { title: cid }, short(cid)), el("td", { title: ch.peer }, short(ch.peer) + (ch.peer_connected ? "" : " (offline)")),
    el("td", { "data-testid": "phase" }, ch.phase), el("td", { "data-testid": "version" }, ch.version === null ? "-" : ch.version),
    balances, chain, towers, actions);
}

function renderChannels() {
  const rows = [...state.channels.values()].sort((a, b) => (a.phase === "closed") - (b.phase === "closed"));
  $("channels").tBodies[0].replaceChildren(...rows.map(channelRow));
}

function renderStreams() {
  $("streams").tBodies[0].replaceChildren(...state.streams.map((s) => el("tr", { "data-stream": s.stream_id, "data-status": s.status },
    el("td", {}, s.stream_id), el("td", { "data-testid": "stream-status" }, s.status), el("td", {}, s.paid + " / " + s.cap),
    el("td", {}, s.status === "running" || s.status === "paused" ? el("button", { "data-testid": "stop-stream",
      onclick: () => act("stop stream", async () => { await api("POST", `/streams/${s.stream_id}/stop`); await refreshStreams(); }) }, "Stop") : ""))));
}

function renderQuotes() {
  const rows = [];
  for (const [cid, book] of state.quotes) {
    for (const q of book.received) {
      rows.push(el("tr", { "data-quote": q.quote_id }, el("td", {}, short(cid)), el("td", {}, q.side + " " + assetName(q.base)),
        el("td", {}, q.quote_unit + " " + assetName(q.quote) + " per " + q.base_unit), el("td", {}, q.size),
        el("td", {}, el("button", { "data-testid": "take", onclick: () => act("take", () =>
          api("POST", `/channels/${cid}/takes`, { quote_id: q.quote_id, base_amount: q.base_unit })) }, "Take"))));
    }
  }
  $("quotes").tBodies[0].replaceChildren(...rows);
}

function logEvent(ev) {
  const list = $("events");
  const what = ev.kind === "sent" ? `${ev.data.count ?? ev.data.payments.length} payment(s) countersigned, v${ev.data.version}`
    : ev.kind === "received" ? "received " + Object.entries(ev.data.amounts).map(([a, v]) => v + " " + assetName(a)).join(", ") + ", v" + ev.data.version
    : ev.kind === "phase" ? "phase " + ev.data.phase
    : JSON.stringify(ev.data).slice(0, 160);
  list.prepend(el("li", { "data-kind": ev.kind }, new Date().toLocaleTimeString() + " " + ev.kind + " " + short(ev.channel_id || "") + ": " + what));
  while (list.children.length > 60) list.lastChild.remove();
}

// ------------------------------------------------------------------ charts

function bump(n) {
  const s = Math.floor(Date.now() / 1000);
  state.rate.set(s, (state.rate.get(s) || 0) + n);
}

function drawSeries(canvas, series, colors) {
  const c = canvas.getContext("2d"), w = canvas.width, h = canvas.height;
  c.clearRect(0, 0, w, h);
  const max = Math.max(1, ...series.flat());
  c.fillStyle = "#666"; c.font = "11px sans-serif"; c.fillText(max.toFixed(max < 10 ? 2 : 0), 2, 11);
  series.forEach((points, k) => {
    c.strokeStyle = colors[k]; c.beginPath();
    points.forEach((v, i) => { const x = (i / Math.max(1, points.length - 1)) * w, y = h - (v / max) * (h - 14);
      i ? c.lineTo(x, y) : c.moveTo(x, y); });
    c.stroke();
  });
}

function drawCharts() {
  const now = Math.floor(Date.now() / 1000), points = [];
  for (let s = now - WINDOW_S; s < now; s++) points.push(state.rate.get(s) || 0);
  for (const k of state.rate.keys()) if (k < now - WINDOW_S) state.rate.delete(k);
  drawSeries($("rate-chart"), [points], ["#1f6feb"]);
  drawSeries($("latency-chart"), [state.latency.map((l) => l[0]), state.latency.map((l) => l[1])], ["#2da44e", "#cf222e"]);
  for (const span of document.querySelectorAll(".countdown")) {
    span.textContent = countdown({ version: span.dataset.version, finalizes_at: Number(span.dataset.finalizes) });
  }
}

function quantile(buckets, q) { // buckets: [[le, cumulative]] sorted; returns ms
  const total = buckets.length ? buckets[buckets.length - 1][1] : 0;
  if (!total) return 0;
  for (const [le, n] of buckets) if (n >= q * total) return (le === Infinity ? buckets[buckets.length - 2][0] : le) * 1000;
  return 0;
}

// Latency has no event: it is read from /metrics (the histogram's change over the last interval).
async function sampleLatency() {
  const text = await api("GET", "/metrics");
  const sums = new Map();
  for (const line of text.split("\n")) {
    const m = line.match(/^statechannel_update_round_trip_seconds_bucket\{.*le="([^"]+)".*\} ([0-9.e+]+)$/);
    if (m) { const le = m[1] === "+Inf" ? Infinity : Number(m[1]); sums.set(le, (sums.get(le) || 0) + Number(m[2])); }
  }
  const now = [...sums.entries()].sort((a, b) => a[0] - b[0]);
  if (state.lastBuckets) {
    const delta = now.map(([le, n], i) => [le, n - (state.lastBuckets[i] ? state.lastBuckets[i][1] : 0)]);
    state.latency.push([quantile(delta, 0.5), quantile(delta, 0.99)]);
    if (state.latency.length > WINDOW_S / 5) state.latency.shift();
  }
  state.lastBuckets = now;
}

// ------------------------------------------------------------------ data

async function refreshChannel(cid) {
  state.channels.set(cid, await api("GET", `/channels/${cid}`));
}

async function refreshQuotes(cid) {
  try { state.quotes.set(cid, await api("GET", `/channels/${cid}/quotes`)); } catch (e) { state.quotes.delete(cid); }
  renderQuotes();
}

async function refreshStreams() {
  try { state.streams = await api("GET", "/streams"); } catch (e) { state.streams = []; }
  renderStreams();
}

function touch(cid) { // coalesce: thousands of events a second become a few reads
  if (cid) state.dirty.add(cid);
  if (state.refreshTimer) return;
  state.refreshTimer = setTimeout(async () => {
    state.refreshTimer = null;
    const ids = [...state.dirty]; state.dirty.clear();
    await Promise.all(ids.map((id) => refreshChannel(id).catch(() => {})));
    renderChannels();
    if (state.streams.some((s) => s.status === "running")) await refreshStreams();
  }, 200);
}

function onEvent(ev) {
  logEvent(ev);
  if (ev.kind === "sent") bump(ev.data.count ?? ev.data.payments.length);
  if (ev.kind === "received") bump(1);
  if (ev.kind === "quote") refreshQuotes(ev.channel_id);
  if (ev.kind === "fill") refreshQuotes(ev.channel_id);
  if (ev.kind === "phase" || ev.kind === "concluded") api("GET", "/node").then((n) => { state.node = n; renderNode(); }).catch(() => {});
  if (ev.kind === "gap") { for (const id of state.channels.keys()) touch(id); return; }
  touch(ev.channel_id);
}

async function follow() {
  for (;;) {
    try {
      const headers = { Authorization: "Bearer " + token(), Accept: "text/event-stream" };
      if (state.lastId !== null) headers["Last-Event-ID"] = state.lastId;
      const r = await fetch("/events", { headers, cache: "no-store" });
      if (r.status === 401) { logout("the token was refused"); return; }
      if (!r.ok || !r.body) throw new Error("event stream: HTTP " + r.status);
      $("live").textContent = "live"; $("live").className = "badge on";
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
          let id = null, data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("id:")) id = line.slice(3).trim();
            else if (line.startsWith("data:")) data += line.slice(5).trim();
          }
          if (id !== null) state.lastId = id;
          if (data) onEvent(JSON.parse(data));
        }
      }
    } catch (e) { if (!token()) return; }
    $("live").textContent = "reconnecting"; $("live").className = "badge off";
    await new Promise((ok) => setTimeout(ok, 1000));
  }
}

async function start() {
  state.node = await api("GET", "/node");
  $("login").hidden = true; $("main").hidden = false;
  renderNode();
  for (const ch of await api("GET", "/channels")) state.channels.set(ch.channel_id, ch);
  renderChannels();
  for (const cid of state.channels.keys()) if (state.channels.get(cid).phase === "open") refreshQuotes(cid);
  await refreshStreams();
  follow();
  setInterval(drawCharts, 1000);
  setInterval(() => sampleLatency().catch(() => {}), 5000);
  sampleLatency().catch(() => {});
}

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (e) => { e.preventDefault(); const t = $("token").value.trim(); $("token").value = ""; login(t); });
  $("open-form").addEventListener("submit", (e) => {
    e.preventDefault();
    act("open", async () => {
      const ch = await api("POST", "/channels", { peer: $("open-peer").value.trim(), deposits: { eth: $("open-eth").value.trim() },
        challenge_period: Number($("open-period").value || 3600) });
      state.channels.set(ch.channel_id, ch); renderChannels();
    });
  });
  if (token()) start().catch((e) => logout(e.message)); else logout();
});
