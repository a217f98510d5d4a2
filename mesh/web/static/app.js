// The mesh dashboard: plain JavaScript, no framework. Reads /api/..., listens to
// /api/events (Server-Sent Events) and redraws what changed.
"use strict";

const $ = (sel, root) => (root || document).querySelector(sel);
const state = {nodes: {}, members: [], tasks: new Map(), cursor: null, filters: {},
               view: "overview", events: 0, taskId: null, syncUntil: 0};
const FINAL = new Set(["SUCCESS", "FAILURE", "REVOKED"]);
const SYNC_FOR = 15000;   // ms the task list is synced on each refresh after a new node or stream
const EVENT_STATE = {"task-sent": "PENDING", "task-received": "RECEIVED", "task-started": "STARTED",
  "task-succeeded": "SUCCESS", "task-failed": "FAILURE", "task-retried": "RETRY",
  "task-revoked": "REVOKED", "task-rejected": "REJECTED"};

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined) e.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}

function cookie(name) {
  const m = document.cookie.match(new RegExp("(?:^|; )" + name + "=([^;]*)"));
  return m ? decodeURIComponent(m[1]) : "";
}

async function api(path, opts) {
  const init = Object.assign({headers: {}}, opts || {});
  if (init.method === "POST") init.headers["X-CSRF-Token"] = cookie("mesh_csrf");
  let resp;
  try { resp = await fetch(path, init); }
  catch (e) {   // the browser's own words ("Failed to fetch") do not say what is down
    throw new Error(`cannot reach ${location.host}, the node serving this page (stopped or ` +
                    `restarting?): the page goes on trying (${e.message})`);
  }
  const body = await resp.json().catch(() => ({error: resp.statusText}));
  if (!resp.ok) throw new Error(body.error || resp.statusText);
  return body;
}

function showError(err) {
  const p = $("#error");
  p.textContent = err ? String(err.message || err) : "";
  p.hidden = !err;
}

const fmtTime = t => t ? new Date(t * 1000).toLocaleString() : "";
const fmtBytes = b => !b ? "" : b >= 1 << 30 ? (b / (1 << 30)).toFixed(1) + " GiB" :
  b >= 1 << 20 ? (b / (1 << 20)).toFixed(0) + " MiB" : (b / 1024).toFixed(0) + " KiB";
const fmtRuntime = r => (r === null || r === undefined) ? "" : formatValue(r, "s");
const badge = s => el("span", {class: "state s-" + (s || "UNKNOWN").toLowerCase()}, s || "?");

// ---- nodes ----------------------------------------------------------------------------
async function loadNodes() {
  const data = await api("/api/mesh/nodes");
  $("#here").textContent = "on " + data.node;
  state.members = data.members;
  for (const m of data.members) {
    if (!(m.node in state.nodes)) state.syncUntil = Date.now() + SYNC_FOR;   // a new node
    const st = m.status && !m.status.error ? m.status : {};
    state.nodes[m.node] = Object.assign(state.nodes[m.node] || {}, {
      name: m.node, state: m.state, address: m.endpoint, active: st.busy ?? m.load[0],
      total: st.total ?? m.load[1], queued: st.queued ?? m.load[2], tasks_per_s: st.tasks_per_s,
      processed: (st.succeeded ?? 0) + (st.failed ?? 0) + (st.revoked ?? 0),
      cpu_percent: st.cpu_percent, rss_bytes: st.rss_bytes});
  }
  const sel = $("#filters select[name=node]"), current = sel.value;
  sel.replaceChildren(el("option", {value: ""}, "any"),
    ...Object.keys(state.nodes).sort().map(n => el("option", {value: n}, n)));
  sel.value = current;
  renderNodes();
}

// Nodes the mesh knows but cannot ask (dead, or left): their journals, so the tasks they
// ran and their counts, are out of the list and the totals until they are back.
const unreachable = () => Object.values(state.nodes).filter(n => n.state === "dead" || n.state === "left")
  .map(n => n.name).sort();
const awayNote = what => { const away = unreachable();
  return away.length ? `${away.join(", ")} ${away.length > 1 ? "are" : "is"} down: ${what}` : ""; };

