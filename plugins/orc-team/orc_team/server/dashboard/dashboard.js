// The team dashboard: presence, locks, activity and shared resources, live over /api/ws.
//
// Everything shown comes from the server and is treated as hostile: it reaches the page only
// as text nodes and attribute values (el() below), never as markup.  The token arrives in the
// URL fragment, moves to sessionStorage and leaves the address bar at once; it travels only in
// an Authorization header (HTTP) or the WebSocket subprotocol list, never in a URL.

import { diffLines, hunks } from "./diff.js";

const TOKEN_KEY = "orc-team-token";
const FEED_KEPT = 500;   // events held for filtering; 50 are shown
const FEED_SHOWN = 50;
const LOCK_ROWS = 200;   // rows laid out at once: a thousand would slow every repaint
const REPLAY_MAX = 200;  // a longer gap is caught up from the latest events only
const BACKOFF = [500, 1000, 2000, 4000, 8000, 15000];
const MARKERS = /^(?:<{7}|>{7})(?: |$)|^={7}$/m;

const $ = (id) => document.getElementById(id);

// -- building the page safely --------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") {
      for (const [name, v] of Object.entries(value)) if (v !== null && v !== undefined) node.dataset[name] = String(v);
    }
    else node.setAttribute(key, String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function text(value, fallback = "?") {
  return typeof value === "string" && value !== "" ? value : fallback;
}

function initials(name) {
  const parts = text(name).split(/[\s._@-]+/).filter(Boolean);
  const letters = (parts[0] || "?")[0] + (parts.length > 1 ? parts[parts.length - 1][0] : "");
  return letters.toUpperCase();
}

function hue(key) {
  let h = 0;
  for (const ch of text(key)) h = (h * 31 + ch.codePointAt(0)) % 360;
  return h;
}

function avatar(key, name) {
  const node = el("span", { class: "avatar", "aria-hidden": "true" }, initials(name));
  node.style.setProperty("--hue", String(hue(key)));
  return node;
}

// -- time --------------------------------------------------------------------------------

let skew = 0; // server clock minus ours, learned from event timestamps

function parseTime(value) {
  const t = typeof value === "string" ? Date.parse(value) : NaN;
  return Number.isFinite(t) ? t : null;
}

function now() {
  return Date.now() + skew;
}

export function ago(t) {
  if (t === null) return "";
  const s = Math.max(0, Math.round((now() - t) / 1000));
  if (s < 10) return "just now";
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

function timeNode(t) {
  return el("time", { datetime: t === null ? null : new Date(t).toISOString(),
    title: t === null ? null : new Date(t).toLocaleString(), dataset: { t: t ?? "" } }, ago(t));
}

function countdown(seconds) {
  if (seconds <= 0) return "expiring…";
  if (seconds < 60) return `${seconds} s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m} min ${String(seconds % 60).padStart(2, "0")} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} min`;
}

// -- the token -----------------------------------------------------------------------------

function takeToken() {
  const match = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (match) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

function claimsOf(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const json = decodeURIComponent(Array.from(atob(part),
      (c) => "%" + c.charCodeAt(0).toString(16).padStart(2, "0")).join(""));
    const claims = JSON.parse(json);
    return claims && typeof claims === "object" ? claims : {};
  } catch {
    return {};
  }
}

// -- state ---------------------------------------------------------------------------------

const state = {
  token: null,
  claims: {},
  feed: new Map(),       // key -> event data
  streams: new Map(),    // project -> {epoch, offset}: what we have seen, for `since`
  projects: new Set(),
  people: new Map(),     // user_id -> presence data (offline ones kept)
  locks: new Map(),      // task_id -> lock object
  resources: new Map(),  // resource_id -> listing entry
  filter: "",
  findTask: "",
  showOutput: false,
};

function feedKey(data) {
  if (data.project_id && Number.isInteger(data.offset)) return `${data.project_id}#${data.offset}`;
  return data.event_id ? `id:${data.event_id}` : `t:${data.timestamp}:${data.event_type}:${data.task_id}`;
}

function eventTime(data) {
  return parseTime(data.made_at) ?? parseTime(data.timestamp);
}

// -- the connection ------------------------------------------------------------------------

class Link {
  constructor(onMessage, onState, onOpen) {
    this.onMessage = onMessage;
    this.onState = onState;
    this.onOpen = onOpen;
    this.pending = new Map();
    this.n = 0;
    this.attempt = 0;
    this.ws = null;
    this.client = sessionStorage.getItem("orc-team-client") ||
      `dashboard-${crypto.getRandomValues(new Uint32Array(2)).join("")}`;
    sessionStorage.setItem("orc-team-client", this.client);
  }

  open() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const url = `${scheme}//${location.host}/api/ws?client=${encodeURIComponent(this.client)}`;
    this.onState(this.attempt ? "reconnecting" : "connecting");
    const ws = new WebSocket(url, ["orc-team", `orc-team.bearer.${state.token}`]);
    this.ws = ws;
    ws.onopen = () => { this.attempt = 0; this.onOpen(); };
    ws.onmessage = (ev) => {
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      if (!msg || typeof msg !== "object") return;
      const waiting = msg.id !== undefined && msg.id !== null ? this.pending.get(msg.id) : null;
      if (waiting) {
        this.pending.delete(msg.id);
        if (msg.type === "error") waiting.reject(msg.data || {});
        else waiting.resolve(msg.data || {});
        return;
      }
      this.onMessage(msg);
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      for (const waiting of this.pending.values()) {
        waiting.reject({ code: "DISCONNECTED", message: "the connection to the server was lost" });
      }
      this.pending.clear();
      if (tokenExpired()) { this.onState("signed-out"); return; }
      const delay = BACKOFF[Math.min(this.attempt, BACKOFF.length - 1)] * (0.8 + Math.random() * 0.4);
      this.attempt++;
      this.onState("reconnecting", delay);
      setTimeout(() => this.open(), delay);
    };
  }

  request(type, data) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      return Promise.reject({ code: "DISCONNECTED", message: "not connected to the server" });
    }
    const id = `d${++this.n}`;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      ws.send(JSON.stringify({ type, id, data }));
    });
  }
}

