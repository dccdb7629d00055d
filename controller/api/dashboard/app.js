// The dashboard: plain JavaScript, no build step, no CDN. Everything it shows comes from the
// API with the user's token (kept in sessionStorage, sent as a bearer token, never in a URL it
// requests); it stays live on GET /api/v1/events, read with fetch so the token goes in a header.
"use strict";

const state = { token: null, servers: new Map(), nodes: new Map(), jobs: new Map(), fleets: new Map(), lastEventId: null,
                controller: null };

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k.startsWith("data-")) e.setAttribute(k, v); else e[k] = v;
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

async function api(path, options = {}) {
  const r = await fetch(path, { ...options, headers: { Authorization: "Bearer " + state.token, Accept: "application/json" } });
  if (r.status === 401) { logout("the token was refused"); throw new Error("unauthorized"); }
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}

async function pages(path, key) {
  let out = [], cursor = null;
  do {
    const page = await api(path + (path.includes("?") ? "&" : "?") + "limit=500" + (cursor ? "&cursor=" + encodeURIComponent(cursor) : ""));
    out = out.concat(page[key] || []);
    cursor = page.next_cursor || null;
  } while (cursor);
  return out;
}

// What went wrong lately, on the page (the console stays clean: a test fails on any message).
function note(text) {
  const badge = document.getElementById("stream");
  badge.title = text;
}

// --- rendering ---

function serialJob(serial) {
  let best = null;
  for (const j of state.jobs.values()) if (j.serial === serial && (!best || j.seq > best.seq)) best = j;
  return best;
}

function tile(kind, id, title, sub, job) {
  const status = job ? job.status : "idle";
  const t = el("div", { class: "tile", "data-id": id, "data-kind": kind, "data-status": status, "data-outcome": job && job.outcome || "" },
    el("div", { class: "name" }, title),
    el("div", { class: "sub" }, sub),
    el("div", { class: "sub job" }, job ? status + (job.phase ? " · " + job.phase : "") : "no job"));
  if (job) t.addEventListener("click", () => showJob(job.id));
  return t;
}

function renderServers() {
  const box = document.getElementById("servers");
  box.replaceChildren();
  if (state.servers.size === 0) { box.append(el("p", { class: "empty" }, "no servers")); return; }
  for (const s of [...state.servers.values()].sort((a, b) => a.serial.localeCompare(b.serial))) {
    const labels = Object.entries(s.labels || {}).map(([k, v]) => k + "=" + v).join(" ");
    box.append(tile("server", s.id, s.name || s.serial, s.serial + (labels ? " · " + labels : ""), serialJob(s.serial)));
  }
}

function renderNodes() {
  const box = document.getElementById("nodes");
  box.replaceChildren();
  if (state.nodes.size === 0) { box.append(el("p", { class: "empty" }, "no nodes")); return; }
  for (const n of [...state.nodes.values()].sort((a, b) => a.id.localeCompare(b.id))) {
    const t = tile("node", n.id, n.name || n.id, (n.macs || []).join(" "), serialJob(n.id));
    t.setAttribute("data-state", n.state);
    t.querySelector(".sub").textContent = n.state + " · " + (n.macs || []).join(" ");
    box.append(t);
  }
}

function renderFleets() {
  const box = document.getElementById("fleets");
  box.replaceChildren();
  if (state.fleets.size === 0) { box.append(el("p", { class: "empty" }, "no fleets")); return; }
  for (const f of [...state.fleets.values()].sort((a, b) => b.created_at.localeCompare(a.created_at))) {
    const c = f.counts, total = Math.max(c.total, 1);
    const bar = el("div", { class: "bar" },
      el("span", { class: "ok", style: "" }), el("span", { class: "bad" }), el("span", { class: "busy" }));
    bar.children[0].style.width = (100 * c.succeeded / total) + "%";
    bar.children[1].style.width = (100 * c.failed / total) + "%";
    bar.children[2].style.width = (100 * c.in_flight / total) + "%";
    box.append(el("div", { class: "fleet", "data-id": f.id, "data-status": f.status },
      el("div", {}, el("strong", {}, f.name || f.id), " ", f.status + " · " + c.succeeded + "/" + c.total + " succeeded, " +
         c.failed + " failed, " + c.in_flight + " running" + (f.reason ? " · " + f.reason : "")),
      bar));
  }
}

function render() { renderFleets(); renderServers(); renderNodes(); }

async function showJob(id) {
  const j = await api("/api/v1/jobs/" + encodeURIComponent(id));
  document.getElementById("detail-title").textContent = j.id;
  const facts = document.getElementById("detail-facts");
  facts.replaceChildren();
  const fact = (k, v, cls) => { facts.append(el("dt", {}, k), el("dd", cls ? { class: cls } : {}, v === null || v === undefined ? "-" : String(v))); };
  fact("server", j.server && j.server.serial);
  fact("status", j.status);
  fact("phase", j.phase);
  fact("outcome", j.outcome);
  if (j.failed_step) fact("failed step", j.failed_step, "failed-step");
  if (j.error) fact("error", j.error);
  const list = document.getElementById("detail-history");
  list.replaceChildren();
  const entries = j.history.map(h => ({ at: h.at, text: "status " + h.name + (h.detail ? ": " + h.detail : "") }))
    .concat(j.phases.map(p => ({ at: p.at, text: "phase " + p.name + (p.detail ? ": " + p.detail : "") })))
    .sort((a, b) => a.at.localeCompare(b.at));
  for (const e of entries) list.append(el("li", {}, e.at.replace("T", " ").replace("Z", "") + " " + e.text));
  document.getElementById("detail").hidden = false;
}

// --- live updates ---