function renderNodes() {
  const rows = Object.values(state.nodes).sort((a, b) => a.name.localeCompare(b.name)).map(n => {
    const up = n.state === "alive" || n.state === "suspect";   // a dead node's last figures are not now's
    return el("tr", {"data-node": n.name},
      el("td", {}, n.name), el("td", {}, el("span", {class: "member m-" + n.state}, n.state)),
      el("td", {class: "mono"}, n.address || ""), el("td", {}, up ? `${n.active ?? "?"} / ${n.total ?? "?"}` : ""),
      el("td", {}, up ? n.queued ?? "" : ""), el("td", {}, up ? n.tasks_per_s ?? "" : ""),
      el("td", {}, up ? n.processed ?? "" : ""),
      el("td", {}, up && n.cpu_percent !== undefined ? Math.round(n.cpu_percent) + "%" : ""),
      el("td", {}, up ? fmtBytes(n.rss_bytes) : ""),
      el("td", {class: "buttons"}, n.state === "alive" ? [
        el("button", {title: "one more child", onclick: () => control(`/api/worker/pool/grow/${n.name}?n=1`)}, "+1"),
        el("button", {title: "one child less", onclick: () => control(`/api/worker/pool/shrink/${n.name}?n=1`)}, "−1"),
        el("button", {class: "danger", onclick: () => confirm(`Shut down ${n.name}?`) && control(`/api/worker/shutdown/${n.name}`)}, "stop"),
      ] : ""));
  });
  $("#nodes tbody").replaceChildren(...rows);
  $("#tasks-away").textContent = awayNote("the tasks it ran are listed again when it is back");
}

async function control(path) {
  try { await api(path, {method: "POST"}); showError(null); setTimeout(loadNodes, 300); }
  catch (e) { showError(e); }
}

async function loadTotals() {
  const data = await api("/api/mesh/summary");
  const sum = {};
  let held = 0, bytes = 0;
  for (const s of Object.values(data)) {
    if (s.error) continue;
    held += s.held;
    for (const [k, v] of Object.entries((s.journal || {}).finished || s.counts || {})) sum[k] = (sum[k] || 0) + v;
    bytes += (s.journal || {}).bytes || 0;
  }
  const box = (label, value, cls) => el("div", {class: "total " + (cls || "")}, el("b", {}, value), label);
  const away = awayNote("not counted");
  $("#totals").replaceChildren(box("held now", held), box("succeeded", sum.SUCCESS || 0, "ok"),
    box("failed", sum.FAILURE || 0, "bad"), box("revoked", sum.REVOKED || 0),
    box("in journals", fmtBytes(bytes) || "0 KiB"), away ? el("p", {class: "muted away"}, away) : "");
}

// ---- charts ---------------------------------------------------------------------------
async function loadCharts() {
  const win = Number($("#window").value);
  const data = await api(`/api/mesh/series?window=${win}`);
  const now = Date.now() / 1000, rate = [], lat = [];
  for (const [node, a] of Object.entries(data.nodes).sort()) {
    if (!a || a.error) continue;
    // lines: one point per bucket, null where there is no data (a gap: not joined)
    const lines = a.lines || {rate: a.series.map(p => [p[0] + a.step / 2, p[1] / a.step]),
                              latency: a.series.map(p => [p[0] + a.step / 2, p[5]])};
    rate.push({name: node, points: lines.rate});
    lat.push({name: node, points: lines.latency});
  }
  lineChart($("#chart-rate"), {series: rate, from: now - win, to: now, label: "throughput"});
  lineChart($("#chart-latency"), {series: lat, from: now - win, to: now, unit: "s", label: "latency"});
}

async function loadPeriodic() {
  const data = await api("/api/periodic");
  const box = $("#periodic");
  if (!data.available) { box.className = "empty"; box.textContent = "No periodic entries: " + data.reason + "."; return; }
  if (!data.entries.length) {
    box.className = "empty";
    box.textContent = "No periodic entries (app.conf.beat_schedule or app.add_periodic_task: docs/periodic.md).";
    return;
  }
  box.className = "";
  box.replaceChildren(el("table", {class: "grid"}, el("tr", {}, el("th", {}, "entry"), el("th", {}, "task"),
    el("th", {}, "last run"), el("th", {}, "next run"), el("th", {}, "fired by")),
    ...data.entries.map(e => el("tr", {}, el("td", {}, e.name), el("td", {}, e.task),
      el("td", {}, fmtTime(e.last_run)), el("td", {}, fmtTime(e.next_run)), el("td", {}, e.node || "")))));
}