function tokenExpired() {
  return typeof state.claims.exp === "number" && state.claims.exp * 1000 <= Date.now();
}

async function api(path) {
  const resp = await fetch(path, { headers: { Authorization: `Bearer ${state.token}` },
    cache: "no-store", credentials: "omit", referrerPolicy: "no-referrer" });
  if (resp.status === 401) { setConnState("signed-out"); throw new Error("unauthorized"); }
  if (!resp.ok) throw new Error(`${path}: HTTP ${resp.status}`);
  return resp.json();
}

let link = null;
let connState = "connecting";
let racedPresence = null;
let raced = null; // while a snapshot is being read: the lock events that arrived meanwhile

function setConnState(next, delay) {
  connState = next;
  const node = $("conn");
  node.dataset.state = next;
  document.body.dataset.conn = next;
  const words = {
    connecting: "Connecting…", live: "Live", catching: "Catching up…",
    reconnecting: delay ? `Reconnecting in ${Math.max(1, Math.round(delay / 1000))} s…` : "Reconnecting…",
    "signed-out": "Signed out",
  };
  $("conn-text").textContent = words[next] || next;
  if (next === "signed-out") {
    showSignin(tokenExpired() ? "Your sign-in link has expired." : "The server refused this sign-in link.");
  }
}

// -- catching up -----------------------------------------------------------------------------

async function onOpen() {
  setConnState("catching");
  performance.mark("orc-open");
  const listing = await link.request("subscribe", { all_projects: true });
  raced = [];
  racedPresence = [];
  const [presence, locks, resources] = await Promise.all([
    api("/api/presence"), api("/api/locks"), link.request("resource_list", {})]);
  applyPresenceSnapshot(presence.presence || []);
  state.locks.clear();
  for (const lock of locks.locks || []) state.locks.set(lock.task_id, lock);
  for (const data of raced) applyEvent(data); // lock events that may be newer than the snapshot
  raced = null;
  state.resources.clear();
  for (const r of resources.resources || []) state.resources.set(r.resource_id, r);
  renderLocks(); renderResources();
  performance.mark("orc-snapshot");
  await Promise.allSettled((listing.projects || []).map((p) => catchUp(p)));
  renderFeed();
  if (connState === "catching") setConnState("live");
  if (!document.body.dataset.ready) {
    performance.mark("orc-ready");
    // The frame after the one that paints it all (for the benchmark's "first full render").
    requestAnimationFrame(() => setTimeout(() => performance.mark("orc-painted"), 0));
  }
  document.body.dataset.ready = "1";
}

