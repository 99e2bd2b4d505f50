// The tower's page: counts, challenges (with their gas) and disputes, from GET /overview.
"use strict";
const $ = (id) => document.getElementById(id);
const short = (h) => (h.length > 14 ? h.slice(0, 8) + "…" + h.slice(-4) : h);
const when = (t) => new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19);

function row(cells, attrs) {
  const tr = document.createElement("tr");
  for (const [k, v] of Object.entries(attrs || {})) tr.setAttribute(k, v);
  for (const c of cells) { const td = document.createElement("td"); td.textContent = c; tr.append(td); }
  return tr;
}

async function refresh() {
  const r = await fetch("/overview", { cache: "no-store" });
  if (!r.ok) return;
  const o = await r.json();
  $("who").textContent = o.address + " · chain " + o.chain_id + " · block " + o.head;
  $("watched").textContent = o.watched === null ? "?" : o.watched;
  $("open").textContent = o.open_disputes;
  $("seen").textContent = o.disputes_seen;
  $("receipts").textContent = o.receipts_issued;
  $("challenges").tBodies[0].replaceChildren(...o.challenges.map((c) => row(
    [short(c.channel_id), "v" + c.against, "v" + c.version, c.outcome + (c.reason ? " (" + c.reason + ")" : ""),
      c.gas_used === null ? "-" : c.gas_used.toLocaleString("en"), c.tx_hashes.map(short).join(" ")],
    { "data-channel": c.channel_id, "data-outcome": c.outcome })));
  $("disputes").tBodies[0].replaceChildren(...o.disputes.map((d) => row(
    [short(d.channel_id), "v" + d.version, when(d.closed_at), when(d.finalizes_at)], { "data-channel": d.channel_id })));
}

document.addEventListener("DOMContentLoaded", () => { refresh(); setInterval(refresh, 2000); });