// ---- tasks ----------------------------------------------------------------------------
function readFilters() {
  const f = new FormData($("#filters")), out = {};
  for (const [k, v] of f.entries()) if (v) out[k] = v;
  for (const k of ["since", "until"]) if (out[k]) out[k] = String(new Date(out[k]).getTime() / 1000);
  return out;
}

function matches(t) {
  const f = state.filters;
  if (f.state && t.state !== f.state) return false;
  if (f.name && t.name !== f.name) return false;
  if (f.node && t.worker !== f.node) return false;
  if (f.since && (t.received || 0) < Number(f.since)) return false;
  if (f.until && (t.received || 0) > Number(f.until)) return false;
  if (f.search && !`${t.name} ${t.args} ${t.kwargs}`.includes(f.search)) return false;
  return true;
}

// A page of tasks as the filters select them: the newest, or those after ``cursor``.
function fetchTasks(cursor) {
  const q = new URLSearchParams(Object.assign({limit: "50"}, state.filters));
  if (cursor) q.set("cursor", cursor);
  return api("/api/mesh/tasks?" + q);
}

async function loadTasks(more) {
  if (!more) state.tasks.clear();
  const data = await fetchTasks(more ? state.cursor : null);
  for (const t of data.tasks) state.tasks.set(t.uuid, t);
  state.cursor = data.cursor;
  renderTasks();
  const errs = Object.entries(data.errors || {}).map(([n, e]) => `${n}: ${e}`).join("; ");
  $("#tasks-more").replaceChildren(
    state.cursor ? el("button", {onclick: () => loadTasks(true).catch(showError)}, "Older tasks") : el("span", {class: "muted"}, "no older tasks"),
    errs ? el("span", {class: "error"}, " " + errs) : "");
}

// The newest tasks, merged into the list (nothing cleared, the cursor kept), for tasks
// the live stream did not bring: the node serving this page looks for the other nodes'
// event streams every 2 s, so a node that has just joined (or that this page has just
// started watching) runs tasks before their events flow; a browser that fell behind
// loses events too. Without this they would show only after a reload.
async function syncTasks() {
  const data = await fetchTasks(null);
  let changed = false;
  for (const t of data.tasks) {
    const known = state.tasks.get(t.uuid);
    if (!known || (FINAL.has(t.state) && !FINAL.has(known.state))) {
      state.tasks.set(t.uuid, Object.assign(known || {}, t));
      changed = true;
    }
  }
  if (changed && state.view !== "task") renderTasks();
}

function taskRow(t) {
  const res = t.state === "SUCCESS" ? t.result : (t.exception || t.result || "");
  return el("tr", {"data-uuid": t.uuid, class: t.fresh ? "fresh" : ""},
    el("td", {}, badge(t.state)), el("td", {}, t.name || ""),
    el("td", {class: "mono"}, el("a", {href: "#/task/" + t.uuid}, (t.uuid.length > 13 ? "…" + t.uuid.slice(-12) : t.uuid))),
    el("td", {class: "mono clip"}, t.args === undefined ? "" : `${t.args}${t.kwargs && t.kwargs !== "{}" ? " " + t.kwargs : ""}`),
    el("td", {class: "mono clip"}, res || ""), el("td", {}, t.worker || ""),
    el("td", {}, fmtTime(t.received)), el("td", {}, fmtRuntime(t.runtime)));
}

function renderTasks() {
  const list = [...state.tasks.values()].filter(matches);
  list.sort((a, b) => (FINAL.has(a.state) - FINAL.has(b.state)) ||
                      ((b.timestamp || b.received || 0) - (a.timestamp || a.received || 0)));
  $("#tasks tbody").replaceChildren(...list.slice(0, 500).map(taskRow));
  $("#task-count").textContent = `(${list.length} shown)`;
}