async function catchUp(stream) {
  const project = stream.project_id;
  addProject(project);
  const known = state.streams.get(project);
  state.streams.set(project, { epoch: stream.epoch, offset: Math.max(known?.offset ?? 0, 0) });
  const q = `project=${encodeURIComponent(project)}`;
  // Live events already come (all_projects was subscribed first); what was kept before that
  // is read after it, so nothing falls between.  Seen twice counts once (by offset).
  if (known && known.epoch === stream.epoch && stream.last_offset - known.offset <= REPLAY_MAX) {
    if (known.offset >= stream.last_offset) return;
    const got = await api(`/api/events?${q}&since=${known.offset}` +
      `&epoch=${encodeURIComponent(stream.epoch)}&limit=${REPLAY_MAX}`);
    if (!got.truncated) { (got.events || []).forEach(onEvent); return; }
  }
  const latest = await api(`/api/events?${q}&limit=${FEED_SHOWN}`);
  (latest.events || []).forEach(onEvent);
}

// -- messages ----------------------------------------------------------------------------------

function onMessage(msg) {
  if (msg.type === "event" && msg.data) onEvent(msg.data);
  else if (msg.type === "presence" && msg.data) onPresence(msg.data);
}

function onEvent(data) {
  const t = parseTime(data.timestamp);
  if (t !== null && Math.abs(t - Date.now()) < 5000) skew = skew * 0.8 + (t - Date.now()) * 0.2;
  if (data.project_id) {
    addProject(data.project_id);
    const stream = state.streams.get(data.project_id);
    if (stream && Number.isInteger(data.offset) && data.offset > stream.offset) stream.offset = data.offset;
  }
  const key = feedKey(data);
  const fresh = !state.feed.has(key);
  state.feed.set(key, data);
  if (state.feed.size > FEED_KEPT) {
    const oldest = [...state.feed.entries()].sort((a, b) => eventTime(a[1]) - eventTime(b[1]));
    for (const [k] of oldest.slice(0, state.feed.size - FEED_KEPT)) state.feed.delete(k);
  }
  if (fresh) applyEvent(data);
  if (raced && text(data.event_type).startsWith("lock.")) raced.push(data);
  noteUser(data);
  scheduleFeed();
}

function applyEvent(data) {
  const p = data.payload && typeof data.payload === "object" ? data.payload : {};
  const type = data.event_type;
  if (type === "lock.acquired" || type === "lock.stolen") {
    const current = state.locks.get(data.task_id);
    // Fencing tokens only grow: an older grant (a replay, or an event that raced the
    // snapshot) never replaces a newer one.
    if (current && Number.isInteger(current.token) && !(p.token > current.token)) return;
    state.locks.set(data.task_id, {
      task_id: data.task_id, project_id: data.project_id, owner: p.owner ?? data.user,
      owner_name: p.owner_name ?? data.user_name, client: p.client, token: p.token, ttl: p.ttl,
      acquired_at: data.timestamp, expires_at: p.expires_at });
    renderLocks();
  } else if (type === "lock.released" || type === "lock.expired") {
    const current = state.locks.get(data.task_id);
    if (current && (!Number.isInteger(p.token) || !Number.isInteger(current.token) || p.token >= current.token)) {
      state.locks.delete(data.task_id);
      renderLocks();
    }
  } else if (type === "resource.updated" && p.resource_id) {
    const have = state.resources.get(p.resource_id);
    if (!have || (Number.isInteger(p.version) && p.version > have.version)) {
      state.resources.set(p.resource_id, { resource_id: p.resource_id, version: p.version,
        updated_by: p.updated_by ?? data.user, updated_at: data.timestamp, project_id: data.project_id });
      renderResources();
      editorNotice(p.resource_id);
    }
  }
}

function addProject(project) {
  if (!project || state.projects.has(project)) return;
  state.projects.add(project);
  const select = $("project-filter");
  const options = [...state.projects].sort();
  const keep = select.value;
  select.replaceChildren(el("option", { value: "" }, "All projects"),
    ...options.map((p) => el("option", { value: p }, p)));
  select.value = keep;
}

// -- presence ----------------------------------------------------------------------------------