let refreshTimer = null;
const dirtyFleets = new Set();
function scheduleRefresh() {
  if (refreshTimer) return;
  refreshTimer = setTimeout(async () => {
    refreshTimer = null;
    const ids = [...dirtyFleets];
    dirtyFleets.clear();
    for (const id of ids) {
      try { state.fleets.set(id, await api("/api/v1/fleets/" + encodeURIComponent(id))); } catch (e) { note(e.message); }
    }
    render();
  }, 250);
}

async function applyEvent(e) {
  if (e.type === "job") {
    let j = state.jobs.get(e.job_id);
    if (!j) { j = { id: e.job_id, serial: e.serial, seq: Number(e.id), status: "queued", phase: "" }; state.jobs.set(e.job_id, j); }
    if (e.kind === "transition") {
      j.status = e.name;
      if (e.name === "succeeded" || e.name === "failed" || e.name === "canceled") j.outcome = e.name;
    } else if (e.kind === "phase") {
      j.phase = e.name;
    }
    if (e.fleet_id) dirtyFleets.add(e.fleet_id);
  } else if (e.type === "node") {
    const n = state.nodes.get(e.node_id) || { id: e.node_id, macs: [] };
    n.state = e.name;
    state.nodes.set(e.node_id, n);
  } else if (e.type === "fleet") {
    dirtyFleets.add(e.fleet_id);
  }
  if (dirtyFleets.size) scheduleRefresh();
  render();
}

async function stream() {
  const badge = document.getElementById("stream");
  for (;;) {
    if (!state.token) return;
    const controller = new AbortController();
    state.controller = controller;
    try {
      const headers = { Authorization: "Bearer " + state.token, Accept: "text/event-stream" };
      if (state.lastEventId) headers["Last-Event-ID"] = state.lastEventId;
      const r = await fetch("/api/v1/events", { headers, signal: controller.signal, cache: "no-store" });
      if (r.status === 401) {
        if (state.onStreamOpen) { state.onStreamOpen(); state.onStreamOpen = null; }
        logout("the token was refused");
        return;
      }
      if (!r.ok || !r.body) throw new Error("event stream: HTTP " + r.status);
      badge.textContent = "live"; badge.className = "stream on";
      if (state.onStreamOpen) { state.onStreamOpen(); state.onStreamOpen = null; }
      const reader = r.body.getReader(), decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let id = null, data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("id: ")) id = line.slice(4);
            else if (line.startsWith("data: ")) data += line.slice(6);
          }
          if (!data) continue;
          if (id) state.lastEventId = id;
          // Until the first load is done, events wait: applied after it, in order, they bring
          // the snapshot up to date (nothing between the snapshot and the stream is lost).
          if (state.pending) state.pending.push(JSON.parse(data));
          else await applyEvent(JSON.parse(data));
        }
      }
    } catch (e) {
      if (!state.token) return;
      note("event stream dropped, resuming: " + e.message);
    }
    badge.textContent = "reconnecting"; badge.className = "stream off";
    await new Promise(r => setTimeout(r, 2000));
  }
}

// --- start ---

async function load() {
  const [servers, jobs, fleets] = await Promise.all([pages("/api/v1/servers", "servers"), api("/api/v1/jobs?limit=500"),
                                                     pages("/api/v1/fleets", "fleets")]);
  state.servers = new Map(servers.map(s => [s.id, s]));
  for (const j of jobs.jobs) state.jobs.set(j.id, { id: j.id, serial: j.serial, status: j.status, phase: j.phase, seq: 0 });
  state.fleets = new Map(fleets.map(f => [f.id, f]));
  // The controller says what it runs (its page's meta tag): no request for what is off.
  const features = (document.querySelector("meta[name=provisioner-features]") || {}).content || "";
  const nodesOn = features.split(" ").includes("nodes");
  document.getElementById("nodes-section").hidden = !nodesOn;
  state.nodes = nodesOn ? new Map((await pages("/api/v1/nodes", "nodes")).map(n => [n.id, n])) : new Map();
  render();
}

function logout(why) {
  state.token = null;
  sessionStorage.removeItem("provisioner-token");
  if (state.controller) state.controller.abort();
  document.getElementById("board").hidden = true;
  document.getElementById("logout").hidden = true;
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = why || "";
}

async function login(token) {
  state.token = token;
  // The stream opens first and its events are held; the snapshot is read after it opened.
  state.pending = [];
  state.streamOpen = new Promise(resolve => { state.onStreamOpen = resolve; });
  stream();
  await Promise.race([state.streamOpen, new Promise(r => setTimeout(r, 5000))]);
  try {
    await load();
  } catch (e) {
    if (state.token) logout("cannot load: " + e.message);
    return;
  }
  const held = state.pending || [];
  state.pending = null;
  for (const e of held) await applyEvent(e);
  sessionStorage.setItem("provisioner-token", token);
  document.getElementById("login").hidden = true;
  document.getElementById("board").hidden = false;
  document.getElementById("logout").hidden = false;
}

document.getElementById("login").addEventListener("submit", ev => {
  ev.preventDefault();
  login(document.getElementById("token").value.trim());
});
document.getElementById("logout").addEventListener("click", () => logout(""));
document.getElementById("close-detail").addEventListener("click", () => { document.getElementById("detail").hidden = true; });

// A token in the fragment (#token=…) is taken once and removed from the address bar: a
// fragment never reaches the server or its logs.
const fragment = new URLSearchParams(location.hash.slice(1));
if (fragment.get("token")) {
  sessionStorage.setItem("provisioner-token", fragment.get("token"));
  history.replaceState(null, "", location.pathname);
}
const saved = sessionStorage.getItem("provisioner-token");
if (saved) login(saved); else document.getElementById("login").hidden = false;