// ---- one task -------------------------------------------------------------------------
async function loadTask(id) {
  const t = await api("/api/task/info/" + encodeURIComponent(id));
  $("#task-title").replaceChildren(badge(t.state), " ", t.name || "?", " ", el("span", {class: "mono muted"}, t.uuid));
  const rows = [["id", t.uuid], ["name", t.name], ["state", t.state], ["node", (t.seen_on || [t.worker]).join(", ")],
    ["received", fmtTime(t.received)], ["started", fmtTime(t.started)],
    ["finished", fmtTime(t.succeeded || t.failed || t.revoked)], ["runtime", fmtRuntime(t.runtime)],
    ["retries", t.retries], ["eta", fmtTime(t.eta)], ["expires", fmtTime(t.expires)],
    ["priority", t.priority], ["parent", t.parent_id || ""], ["sent", fmtTime(t.sent)]];
  $("#task-fields").replaceChildren(...rows.filter(r => r[1] !== undefined && r[1] !== "" && r[1] !== null)
    .map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v))));
  $("#task-args").textContent = `args: ${t.args ?? ""}\nkwargs: ${t.kwargs ?? ""}`;
  const failed = t.state !== "SUCCESS" && (t.exception || t.traceback);
  $("#task-result-title").textContent = failed ? "Exception and traceback" : "Result";
  $("#task-result").textContent = failed ? `${t.exception || ""}\n\n${t.traceback || ""}` : (t.result ?? (FINAL.has(t.state) ? "" : "(not finished)"));
  $("#task-result").className = failed ? "traceback" : "";
  renderTimeline(t);
  $("#task-actions").replaceChildren(...(FINAL.has(t.state) ? [] : [
    el("button", {onclick: () => revoke(t.uuid, false)}, "Revoke"),
    el("button", {class: "danger", onclick: () => revoke(t.uuid, true)}, "Revoke and terminate")]));
}

function renderTimeline(t) {
  let ev = (t.events || []).map(e => ({type: e.type, ts: e.timestamp, node: e.node, note: e.exception || e.reason || (e.pid ? "pid " + e.pid : "")}));
  if (!ev.length) {   // from the journal: received, started (finished - runtime), finished
    const fin = t.succeeded || t.failed || t.revoked;
    ev = [["task-sent", t.sent], ["task-received", t.received], ["task-started", t.started],
          [t.state === "SUCCESS" ? "task-succeeded" : t.state === "FAILURE" ? "task-failed" : "task-revoked", fin]]
      .filter(p => p[1]).map(([type, ts]) => ({type, ts, node: t.worker, note: ""}));
  }
  ev.sort((a, b) => a.ts - b.ts);
  const t0 = ev.length ? ev[0].ts : 0, span = ev.length ? Math.max(1e-6, ev[ev.length - 1].ts - t0) : 1;
  const W = 560;
  const bar = el("div", {class: "timeline"}, ...ev.map(e => el("div", {class: "tl-row"},
    el("span", {class: "tl-type"}, badge(EVENT_STATE[e.type] || e.type)),
    el("span", {class: "tl-track"}, el("span", {class: "tl-dot", style: null, "data-x": ((e.ts - t0) / span * W).toFixed(0)})),
    el("span", {class: "mono"}, "+" + formatValue(e.ts - t0, "s")),
    el("span", {class: "muted"}, ` ${fmtTime(e.ts)} on ${e.node || "?"} ${e.note || ""}`))));
  $("#task-timeline").replaceChildren(ev.length ? bar : el("p", {class: "empty"}, "no events"));
  for (const dot of document.querySelectorAll(".tl-dot")) dot.style.left = (Number(dot.dataset.x) / W * 100) + "%";
}

async function revoke(id, terminate) {
  try { await api(`/api/task/revoke/${encodeURIComponent(id)}?terminate=${terminate}`, {method: "POST"}); await loadTask(id); }
  catch (e) { showError(e); }
}

// ---- live -----------------------------------------------------------------------------
// Does what the page holds of a task, from another node, stand over this event? The
// nodes' streams reach the page each at its own pace, so a node's event can arrive after
// a newer one from the node that holds the task now: an older event from another node
// does not take the row back (wall time, as mesh.monitor.State), nor does a requeue
// rejection from another node (a shed or a stop hands the task on, and says so once the
// receiver has taken it: after the receiver's own task-received). Once a node has handed
// the task on, the receiver's events take the row whatever their time.
const handedOn = e => e.type === "task-rejected" && Boolean(e.requeue);
function superseded(t, e) {
  if (!t.worker || t.worker === e.node || t.handedOn) return false;
  return handedOn(e) || (e.timestamp || 0) < (t.timestamp || 0);
}