function applyPresenceSnapshot(list) {
  for (const person of state.people.values()) {
    if (person.status !== "offline") person.status = "offline";
    person.active_task = null;
  }
  for (const p of list) state.people.set(p.user_id, { ...p });
  for (const push of racedPresence || []) {  // pushes that may be newer than the snapshot
    const snap = list.find((p) => p.user_id === push.user_id);
    if (!snap || (parseTime(push.last_seen) ?? 0) >= (parseTime(snap.last_seen) ?? 0)) {
      state.people.set(push.user_id, { ...state.people.get(push.user_id), ...push });
    }
  }
  racedPresence = null;
  renderPresence();
}

function onPresence(data) {
  if (!data.user_id) return;
  if (racedPresence) racedPresence.push(data);
  state.people.set(data.user_id, { ...state.people.get(data.user_id), ...data });
  renderPresence();
}

function noteUser(data) {
  if (!data.user || state.people.has(data.user)) return;
  state.people.set(data.user, { user_id: data.user, display_name: data.user_name,
    status: "offline", active_task: null, last_seen: data.timestamp });
  renderPresence();
}

const STATUS_ORDER = { active: 0, online: 1, away: 2, offline: 3 };
const STATUS_WORDS = { active: "Active", online: "Online", away: "Away", offline: "Offline" };

function renderPresence() {
  const people = [...state.people.values()].sort((a, b) =>
    (STATUS_ORDER[a.status] ?? 9) - (STATUS_ORDER[b.status] ?? 9) ||
    text(a.display_name, a.user_id).localeCompare(text(b.display_name, b.user_id)));
  const me = state.claims.sub;
  $("presence").replaceChildren(...people.map((p) => {
    const status = STATUS_ORDER[p.status] === undefined ? "offline" : p.status;
    const name = text(p.display_name, p.user_id);
    const detail = status === "active" && p.active_task
      ? el("span", { class: "detail" }, "on ", el("code", { class: "task" }, p.active_task))
      : el("span", { class: "detail" }, status === "offline" || status === "away"
        ? ["last seen ", timeNode(parseTime(p.last_seen))] : STATUS_WORDS[status]);
    return el("li", { class: `person ${status}`, dataset: { user: p.user_id, status } },
      el("span", { class: "avatar-wrap" }, avatar(p.user_id, name),
        el("span", { class: `indicator ${status}`, title: STATUS_WORDS[status] })),
      el("span", { class: "person-text" },
        el("span", { class: "name" }, name, p.user_id === me ? el("span", { class: "you" }, " (you)") : null),
        detail),
      el("span", { class: `badge ${status}` }, STATUS_WORDS[status]));
  }));
  const online = people.filter((p) => p.status !== "offline").length;
  $("team-count").textContent = people.length ? `${online} of ${people.length} online` : "";
  $("presence-empty").hidden = people.length > 0;
}

// -- locks -----------------------------------------------------------------------------------

let refetching = false;

function renderLocks() {
  const find = state.findTask.toLowerCase();
  const matching = [...state.locks.values()]
    .filter((l) => !state.filter || l.project_id === state.filter)
    .filter((l) => !find || text(l.task_id).toLowerCase().includes(find) ||
      text(l.owner_name, text(l.owner)).toLowerCase().includes(find))
    .sort((a, b) => text(a.task_id).localeCompare(text(b.task_id)));
  const shown = matching.slice(0, LOCK_ROWS);
  $("locks").replaceChildren(...shown.map((l) => {
    const name = text(l.owner_name, text(l.owner));
    const bar = el("span", { class: "ttl-bar" }, el("span", { class: "ttl-fill" }));
    return el("tr", { dataset: { task: l.task_id } },
      el("td", {}, el("code", { class: "task" }, l.task_id)),
      el("td", {}, el("span", { class: "holder" }, avatar(l.owner, name), el("span", {}, name))),
      el("td", { class: "muted" }, text(l.project_id, "—")),
      el("td", { class: "ttl", dataset: { expires: parseTime(l.expires_at) ?? "", ttl: l.ttl ?? "" } },
        el("span", { class: "ttl-text" }), bar));
  }));
  $("locks-count").textContent = state.locks.size ? String(matching.length) : "";
  $("locks-empty").hidden = shown.length > 0;
  $("locks-more").hidden = matching.length <= shown.length;
  $("locks-more").textContent = `Showing ${shown.length} of ${matching.length} locks: ` +
    "find a task or holder, or pick a project, to narrow them.";
  tickLocks();
}

function tickLocks() {
  let due = false;
  for (const cell of $("locks").querySelectorAll("td.ttl")) {
    const expires = Number(cell.dataset.expires);
    if (!cell.dataset.expires) continue;
    const left = Math.max(0, Math.ceil((expires - now()) / 1000));
    const ttl = Number(cell.dataset.ttl) || left || 1;
    cell.firstChild.textContent = countdown(left);
    cell.querySelector(".ttl-fill").style.transform = `scaleX(${Math.min(1, left / ttl)})`;
    cell.classList.toggle("low", left <= Math.max(5, ttl * 0.2));
    if (left <= 0 && expires < now() - 1500) due = true;
  }
  // A holder's heartbeat extends its lock without an event: a countdown that ran out without
  // lock.expired (sent within a second of expiry) means it was extended.
  if (due && !refetching && connState === "live") {
    refetching = true;
    api("/api/locks").then((locks) => {
      state.locks.clear();
      for (const lock of locks.locks || []) state.locks.set(lock.task_id, lock);
      renderLocks();
    }).catch(() => {}).finally(() => { setTimeout(() => { refetching = false; }, 2000); });
  }
}

// -- the feed --------------------------------------------------------------------------------

function what(data) {
  const p = data.payload && typeof data.payload === "object" ? data.payload : {};
  const task = el("code", { class: "task" }, text(data.task_id));
  const secs = (v) => (typeof v === "number" ? ` in ${v.toFixed(1)} s` : "");
  switch (data.event_type) {
    case "task.started": return ["started ", task];
    case "task.completed": return ["completed ", task, el("span", { class: "muted" }, secs(p.duration_s))];
    case "task.failed": return ["failed ", task, el("span", { class: "muted" },
      p.signal ? ` (signal ${p.signal})` : ` (exit ${text(String(p.exit_code ?? "?"))})`)];
    case "task.transcript": return [task, " ", el("span", { class: `line ${p.role === "stderr" ? "stderr" : ""}` },
      text(p.content, ""))];
    case "task.phase": return ["moved ", task, " to ", el("em", {}, text(p.phase))];
    case "lock.acquired": return ["locked ", task];
    case "lock.released": return [p.forced_by ? "force-released " : "released ", task];
    case "lock.expired": return ["'s lock on ", task, " expired"];
    case "lock.stolen": return ["took ", task, " from ", text(p.old_owner)];
    case "resource.updated": return ["saved ", el("strong", {}, text(p.resource_id)),
      el("span", { class: "muted" }, ` (version ${text(String(p.version ?? "?"))})`)];
    default: return [text(data.event_type), " ", data.task_id ? task : null];
  }
}

function actor(data) {
  if (data.event_type === "lock.expired") {
    const owner = data.payload?.previous_owner;
    return text(state.people.get(owner)?.display_name, text(owner, "Someone"));
  }
  return text(data.user_name, text(data.user, "Server"));
}

function actorKey(data) {
  return data.event_type === "lock.expired" ? data.payload?.previous_owner : data.user;
}

function kind(type) {
  const head = text(type).split(".")[0];
  if (type === "task.failed" || type === "lock.stolen" || type === "lock.expired") return "warn";
  if (type === "task.completed") return "ok";
  return head;
}

let feedQueued = false;
function scheduleFeed() {
  if (feedQueued) return;
  feedQueued = true;
  setTimeout(() => { feedQueued = false; renderFeed(); }, 0);
}

function renderFeed() {
  const events = [...state.feed.values()]
    .filter((d) => !state.filter || d.project_id === state.filter)
    .filter((d) => state.showOutput || d.event_type !== "task.transcript")
    .sort((a, b) => (eventTime(b) ?? 0) - (eventTime(a) ?? 0) || (b.offset ?? 0) - (a.offset ?? 0))
    .slice(0, FEED_SHOWN);
  $("feed").replaceChildren(...events.map((d) => {
    const who = actor(d);
    return el("li", { class: `item k-${kind(d.event_type)}`, dataset: { type: d.event_type, task: d.task_id } },
      avatar(actorKey(d) || who, who),
      el("div", { class: "item-body" },
        el("p", { class: "sentence" }, el("strong", { class: "actor" }, who),
          d.event_type === "lock.expired" ? "" : " ", what(d)),
        el("p", { class: "meta" }, timeNode(eventTime(d)),
          d.project_id ? [" · ", el("span", { class: "project" }, d.project_id)] : null)));
  }));
  $("feed-empty").hidden = events.length > 0;
}