function onEvent(e) {
  state.events++;
  if (e.type.startsWith("node-")) {
    const n = state.nodes[e.node] = state.nodes[e.node] || {name: e.node, state: "alive"};
    Object.assign(n, {active: e.active, total: e.total, queued: e.queued, processed: e.processed,
      tasks_per_s: e.tasks_per_s, cpu_percent: e.cpu_percent, rss_bytes: e.rss_bytes,
      state: e.type === "node-offline" ? "left" : "alive", address: e.address || n.address});
    return "nodes";
  }
  const st = EVENT_STATE[e.type];
  if (!st || !e.uuid) return null;
  let t = state.tasks.get(e.uuid);
  if (!t) { t = {uuid: e.uuid, state: st, fresh: true}; state.tasks.set(e.uuid, t); }
  for (const k of ["name", "args", "kwargs", "result", "exception", "runtime", "retries"]) if (e[k] !== undefined) t[k] = e[k];
  if (FINAL.has(st) || (!FINAL.has(t.state) && !superseded(t, e))) {
    t.state = st;
    t.worker = e.node;
    if (st === "RECEIVED") t.received = e.timestamp;
    if (st === "STARTED") t.started = e.timestamp;
    t.timestamp = e.timestamp;
    t.handedOn = handedOn(e);
  }
  if (state.taskId === e.uuid) setTimeout(() => loadTask(e.uuid).catch(showError), 200);
  return "tasks";
}

function connectLive() {
  const live = $("#live");
  const src = new EventSource("/api/events");
  src.onopen = () => {
    live.className = "live on"; live.textContent = "live";
    state.syncUntil = Date.now() + SYNC_FOR;     // (its peers' streams come a moment later)
  };
  src.onerror = () => { live.className = "live off"; live.textContent = "reconnecting"; };
  src.onmessage = msg => {
    const batch = JSON.parse(msg.data);
    const dirty = new Set();
    for (const e of batch.events) dirty.add(onEvent(e));
    if (dirty.has("nodes")) renderNodes();
    if (dirty.has("tasks") && state.view !== "task") renderTasks();
    live.textContent = `live · ${state.events} events` + (batch.lost ? ` · ${batch.lost} missed` : "");
    if (batch.lost) syncTasks().catch(showError);
  };
}

// ---- views ----------------------------------------------------------------------------
function route() {
  const h = location.hash || "#/";
  const m = h.match(/^#\/task\/(.+)$/);
  state.view = m ? "task" : h.startsWith("#/tasks") ? "tasks" : "overview";
  state.taskId = m ? decodeURIComponent(m[1]) : null;
  for (const v of ["overview", "tasks", "task"]) $("#view-" + v).hidden = state.view !== v;
  if (state.view === "overview") $("#view-tasks").hidden = false;   // the overview shows tasks too
  if (state.taskId) loadTask(state.taskId).catch(showError);
  else renderTasks();   // not redrawn while a task's page was shown: what happened meanwhile
}

async function refresh() {
  try {
    await loadNodes();
    if (state.view !== "task") await Promise.all([loadTotals(), loadCharts()]);
    if (Date.now() < state.syncUntil) await syncTasks();
    showError(null);
  } catch (e) { showError(e); }
}

document.addEventListener("DOMContentLoaded", () => {
  $("#filters").addEventListener("submit", ev => { ev.preventDefault(); state.filters = readFilters(); loadTasks(false).catch(showError); });
  $("#filters").addEventListener("reset", () => { state.filters = {}; setTimeout(() => loadTasks(false).catch(showError)); });
  $("#window").addEventListener("change", () => loadCharts().catch(showError));
  window.addEventListener("hashchange", route);
  route();
  refresh();
  loadPeriodic().catch(showError);
  loadTasks(false).catch(showError);
  api("/api/task/types").then(d => $("#task-types").replaceChildren(...d["task-types"].map(n => el("option", {value: n})))).catch(() => {});
  connectLive();
  setInterval(refresh, 5000);
});