// -- resources and the editor ----------------------------------------------------------------

const editor = { id: null, base: 0, baseContent: "", merging: false, conflict: null };

function renderResources() {
  const list = [...state.resources.values()].sort((a, b) => a.resource_id.localeCompare(b.resource_id));
  $("resources").replaceChildren(...list.map((r) => el("li", {},
    el("button", { type: "button", class: `res ${r.resource_id === editor.id ? "open" : ""}`,
      dataset: { resource: r.resource_id } },
      el("span", { class: "res-name" }, r.resource_id),
      el("span", { class: "res-meta" }, `v${r.version} · ${text(r.updated_by)} · `,
        timeNode(parseTime(r.updated_at)))))));
  $("resources-empty").hidden = list.length > 0;
}

function status(node, message, tone = "") {
  node.textContent = message;
  node.dataset.tone = tone;
}

async function openResource(id) {
  try {
    const r = await link.request("resource_get", { resource_id: id });
    loadEditor(id, r.version, r.content ?? "");
    status($("editor-status"), `Version ${r.version}, saved by ${text(r.updated_by)} ${ago(parseTime(r.updated_at))}.`);
  } catch (err) {
    if (err.code === "NOT_FOUND") {
      loadEditor(id, 0, "");
      status($("editor-status"), "A new resource: saving creates version 1.");
    } else {
      status($("editor-status"), text(err.message, "could not load the resource"), "bad");
    }
  }
}

function loadEditor(id, version, content) {
  editor.id = id;
  editor.base = version;
  editor.baseContent = content;
  $("editor").hidden = false;
  $("editor-id").textContent = id;
  $("editor-version").textContent = version ? `editing version ${version}` : "new";
  $("editor-text").value = content;
  renderResources();
}

function editorNotice(id) {
  if (editor.id !== id) return;
  const r = state.resources.get(id);
  if (r && r.version > editor.base) {
    status($("editor-status"), `${text(r.updated_by)} saved version ${r.version} meanwhile; ` +
      `your edits start from version ${editor.base || "none"}.`, "warn");
  }
}

async function save(expected, content) {
  const body = { resource_id: editor.id, content, expected_version: expected };
  const project = state.resources.get(editor.id)?.project_id ?? (state.filter || null);
  if (project) body.project_id = project;
  return link.request("resource_put", body);
}

let markersWarned = false;

async function onSave() {
  const content = $("editor-text").value;
  if (MARKERS.test(content) && !markersWarned) {
    markersWarned = true;
    status($("editor-status"), "The text still has conflict markers (<<<<<<<, =======, >>>>>>>): " +
      "resolve them, or click Save again to save it as it is.", "warn");
    return;
  }
  markersWarned = false;
  await saveFrom(editor.base, content, $("editor-status"));
}

async function saveFrom(expected, content, where) {
  try {
    const made = await save(expected, content);
    loadEditor(made.resource_id, made.version, made.content ?? content);
    state.resources.set(made.resource_id, made);
    renderResources();
    status($("editor-status"), `Saved version ${made.version}.`, "ok");
    return true;
  } catch (err) {
    if (err.code === "CONFLICT" && err.current) {
      showConflict(err.current, content);
    } else {
      status(where, text(err.message, "the save failed"), "bad");
    }
    return false;
  }
}

function showConflict(current, mine) {
  editor.conflict = { current, mine };
  const dialog = $("conflict");
  const when = ago(parseTime(current.updated_at));
  status($("conflict-text"), `This resource was modified by ${text(current.updated_by)} ${when} ` +
    `(version ${current.version}; you started from version ${editor.base || "none"}).`);
  $("diff").hidden = true;
  $("diff").replaceChildren();
  status($("conflict-status"), "");
  if (!dialog.open) dialog.showModal();
}

function renderDiff(theirs, mine, theirsLabel) {
  const parts = hunks(diffLines(theirs, mine));
  const rows = [el("div", { class: "diff-file" }, `--- ${theirsLabel}`),
    el("div", { class: "diff-file" }, "+++ mine")];
  for (const h of parts) {
    rows.push(el("div", { class: "diff-hunk" }, h.header));
    for (const o of h.ops) {
      const cls = o.op === "+" ? "add" : o.op === "-" ? "del" : "ctx";
      rows.push(el("div", { class: `diff-line ${cls}` }, el("span", { class: "sign" }, o.op), o.text));
    }
  }
  if (!parts.length) rows.push(el("div", { class: "diff-hunk" }, "The two versions are the same."));
  $("diff").replaceChildren(...rows);
  $("diff").hidden = false;
}

async function onChoice(choice) {
  const c = editor.conflict;
  if (!c) return;
  const dialog = $("conflict");
  const where = $("conflict-status");
  if (choice === "diff") {
    renderDiff(c.current.content ?? "", c.mine, `version ${c.current.version} (${text(c.current.updated_by)})`);
  } else if (choice === "theirs") {
    dialog.close();
    loadEditor(c.current.resource_id, c.current.version, c.current.content ?? "");
    status($("editor-status"), `Now showing version ${c.current.version} by ${text(c.current.updated_by)}; your edits were dropped.`);
  } else if (choice === "mine") {
    dialog.close();
    // Saved over the newer version knowingly: against the version the conflict showed.
    await saveFrom(c.current.version, c.mine, $("editor-status"));
  } else if (choice === "merge") {
    status(where, "Merging…");
    try {
      const merged = await link.request("resource_merge", { resource_id: c.current.resource_id,
        base_version: editor.base, content: c.mine });
      dialog.close();
      loadEditor(c.current.resource_id, merged.version, c.current.content ?? "");
      $("editor-text").value = merged.content;
      if (merged.conflicts > 0) {
        status($("editor-status"), `Merged with version ${merged.version}: ${merged.conflicts} ` +
          "conflict(s) left between <<<<<<< and >>>>>>> markers. Resolve them, then Save.", "warn");
      } else if (await saveFrom(merged.version, merged.content, $("editor-status"))) {
        status($("editor-status"), `Merged cleanly with version ${merged.version} and saved as version ${editor.base}.`, "ok");
      }
    } catch (err) {
      status(where, text(err.message, "the merge failed"), "bad");
    }
  }
}

// -- the page --------------------------------------------------------------------------------

function showSignin(why) {
  $("signin").hidden = false;
  $("signin-why").textContent = why;
  $("board").hidden = !state.token || tokenExpired();
}

function tick() {
  for (const node of document.querySelectorAll("time[data-t]")) {
    if (node.dataset.t) node.textContent = ago(Number(node.dataset.t));
  }
  tickLocks();
}

function wire() {
  $("project-filter").addEventListener("change", (e) => {
    state.filter = e.target.value;
    renderFeed(); renderLocks();
  });
  $("find-task").addEventListener("input", (e) => { state.findTask = e.target.value.trim(); renderLocks(); });
  $("show-output").addEventListener("change", (e) => { state.showOutput = e.target.checked; renderFeed(); });
  $("resources").addEventListener("click", (e) => {
    const button = e.target.closest("button[data-resource]");
    if (button) openResource(button.dataset.resource);
  });
  $("new-resource").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = $("new-resource-id");
    if (input.checkValidity()) { openResource(input.value); input.value = ""; }
  });
  $("editor-save").addEventListener("click", onSave);
  $("editor-text").addEventListener("input", () => { markersWarned = false; });
  $("editor-close").addEventListener("click", () => {
    editor.id = null; $("editor").hidden = true; renderResources();
  });
  for (const button of document.querySelectorAll("#conflict [data-choice]")) {
    button.addEventListener("click", () => onChoice(button.dataset.choice));
  }
  $("conflict-cancel").addEventListener("click", () => $("conflict").close());
}

function main() {
  state.token = takeToken();
  wire();
  if (!state.token) { setConnState("signed-out"); showSignin("This page needs a sign-in link."); return; }
  state.claims = claimsOf(state.token);
  const name = text(state.claims.name, text(state.claims.sub));
  $("me").replaceChildren(avatar(state.claims.sub, name), el("span", {}, name));
  if (tokenExpired()) { setConnState("signed-out"); return; }
  $("board").hidden = false;
  link = new Link(onMessage, setConnState, () => {
    onOpen().catch((err) => console.warn("catching up failed:", err && err.message));
  });
  link.open();
  setInterval(tick, 1000);
}

main();
