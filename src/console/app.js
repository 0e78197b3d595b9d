// Troupe console: a single-page client of the public API (REST under /api/v1 and the
// WebSocket /api/v1/ws), written to double as a reference client. No build step.
//
// Layout of this file:
//   helpers        DOM builder, time formatting, ids
//   Api            REST calls with the bearer token, errors as ApiError
//   Live           the one WebSocket: requests with ids, backoff reconnect, resubscribe
//   SessionList    the owner's sessions, filtered, kept live by the owner feed
//   SessionView    one session: history, live stream (deduplicated by seq), queue, composer
//   Operators      actor table, readiness and metrics, refreshed every 2 s
//   router         #/ · #/sessions/<id> · #/operators

"use strict";

const TOKEN_KEY = "troupe.token";
const ADMIN_TOKEN_KEY = "troupe.adminToken";
const HISTORY_PAGE = 500;
const PING_INTERVAL_MS = 25000;
const REQUEST_TIMEOUT_MS = 15000;
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 15000;
const GAP_FILL_AFTER_MS = 1500;
const OPS_REFRESH_MS = 2000;

// ---------------------------------------------------------------- helpers

const $ = (id) => document.getElementById(id);

/** Builds an element: h("div", {class: "x", dataset: {seq: 3}}, "text", child). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "testid") el.dataset.testid = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** A random RFC 4122 v4 id; works outside secure contexts, unlike crypto.randomUUID. */
function uuid4() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const x = [...b].map((n) => n.toString(16).padStart(2, "0")).join("");
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20)}`;
}

const shortId = (id) => (id ? String(id).slice(-8) : "");

function clockTime(ts) {
  const d = new Date(ts);
  return isNaN(d) ? "" : d.toLocaleTimeString([], { hour12: false });
}

function age(ts) {
  const d = new Date(ts);
  if (!ts || isNaN(d)) return "";
  let s = Math.max(0, Math.round((Date.now() - d.getTime()) / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  s %= 60;
  if (m < 60) return `${m}m ${s}s`;
  const hr = Math.floor(m / 60);
  if (hr < 48) return `${hr}h ${m % 60}m`;
  return `${Math.floor(hr / 24)}d`;
}

function pretty(value) {
  if (typeof value === "string") return value;
  try {
    return JSON.stringify(value, null, 2);
  } catch {
    return String(value);
  }
}

function toast(message, kind = "info") {
  const el = h("div", { class: `toast ${kind}`, testid: "toast", role: kind === "error" ? "alert" : "status" }, message);
  $("toasts").append(el);
  setTimeout(() => el.remove(), kind === "error" ? 7000 : 3500);
}

function sessionName(s) {
  return s.title || s.key || `session ${shortId(s.id)}`;
}

// ---------------------------------------------------------------- tokens

const tokens = {
  get user() {
    return localStorage.getItem(TOKEN_KEY) || "";
  },
  get admin() {
    return localStorage.getItem(ADMIN_TOKEN_KEY) || "";
  },
  save(user, admin) {
    if (user) localStorage.setItem(TOKEN_KEY, user);
    else localStorage.removeItem(TOKEN_KEY);
    if (admin) localStorage.setItem(ADMIN_TOKEN_KEY, admin);
    else localStorage.removeItem(ADMIN_TOKEN_KEY);
  },
};

function openTokenPanel(hint) {
  $("token-input").value = tokens.user;
  $("admin-token-input").value = tokens.admin;
  if (hint) $("token-hint").textContent = hint;
  $("token-panel").hidden = false;
  $("token-input").focus();
}

// ---------------------------------------------------------------- REST

class ApiError extends Error {
  constructor(code, message, status, body) {
    super(message);
    this.code = code;
    this.status = status;
    this.body = body;
  }
}

let unauthorizedShown = false;

/** Calls the REST API; resolves to the parsed JSON (null for 204), rejects with ApiError. */
async function api(method, path, body, { admin = false, raw = false } = {}) {
  const headers = { Accept: raw ? "*/*" : "application/json" };
  const token = admin ? tokens.admin || tokens.user : tokens.user;
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  try {
    res = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch {
    throw new ApiError("network", "The server cannot be reached.", 0, null);
  }
  const text = res.status === 204 ? "" : await res.text();
  if (raw) return { status: res.status, ok: res.ok, text };
  let json = null;
  if (text) {
    try {
      json = JSON.parse(text);
    } catch {
      json = null;
    }
  }
  if (!res.ok) {
    const err = (json && json.error) || { code: `http_${res.status}`, message: text.slice(0, 200) || res.statusText };
    if (res.status === 401 && !unauthorizedShown) {
      unauthorizedShown = true;
      openTokenPanel("This server needs a token (401 unauthorized). Enter one to continue.");
    }
    throw new ApiError(err.code, err.message || err.code, res.status, json);
  }
  return json;
}

const enc = encodeURIComponent;

// ---------------------------------------------------------------- WebSocket

/**
 * The one WebSocket connection. Requests carry an id and resolve on the matching
 * `ack` / `subscribed` / `pong`, or reject on `error`. When the socket drops it
 * reconnects with exponential backoff (and jitter) and asks its listeners to
 * resubscribe, each with the `after_seq` it has seen.
 */
class Live {
  constructor() {
    this.ws = null;
    this.failures = 0;
    this.nextId = 1;
    this.pending = new Map();
    this.reconnectTimer = null;
    this.countdownTimer = null;
    this.pingTimer = null;
    this.onEvent = () => {};
    this.onOpen = () => {};
    this.onTruncated = () => {};
  }

  get open() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  url() {
    const proto = location.protocol === "https:" ? "wss:" : "ws:";
    const token = tokens.user;
    const query = token ? `?access_token=${enc(token)}` : "";
    return `${proto}//${location.host}/api/v1/ws${query}`;
  }

  connect() {
    clearTimeout(this.reconnectTimer);
    clearInterval(this.countdownTimer);
    if (this.ws) {
      const old = this.ws;
      this.ws = null;
      old.close();
    }
    this.status("connecting", "connecting…");
    let ws;
    try {
      ws = new WebSocket(this.url());
    } catch {
      this.scheduleReconnect();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.failures = 0;
      this.status("live", "live");
      this.pingTimer = setInterval(() => this.request({ type: "ping" }).catch(() => {}), PING_INTERVAL_MS);
      this.onOpen();
    };
    ws.onmessage = (m) => {
      if (this.ws !== ws) return;
      let frame;
      try {
        frame = JSON.parse(m.data);
      } catch {
        return;
      }
      this.dispatch(frame);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      clearInterval(this.pingTimer);
      for (const [, p] of this.pending) p.reject(new ApiError("disconnected", "connection closed", 0, null));
      this.pending.clear();
      this.scheduleReconnect(ev);
    };
    // A failed socket always closes too; onclose does the work.
    ws.onerror = () => {};
  }

  scheduleReconnect(ev) {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this.failures);
    const delay = Math.round(base * (0.8 + Math.random() * 0.4));
    this.failures += 1;
    const until = Date.now() + delay;
    const why = ev && ev.reason ? ` (${ev.reason})` : "";
    const tick = () => {
      const left = Math.max(0, Math.ceil((until - Date.now()) / 1000));
      this.status("reconnecting", `reconnecting… ${left}s${why}`);
    };
    tick();
    this.countdownTimer = setInterval(tick, 1000);
    this.reconnectTimer = setTimeout(() => {
      clearInterval(this.countdownTimer);
      this.connect();
    }, delay);
  }

  /** Reconnects now (after a token change, or the user clicking the indicator). */
  reconnectNow() {
    this.failures = 0;
    this.connect();
  }

  status(state, text) {
    const el = document.querySelector('[data-testid="connection-status"]');
    el.dataset.state = state;
    el.querySelector(".conn-text").textContent = text;
  }

  request(frame) {
    if (!this.open) return Promise.reject(new ApiError("disconnected", "not connected", 0, null));
    const id = `c${this.nextId++}`;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new ApiError("timeout", "no answer from the server", 0, null));
      }, REQUEST_TIMEOUT_MS);
      this.pending.set(id, {
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      this.ws.send(JSON.stringify({ ...frame, id }));
    });
  }

  dispatch(frame) {
    switch (frame.type) {
      case "event":
        this.onEvent(frame);
        return;
      case "truncated":
        this.onTruncated(frame);
        return;
      case "subscribed":
      case "ack":
      case "pong": {
        const p = this.pending.get(frame.id);
        if (p) {
          this.pending.delete(frame.id);
          p.resolve(frame);
        }
        return;
      }
      case "error": {
        const p = this.pending.get(frame.id);
        if (p) {
          this.pending.delete(frame.id);
          p.reject(new ApiError(frame.code, frame.message, 0, frame));
        } else if (frame.message) {
          toast(`${frame.code}: ${frame.message}`, "error");
        }
        return;
      }
      default:
        return;
    }
  }
}

const live = new Live();

// ---------------------------------------------------------------- providers

let providers = [];

async function loadProviders() {
  try {
    const res = await api("GET", "/api/v1/providers");
    providers = (res && res.providers) || [];
  } catch (e) {
    providers = [];
    if (e.status !== 401) toast(`Providers: ${e.message}`, "error");
  }
  const select = $("provider-select");
  const filter = $("filter-provider");
  const keepFilter = filter.value;
  select.replaceChildren();
  filter.replaceChildren(h("option", { value: "" }, "any provider"));
  for (const p of providers) {
    const label = p.available === false ? `${p.name} (unavailable)` : p.name;
    const title = [p.kind, capabilityText(p.capabilities)].filter(Boolean).join(" · ");
    select.append(h("option", { value: p.name, disabled: p.available === false, title }, label));
    filter.append(h("option", { value: p.name }, p.name));
  }
  const firstAvailable = providers.find((p) => p.available !== false);
  if (firstAvailable) select.value = firstAvailable.name;
  filter.value = keepFilter;
}

function capabilityText(caps) {
  if (!caps || typeof caps !== "object") return "";
  return Object.entries(caps)
    .filter(([, v]) => v === true)
    .map(([k]) => k)
    .join(", ");
}

// ---------------------------------------------------------------- session list

/** The owner's sessions, filtered; kept live by the owner feed (`session_id: "*"`). */
const sessionList = {
  sessions: new Map(),
  nextAfter: null,
  loading: 0,
  pendingDelete: null,

  filters() {
    return {
      project: $("filter-project").value.trim(),
      provider: $("filter-provider").value,
      state: $("filter-state").value,
    };
  },

  matches(s) {
    const f = this.filters();
    if (f.project && s.project !== f.project) return false;
    if (f.provider && s.provider !== f.provider) return false;
    if (f.state && s.state !== f.state) return false;
    return true;
  },

  async load({ append = false } = {}) {
    const f = this.filters();
    const q = new URLSearchParams();
    if (f.project) q.set("project", f.project);
    if (f.provider) q.set("provider", f.provider);
    if (f.state) q.set("state", f.state);
    q.set("limit", "100");
    if (append && this.nextAfter) q.set("after", this.nextAfter);
    const ticket = ++this.loading;
    try {
      const res = await api("GET", `/api/v1/sessions?${q}`);
      if (ticket !== this.loading) return;
      if (!append) this.sessions.clear();
      for (const s of res.sessions || []) this.sessions.set(s.id, s);
      this.nextAfter = res.next_after || null;
      this.render();
    } catch (e) {
      if (e.status !== 401) toast(`Sessions: ${e.message}`, "error");
    }
  },

  upsert(s) {
    if (!s || !s.id) return;
    const old = this.sessions.get(s.id);
    if (old && old.updated_at && s.updated_at && old.updated_at > s.updated_at) return;
    this.sessions.set(s.id, { ...old, ...s });
    this.render();
    if (current && current.id === s.id) current.setSession(this.sessions.get(s.id));
  },

  patch(id, fields) {
    const old = this.sessions.get(id);
    if (!old) return;
    const s = { ...old, ...fields };
    this.sessions.set(id, s);
    this.render();
    if (current && current.id === id) current.setSession(s);
  },

  remove(id) {
    this.sessions.delete(id);
    this.render();
  },

  render() {
    const list = $("session-list");
    const rows = [...this.sessions.values()]
      .filter((s) => this.matches(s))
      .sort((a, b) => String(b.updated_at || b.created_at).localeCompare(String(a.updated_at || a.created_at)));
    list.replaceChildren(...rows.map((s) => this.row(s)));
    $("session-list-empty").hidden = rows.length > 0;
    $("load-more").hidden = !this.nextAfter;
  },

  row(s) {
    const active = current && current.id === s.id;
    const confirming = this.pendingDelete === s.id;
    const archived = s.state === "archived";
    const stop = (fn) => (ev) => {
      ev.preventDefault();
      ev.stopPropagation();
      fn();
    };
    return h(
      "li",
      { class: `session-row${active ? " active" : ""}`, testid: "session-row", dataset: { sessionId: s.id, state: s.state } },
      h(
        "a",
        { class: "row-main", href: `#/sessions/${s.id}` },
        h("span", { class: "row-title", testid: "session-row-title" }, sessionName(s)),
        h(
          "span",
          { class: "row-meta" },
          h("span", { class: `badge state-${s.state}` }, s.state),
          " ",
          s.provider,
          s.project ? ` · ${s.project}` : "",
          s.queue_len ? ` · ${s.queue_len} queued` : "",
        ),
      ),
      h(
        "span",
        { class: "row-actions" },
        h("button", { type: "button", class: "icon", title: "Rename", testid: "row-rename", onclick: stop(() => renameInline(s)) }, "✎"),
        h(
          "button",
          { type: "button", class: "icon", title: archived ? "Unarchive" : "Archive", testid: "row-archive", onclick: stop(() => setArchived(s.id, !archived)) },
          archived ? "⤒" : "⤓",
        ),
        h(
          "button",
          {
            type: "button",
            class: `icon danger${confirming ? " confirm" : ""}`,
            title: confirming ? "Click again to delete" : "Delete",
            testid: "row-delete",
            onclick: stop(() => this.deleteClicked(s.id)),
          },
          confirming ? "delete?" : "✕",
        ),
      ),
    );
  },

  deleteClicked(id) {
    if (this.pendingDelete === id) {
      this.pendingDelete = null;
      deleteSession(id);
      return;
    }
    this.pendingDelete = id;
    this.render();
    setTimeout(() => {
      if (this.pendingDelete === id) {
        this.pendingDelete = null;
        this.render();
      }
    }, 4000);
  },
};

function renameInline(s) {
  location.hash = `#/sessions/${s.id}`;
  route();
  showRename();
}

async function setArchived(id, archived) {
  try {
    const res = await api("PATCH", `/api/v1/sessions/${enc(id)}`, { archived });
    sessionList.upsert(res.session);
    toast(archived ? "Archived." : "Unarchived.");
  } catch (e) {
    toast(`Archive: ${e.message}`, "error");
  }
}

/** Forks session `id` at the end of `turnId` and opens the fork. */
async function forkAt(id, turnId) {
  try {
    const res = await api("POST", `/api/v1/sessions/${enc(id)}/fork`, { at_turn_id: turnId });
    sessionList.upsert(res.session);
    toast("Forked.");
    location.hash = `#/sessions/${res.session.id}`;
    route();
  } catch (e) {
    toast(`Fork: ${e.message}`, "error");
  }
}

/** Downloads session `id`'s export (`jsonl`, for import elsewhere, or `markdown`). */
async function download(id, format) {
  const res = await api("GET", `/api/v1/sessions/${enc(id)}/export?format=${format}`, undefined, { raw: true });
  if (!res.ok) {
    toast(`Download: HTTP ${res.status}`, "error");
    return;
  }
  const type = format === "markdown" ? "text/markdown" : "application/x-ndjson";
  const link = h("a", { href: URL.createObjectURL(new Blob([res.text], { type })), download: `session-${id}.${format === "markdown" ? "md" : "jsonl"}` });
  document.body.append(link);
  link.click();
  link.remove();
  URL.revokeObjectURL(link.href);
}

async function deleteSession(id) {
  try {
    await api("DELETE", `/api/v1/sessions/${enc(id)}`);
    sessionList.remove(id);
    if (current && current.id === id) location.hash = "#/";
    toast("Deleted.");
  } catch (e) {
    toast(`Delete: ${e.message}`, "error");
  }
}

async function createSession(ev) {
  ev.preventDefault();
  const body = { provider: $("provider-select").value };
  const project = $("create-project").value.trim();
  const key = $("create-key").value.trim();
  const title = $("create-title").value.trim();
  if (!body.provider) {
    toast("Pick a provider first.", "error");
    return;
  }
  if (project) body.project = project;
  if (key) body.key = key;
  if (title) body.title = title;
  const button = $("create-form").querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const res = await api("POST", "/api/v1/sessions", body);
    sessionList.upsert(res.session);
    if (!res.created) toast("A session with this key already exists; opened it.");
    $("create-key").value = "";
    $("create-title").value = "";
    $("new-session").open = false;
    location.hash = `#/sessions/${res.session.id}`;
  } catch (e) {
    toast(`Create: ${e.message}`, "error");
  } finally {
    button.disabled = false;
  }
}

// ---------------------------------------------------------------- session view

/** One open session: its transcript (applied strictly in seq order, each seq once), queue and controls. */
class SessionView {
  constructor(id) {
    this.id = id;
    this.session = sessionList.sessions.get(id) || null;
    this.lastSeq = 0;
    this.buffer = new Map();
    this.ready = false;
    this.subscribed = false;
    this.closed = false;
    this.gapTimer = null;
    this.turnBlocks = new Map();
    this.streaming = new Map();
    this.tools = new Map();
    this.contents = new Map();
    this.queued = [];
    this.paused = false;
    this.running = null;
    this.transcript = $("transcript");
    this.transcript.replaceChildren();
    this.transcript.dataset.sessionId = id;
    $("session-notice").hidden = true;
    $("rename-form").hidden = true;
  }

  async open() {
    this.renderHead();
    this.renderQueue();
    try {
      const res = await api("GET", `/api/v1/sessions/${enc(this.id)}`);
      if (this.closed) return;
      sessionList.upsert(res.session);
      this.setSession(res.session);
    } catch (e) {
      if (this.closed) return;
      this.notice(e.code === "session_not_found" ? "This session does not exist (or is not yours)." : `Cannot load the session: ${e.message}`);
      return;
    }
    await this.loadHistory();
    if (this.closed) return;
    await this.loadTurns();
    if (this.closed) return;
    this.ready = true;
    this.subscribe();
  }

  close() {
    this.closed = true;
    clearTimeout(this.gapTimer);
    if (this.subscribed && live.open) live.request({ type: "unsubscribe", session_id: this.id }).catch(() => {});
    this.subscribed = false;
  }

  /** Reads the log over REST in pages, from just after the last seq seen. */
  async loadHistory() {
    for (;;) {
      let res;
      try {
        res = await api("GET", `/api/v1/sessions/${enc(this.id)}/events?after_seq=${this.lastSeq}&limit=${HISTORY_PAGE}`);
      } catch (e) {
        if (!this.closed) toast(`History: ${e.message}`, "error");
        return;
      }
      if (this.closed) return;
      const events = res.events || [];
      const before = this.lastSeq;
      for (const ev of events) this.feed(ev);
      if (events.length === 0 || this.lastSeq === before || this.lastSeq >= (res.last_seq || 0)) return;
    }
  }

  async loadTurns() {
    try {
      const res = await api("GET", `/api/v1/sessions/${enc(this.id)}/turns`);
      if (this.closed) return;
      const turns = res.turns || [];
      for (const t of turns) if (t.content !== undefined) this.contents.set(t.turn_id, t.content);
      this.queued = turns.filter((t) => t.status === "queued").sort((a, b) => (a.position || 0) - (b.position || 0));
      const running = turns.find((t) => t.status === "running");
      this.running = running ? running.turn_id : this.running;
      this.paused = !!res.paused;
      this.renderQueue();
    } catch (e) {
      if (!this.closed && e.status !== 401) toast(`Queue: ${e.message}`, "error");
    }
  }

  /** (Re)subscribes with after_seq = the last seq applied; the server replays what is missing. */
  async subscribe() {
    if (!this.ready || this.closed || !live.open) return;
    try {
      const ack = await live.request({ type: "subscribe", session_id: this.id, after_seq: this.lastSeq });
      if (this.closed) return;
      this.subscribed = true;
      if (ack.state && this.session) this.setSession({ ...this.session, state: ack.state });
    } catch (e) {
      if (!this.closed && e.code !== "disconnected") this.notice(`Live updates unavailable: ${e.message}`);
    }
  }

  /** Takes an event from any source; applies each seq once and in order, holding early ones. */
  feed(ev) {
    if (typeof ev.seq !== "number" || ev.seq <= this.lastSeq) return;
    this.buffer.set(ev.seq, ev);
    this.drain();
  }

  /** Applies every buffered event that follows the last applied seq. */
  drain() {
    while (this.buffer.has(this.lastSeq + 1)) {
      const next = this.buffer.get(this.lastSeq + 1);
      this.buffer.delete(next.seq);
      this.lastSeq = next.seq;
      this.apply(next);
    }
    this.transcript.dataset.lastSeq = String(this.lastSeq);
    if (this.buffer.size > 0) this.scheduleGapFill();
  }

  scheduleGapFill() {
    if (this.gapTimer || !this.ready) return;
    this.gapTimer = setTimeout(async () => {
      this.gapTimer = null;
      if (this.buffer.size > 0 && !this.closed) {
        await this.loadHistory();
        if (this.buffer.size > 0) this.scheduleGapFill();
      }
    }, GAP_FILL_AFTER_MS);
  }

  truncated(oldest) {
    if (oldest - 1 > this.lastSeq) {
      this.meta(null, `Events before #${oldest} were removed by retention.`, "warn");
      this.lastSeq = oldest - 1;
      for (const seq of this.buffer.keys()) if (seq <= this.lastSeq) this.buffer.delete(seq);
      this.drain();
    }
  }

  setSession(s) {
    const first = !this.session;
    this.session = s;
    this.renderHead();
    if (first) this.refreshOwnerDay();
  }

  /** The owner's usage today (`GET /api/v1/usage`), shown next to the session's. */
  async refreshOwnerDay() {
    try {
      const report = await api("GET", "/api/v1/usage");
      this.ownerDay = report && report.total;
      this.renderHead();
    } catch {
      // The figure is informative; the session works without it.
    }
  }

  notice(text) {
    const el = $("session-notice");
    el.textContent = text;
    el.hidden = false;
  }

  // --- rendering of events -------------------------------------------------

  atBottom() {
    const t = this.transcript;
    return t.scrollHeight - t.scrollTop - t.clientHeight < 80;
  }

  scrollDown(was) {
    if (was) this.transcript.scrollTop = this.transcript.scrollHeight;
  }

  block(turnId) {
    if (!turnId) return this.transcript;
    let el = this.turnBlocks.get(turnId);
    if (!el) {
      el = h("section", { class: "turn", testid: "turn", dataset: { turnId } });
      this.turnBlocks.set(turnId, el);
      this.transcript.append(el);
    }
    return el;
  }

  meta(ev, text, kind = "") {
    const el = h("div", { class: `meta-line ${kind}`, testid: "meta", dataset: ev ? { seq: ev.seq, kind: ev.kind } : {} }, text);
    (ev ? this.block(ev.turn_id) : this.transcript).append(el);
    return el;
  }

  bubble(ev, role, text) {
    return h(
      "div",
      { class: `msg ${role}`, testid: "message", dataset: { role, seq: ev.seq, turnId: ev.turn_id || "" }, title: clockTime(ev.ts) },
      h("div", { class: "msg-text" }, text),
    );
  }

  /** Ends a streamed bubble that will get no final message (a failed attempt, an abort). */
  dropStreaming(turnId, label) {
    const el = this.streaming.get(turnId);
    if (!el) return;
    this.streaming.delete(turnId);
    el.classList.remove("streaming");
    el.classList.add("partial");
    el.dataset.testid = "partial-message";
    el.append(h("div", { class: "msg-note" }, label));
  }

  apply(ev) {
    const was = this.atBottom();
    const d = ev.data || {};
    switch (ev.kind) {
      case "session.created":
        this.meta(ev, `Session created · ${d.session ? d.session.provider : ""}`);
        break;
      case "session.updated":
        if (d.session) sessionList.upsert(d.session);
        if (d.session && this.session) this.setSession({ ...this.session, usage: d.session.usage, budget: d.session.budget });
        if (d.reason === "usage") this.refreshOwnerDay();
        else if (d.reason && d.reason !== "provider_session_mapped") this.meta(ev, `Session ${d.reason.replace(/_/g, " ")}`);
        break;
      case "session.state":
        if (this.session) this.setSession({ ...this.session, state: d.state });
        if (["failed", "paused", "archived"].includes(d.state) || d.previous === "failed") {
          this.meta(ev, `State ${d.previous} → ${d.state}${d.reason ? ` (${d.reason})` : ""}`, d.state === "failed" ? "bad" : "warn");
        }
        break;
      case "turn.accepted":
        if (d.status === "running") this.running = ev.turn_id;
        this.renderQueue();
        break;
      case "turn.started":
        this.dropStreaming(ev.turn_id, "attempt ended early");
        this.block(ev.turn_id);
        this.running = ev.turn_id;
        if (d.attempt > 1) this.meta(ev, `Attempt ${d.attempt} started`, "warn");
        this.renderQueue();
        break;
      case "message": {
        const role = d.role === "user" ? "user" : d.role || "assistant";
        if (role === "user" && ev.turn_id) this.contents.set(ev.turn_id, d.text || "");
        if (role === "assistant" && this.streaming.has(ev.turn_id)) {
          const el = this.streaming.get(ev.turn_id);
          this.streaming.delete(ev.turn_id);
          el.querySelector(".msg-text").textContent = d.text || "";
          el.classList.remove("streaming");
          el.dataset.seq = String(ev.seq);
        } else {
          this.block(ev.turn_id).append(this.bubble(ev, role, d.text || ""));
        }
        break;
      }
      case "message.delta": {
        let el = this.streaming.get(ev.turn_id);
        if (!el) {
          el = this.bubble(ev, "assistant", "");
          el.classList.add("streaming");
          this.streaming.set(ev.turn_id, el);
          this.block(ev.turn_id).append(el);
        }
        el.querySelector(".msg-text").append(d.text || "");
        break;
      }
      case "thinking":
        this.block(ev.turn_id).append(
          h("details", { class: "fold thinking", testid: "thinking", dataset: { seq: ev.seq } }, h("summary", {}, "Thinking"), h("pre", {}, d.text || "")),
        );
        break;
      case "tool.use": {
        const el = h(
          "details",
          { class: "fold tool", testid: "tool", dataset: { seq: ev.seq, toolId: d.tool_id || "" } },
          h("summary", {}, h("span", { class: "tool-name" }, `⚙ ${d.name || "tool"}`), h("span", { class: "tool-status" }, " · running")),
          h("div", { class: "fold-label" }, "input"),
          h("pre", {}, pretty(d.input)),
        );
        if (d.tool_id) this.tools.set(d.tool_id, el);
        this.block(ev.turn_id).append(el);
        break;
      }
      case "tool.result": {
        let el = this.tools.get(d.tool_id);
        if (!el) {
          el = h("details", { class: "fold tool", testid: "tool", dataset: { seq: ev.seq } }, h("summary", {}, h("span", { class: "tool-name" }, "⚙ tool result"), h("span", { class: "tool-status" }, "")));
          this.block(ev.turn_id).append(el);
        }
        el.querySelector(".tool-status").textContent = d.is_error ? " · error" : " · done";
        if (d.is_error) el.classList.add("error");
        el.append(h("div", { class: "fold-label" }, d.is_error ? "error" : "output"), h("pre", {}, pretty(d.output)));
        break;
      }
      case "status":
        this.block(ev.turn_id).append(
          h("details", { class: "fold status", testid: "status", dataset: { seq: ev.seq } }, h("summary", {}, statusSummary(d)), h("pre", {}, pretty(d))),
        );
        break;
      case "error":
        this.block(ev.turn_id).append(
          h(
            "div",
            { class: "error-box", testid: "error", role: "alert", dataset: { seq: ev.seq, code: d.code || "" } },
            h("strong", {}, d.code || "error"),
            ": ",
            d.message || "",
            d.retryable ? h("span", { class: "muted" }, " (will retry)") : "",
          ),
        );
        break;
      case "turn.retrying":
        this.dropStreaming(ev.turn_id, "attempt failed; retrying");
        this.block(ev.turn_id).append(
          h(
            "div",
            { class: "retry-box", testid: "retrying", dataset: { seq: ev.seq } },
            `↻ Retrying: attempt ${d.attempt} in ${((d.delay_ms || 0) / 1000).toFixed(1)} s`,
            d.reason ? ` (${d.reason})` : "",
          ),
        );
        break;
      case "turn.completed": {
        this.dropStreaming(ev.turn_id, d.outcome === "aborted" ? "aborted" : "incomplete");
        if (this.running === ev.turn_id) this.running = null;
        this.queued = this.queued.filter((t) => t.turn_id !== ev.turn_id);
        const started = this.turnBlocks.has(ev.turn_id);
        if (!started && (d.outcome === "cancelled" || d.outcome === "abandoned")) {
          const content = this.contents.get(ev.turn_id);
          const what = content ? `“${truncate(content, 60)}”` : shortId(ev.turn_id);
          this.meta({ ...ev, turn_id: null }, `Queued turn ${what} ${d.outcome}`, "muted");
        } else {
          const outcome = d.outcome || "completed";
          const parts = [h("span", { class: `badge outcome-${outcome}` }, outcome)];
          if (d.error) parts.push(" ", h("span", { class: "bad" }, `${d.error.code}: ${d.error.message}`));
          if (d.usage && typeof d.usage.total_tokens === "number") parts.push(h("span", { class: "muted", testid: "turn-tokens" }, ` · ${d.usage.total_tokens} tokens`));
          if (typeof d.cost_usd === "number") parts.push(h("span", { class: "muted", testid: "turn-cost" }, ` · $${d.cost_usd.toFixed(4)}`));
          if (typeof d.exit_code === "number" && d.exit_code !== 0) parts.push(h("span", { class: "muted" }, ` · exit ${d.exit_code}`));
          parts.push(h("span", { class: "muted" }, ` · ${clockTime(ev.ts)}`));
          const sessionId = this.id;
          parts.push(
            " ",
            h(
              "button",
              { type: "button", class: "ghost small", title: "A new session with the conversation up to here", testid: "fork-here", onclick: () => forkAt(sessionId, ev.turn_id) },
              "fork here",
            ),
          );
          this.block(ev.turn_id).append(h("div", { class: "turn-end", testid: "turn-completed", dataset: { seq: ev.seq, outcome } }, ...parts));
        }
        this.renderQueue();
        break;
      }
      case "queue.updated":
        for (const t of d.turns || []) if (t.content !== undefined) this.contents.set(t.turn_id, t.content);
        this.queued = (d.turns || []).filter((t) => !t.status || t.status === "queued");
        this.paused = !!d.paused;
        this.renderQueue();
        break;
      default:
        this.meta(ev, `${ev.kind}`, "muted");
    }
    this.scrollDown(was);
  }

  // --- header, queue and controls -------------------------------------------

  renderHead() {
    const s = this.session;
    $("session-title").textContent = s ? sessionName(s) : `session ${shortId(this.id)}`;
    const meta = $("session-meta");
    meta.replaceChildren();
    if (s) {
      const bits = [s.provider, s.model, s.project, s.key ? `key ${s.key}` : null, `id ${s.id}`].filter(Boolean);
      meta.append(bits.join(" · "));
      meta.append(h("div", { class: "usage", testid: "session-usage" }, usageSummary(s, this.ownerDay)));
    }
    const state = (s && s.state) || "…";
    const badge = $("session-state");
    badge.textContent = state;
    badge.className = `badge state-${state}`;
    $("archive").textContent = state === "archived" ? "Unarchive" : "Archive";
    $("reset").hidden = state !== "failed";
    const readOnly = state === "archived";
    $("message-input").disabled = readOnly;
    $("send").disabled = readOnly;
    this.renderControls();
  }

  renderControls() {
    const state = this.session && this.session.state;
    const busy = !!this.running || state === "running";
    $("abort").disabled = !busy;
    $("pause").hidden = this.paused;
    $("resume").hidden = !this.paused && state !== "failed";
  }

  renderQueue() {
    const items = $("queue-items");
    const rows = [];
    if (this.running) {
      const content = this.contents.get(this.running);
      rows.push(
        h(
          "li",
          { class: "queue-item running", testid: "running-turn", dataset: { turnId: this.running } },
          h("span", { class: "badge state-running" }, "running"),
          h("span", { class: "q-text" }, content ? truncate(content, 120) : shortId(this.running)),
        ),
      );
    }
    this.queued.forEach((t, i) => {
      rows.push(
        h(
          "li",
          { class: "queue-item", testid: "queue-item", dataset: { turnId: t.turn_id } },
          h("span", { class: "q-pos" }, `${t.position || i + 1}`),
          h("span", { class: "q-text", title: t.content || "" }, truncate(t.content || shortId(t.turn_id), 120)),
          t.mode && t.mode !== "enqueue" ? h("span", { class: "badge" }, t.mode) : "",
          h("button", { type: "button", class: "icon", title: "Run next", testid: "promote-turn", disabled: i === 0, onclick: () => this.promote(t.turn_id) }, "⇧"),
          h("button", { type: "button", class: "icon danger", title: "Cancel", testid: "cancel-turn", onclick: () => this.cancel(t.turn_id) }, "✕"),
        ),
      );
    });
    items.replaceChildren(...rows);
    const n = this.queued.length;
    $("queue-label").textContent = `Queue · ${n} waiting${this.paused ? " · paused" : ""}`;
    $("queue").dataset.paused = String(this.paused);
    $("queue").classList.toggle("empty", rows.length === 0 && !this.paused);
    this.renderControls();
  }

  // --- commands ---------------------------------------------------------------

  async send(content, mode) {
    const body = { content, mode, client_message_id: uuid4() };
    const res = await api("POST", `/api/v1/sessions/${enc(this.id)}/turns`, body);
    this.contents.set(res.turn_id, content);
    if (res.status === "queued") toast(`Queued at position ${res.position}.`);
    this.renderQueue();
    return res;
  }

  async cancel(turnId) {
    try {
      await api("DELETE", `/api/v1/sessions/${enc(this.id)}/turns/${enc(turnId)}`);
      this.queued = this.queued.filter((t) => t.turn_id !== turnId);
      this.renderQueue();
    } catch (e) {
      toast(e.code === "turn_running" ? "That turn already runs; use Abort." : `Cancel: ${e.message}`, "error");
    }
  }

  async promote(turnId) {
    try {
      await api("POST", `/api/v1/sessions/${enc(this.id)}/turns/${enc(turnId)}/promote`);
    } catch (e) {
      toast(`Promote: ${e.message}`, "error");
    }
  }

  async command(name) {
    try {
      const res = await api("POST", `/api/v1/sessions/${enc(this.id)}/${name}`);
      if (res && res.session) sessionList.upsert(res.session);
      if (name === "pause") this.paused = true;
      if (name === "resume") this.paused = false;
      if (name === "abort" && res && res.aborted === false) toast("Nothing was running.");
      this.renderQueue();
    } catch (e) {
      toast(`${name}: ${e.message}`, "error");
    }
  }
}

/** "Usage $0.1234 · 1,234 tokens · this turn $0.0100 · budget $1 · today $0.50". */
function usageSummary(s, ownerDay) {
  const money = (n) => `$${Number(n || 0).toFixed(4)}`;
  const u = (s.usage && s.usage.total) || {};
  const bits = [`Usage ${money(u.cost_usd)} · ${u.total_tokens || 0} tokens`];
  const turn = s.usage && s.usage.turn;
  if (turn) bits.push(`this turn ${money(turn.cost_usd)} · ${turn.total_tokens || 0} tokens`);
  const b = s.budget;
  if (b && (b.max_cost_usd != null || b.max_tokens != null)) {
    bits.push(`budget ${[b.max_cost_usd != null ? `$${b.max_cost_usd}` : null, b.max_tokens != null ? `${b.max_tokens} tokens` : null].filter(Boolean).join(" / ")}`);
  }
  if (ownerDay) bits.push(`today ${money(ownerDay.cost_usd)} · ${ownerDay.total_tokens || 0} tokens`);
  return bits.join(" · ");
}

function statusSummary(d) {
  const bits = [];
  const u = d && d.usage;
  if (u && typeof u === "object") {
    const i = u.input_tokens ?? u.prompt_tokens;
    const o = u.output_tokens ?? u.completion_tokens;
    if (i !== undefined) bits.push(`in ${i}`);
    if (o !== undefined) bits.push(`out ${o}`);
  }
  const cost = d && (typeof d.cost_usd === "number" ? d.cost_usd : u && u.cost_usd);
  if (typeof cost === "number") bits.push(`$${cost.toFixed(4)}`);
  return bits.length ? `Status · ${bits.join(" · ")}` : "Status";
}

function truncate(text, n) {
  const s = String(text).replace(/\s+/g, " ");
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}

let current = null;

function showRename() {
  if (!current) return;
  const form = $("rename-form");
  $("rename-input").value = (current.session && current.session.title) || "";
  form.hidden = false;
  $("rename-input").focus();
}

async function saveRename(ev) {
  ev.preventDefault();
  if (!current) return;
  const title = $("rename-input").value.trim();
  try {
    const res = await api("PATCH", `/api/v1/sessions/${enc(current.id)}`, { title });
    sessionList.upsert(res.session);
    $("rename-form").hidden = true;
  } catch (e) {
    toast(`Rename: ${e.message}`, "error");
  }
}

async function submitMessage(ev) {
  ev.preventDefault();
  if (!current) return;
  const input = $("message-input");
  const content = input.value;
  if (!content.trim()) return;
  const mode = $("mode-select").value;
  const button = $("send");
  button.disabled = true;
  try {
    await current.send(content, mode);
    input.value = "";
  } catch (e) {
    const why = {
      session_busy: "The session is busy and the mode is reject.",
      queue_full: "The queue is full.",
      session_archived: "The session is archived (read-only).",
      session_failed: "The session failed; reset or resume it first.",
    }[e.code];
    toast(why || `Send: ${e.message}`, "error");
  } finally {
    button.disabled = current && current.session && current.session.state === "archived";
  }
}

// ---------------------------------------------------------------- operators

/** The operators' page: GET /api/v1/admin/actors, /readyz and /metrics every 2 s while shown. */
const operators = {
  timer: null,
  active: false,

  start() {
    if (this.active) return;
    this.active = true;
    this.tick();
  },

  stop() {
    this.active = false;
    clearTimeout(this.timer);
  },

  async tick() {
    clearTimeout(this.timer);
    if (!this.active) return;
    await Promise.all([this.actors(), this.ready(), this.metrics()]);
    $("ops-updated").textContent = `updated ${new Date().toLocaleTimeString([], { hour12: false })}`;
    if (this.active) this.timer = setTimeout(() => this.tick(), OPS_REFRESH_MS);
  },

  notice(text) {
    const el = $("ops-notice");
    el.textContent = text || "";
    el.hidden = !text;
  },

  async actors() {
    let res;
    try {
      res = await api("GET", "/api/v1/admin/actors", undefined, { admin: true });
    } catch (e) {
      this.notice(e.status === 401 || e.status === 403 ? "The actor table needs an admin token (Token button)." : `Actors: ${e.message}`);
      return;
    }
    this.notice("");
    const actors = (res && (res.actors || res.sessions)) || (Array.isArray(res) ? res : []);
    const registry = (res && res.registry) || {};
    const figures = { live: actors.length, ...registry };
    $("registry-figures").replaceChildren(
      ...Object.entries(figures)
        .filter(([, v]) => typeof v === "number" || typeof v === "string")
        .map(([k, v]) => card(`registry ${k.replace(/_/g, " ")}`, v, `registry-${k}`)),
    );
    const rows = actors
      .slice()
      .sort((a, b) => String(b.last_event_at || "").localeCompare(String(a.last_event_at || "")))
      .map((a) => this.row(a));
    $("actor-rows").replaceChildren(...rows);
    $("actors-empty").hidden = rows.length > 0;
  },

  row(a) {
    const run = a.run;
    const runText = run ? `${shortId(run.turn_id)} · #${run.attempt ?? "?"} · ${age(run.started_at)}${run.pid ? ` · pid ${run.pid}` : ""}` : "—";
    const reset =
      a.state === "failed"
        ? h("button", { type: "button", class: "danger", testid: "reset-session", onclick: (ev) => this.reset(a.session_id, ev.target) }, "Reset")
        : "";
    return h(
      "tr",
      { testid: "actor-row", dataset: { sessionId: a.session_id, state: a.state } },
      h("td", { "data-label": "session" }, h("a", { href: `#/sessions/${a.session_id}`, title: a.session_id }, shortId(a.session_id))),
      h("td", { "data-label": "state" }, h("span", { class: `badge state-${a.state}` }, a.state)),
      h("td", { "data-label": "subs" }, a.subscribers ?? ""),
      h("td", { "data-label": "queue" }, a.queue_len ?? ""),
      h("td", { "data-label": "restarts" }, a.restarts ?? ""),
      h("td", { "data-label": "running", title: run ? `${run.turn_id} started ${run.started_at}` : "" }, runText),
      h("td", { "data-label": "last seq" }, a.last_seq ?? ""),
      h("td", { "data-label": "last event", title: a.last_event_at || "" }, a.last_event_at ? `${age(a.last_event_at)} ago` : "—"),
      h("td", {}, reset),
    );
  },

  async reset(id, button) {
    button.disabled = true;
    try {
      await api("POST", `/api/v1/sessions/${enc(id)}/reset`, undefined, { admin: true });
      toast("Session reset.");
      this.tick();
    } catch (e) {
      toast(`Reset: ${e.message}`, "error");
      button.disabled = false;
    }
  },

  async ready() {
    const badge = $("readyz");
    try {
      const res = await api("GET", "/readyz", undefined, { raw: true });
      badge.textContent = res.ok ? "ready" : `not ready (${res.status})`;
      badge.className = `badge ${res.ok ? "state-idle" : "state-failed"}`;
      badge.title = res.text.slice(0, 500);
      badge.dataset.ready = String(res.ok);
    } catch {
      badge.textContent = "unreachable";
      badge.className = "badge state-failed";
      badge.dataset.ready = "false";
    }
  },

  async metrics() {
    let res;
    try {
      res = await api("GET", "/metrics", undefined, { admin: true, raw: true });
    } catch {
      return;
    }
    if (!res.ok) {
      $("metrics").replaceChildren(card("metrics", `HTTP ${res.status}`, "metric-error"));
      return;
    }
    const figures = keyMetrics(parsePrometheus(res.text));
    $("metrics").replaceChildren(...figures.map((f) => card(f.label, f.value, `metric-${f.name}`, f.title)));
  },
};

function card(label, value, testid, title) {
  return h("div", { class: "card", testid: "figure", dataset: { name: testid }, title: title || "" }, h("div", { class: "card-value" }, formatNumber(value)), h("div", { class: "card-label" }, label));
}

function formatNumber(v) {
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v)) return v.toLocaleString();
  return v.toFixed(2);
}

/** Parses Prometheus text exposition into samples {name, labels, value}. */
function parsePrometheus(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    const l = line.trim();
    if (!l || l.startsWith("#")) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(l);
    if (!m) continue;
    const labels = {};
    if (m[3]) for (const lm of m[3].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[lm[1]] = lm[2];
    const value = Number(m[4]);
    if (!Number.isNaN(value)) samples.push({ name: m[1], labels, value });
  }
  return samples;
}

/** The figures worth a glance, found by name fragment whatever the exporter's prefix. */
const KEY_METRICS = [
  ["live_sessions", "live sessions"],
  ["running_attempts", "running attempts"],
  ["queue_depth", "queued turns"],
  ["subscribers", "subscribers"],
  ["turns_accepted", "turns accepted"],
  ["turns_completed", "turns completed"],
  ["retries", "retries"],
  ["lagged", "lagged drops"],
  ["panics", "actor panics"],
];

function keyMetrics(samples) {
  const byName = new Map();
  for (const s of samples) {
    if (/_(bucket|sum|count|created)$/.test(s.name)) continue;
    if (!byName.has(s.name)) byName.set(s.name, []);
    byName.get(s.name).push(s);
  }
  const out = [];
  for (const [fragment, label] of KEY_METRICS) {
    const name = [...byName.keys()].find((n) => n.includes(fragment));
    if (!name) continue;
    const group = byName.get(name);
    const value = group.reduce((a, s) => a + s.value, 0);
    const title = group.length > 1 ? group.map((s) => `${Object.values(s.labels).join(",")}: ${s.value}`).join("\n") : name;
    out.push({ name: fragment, label, value, title });
  }
  if (out.length === 0) {
    for (const [name, group] of [...byName.entries()].slice(0, 8)) {
      out.push({ name, label: name, value: group.reduce((a, s) => a + s.value, 0), title: name });
    }
  }
  return out;
}

// ---------------------------------------------------------------- router

function route() {
  const hash = location.hash || "#/";
  const ops = hash.startsWith("#/operators");
  const m = /^#\/sessions\/([^/?#]+)/.exec(hash);
  const id = m ? decodeURIComponent(m[1]) : null;

  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.dataset.view === (ops ? "operators" : "sessions")));
  $("sessions-view").hidden = ops;
  $("operators-view").hidden = !ops;
  if (ops) operators.start();
  else operators.stop();

  if (ops) return;
  if (!id) {
    if (current) current.close();
    current = null;
    $("session").hidden = true;
    $("session-placeholder").hidden = false;
    document.body.classList.remove("has-session");
    sessionList.render();
    return;
  }
  if (current && current.id === id) return;
  if (current) current.close();
  current = new SessionView(id);
  $("session").hidden = false;
  $("session-placeholder").hidden = true;
  document.body.classList.add("has-session");
  sessionList.render();
  current.open();
}

// ---------------------------------------------------------------- wiring

live.onOpen = () => {
  live.request({ type: "subscribe", session_id: "*" }).catch((e) => toast(`Owner feed: ${e.message}`, "error"));
  // The owner feed has no replay: catch up on what changed while disconnected.
  sessionList.load();
  if (current) current.subscribe();
};

live.onEvent = (ev) => {
  const d = ev.data || {};
  if ((ev.kind === "session.created" || ev.kind === "session.updated") && d.session) sessionList.upsert(d.session);
  else if (ev.kind === "session.state") sessionList.patch(ev.session_id, { state: d.state });
  if (current && current.id === ev.session_id) current.feed(ev);
};

live.onTruncated = (frame) => {
  if (current && current.id === frame.session_id) current.truncated(frame.oldest_seq);
};

function wire() {
  $("create-form").addEventListener("submit", createSession);
  $("composer").addEventListener("submit", submitMessage);
  $("message-input").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("abort").addEventListener("click", () => current && current.command("abort"));
  $("pause").addEventListener("click", () => current && current.command("pause"));
  $("resume").addEventListener("click", () => current && current.command("resume"));
  $("reset").addEventListener("click", () => current && current.command("reset"));
  $("rename").addEventListener("click", showRename);
  $("rename-form").addEventListener("submit", saveRename);
  $("rename-cancel").addEventListener("click", () => ($("rename-form").hidden = true));
  $("archive").addEventListener("click", () => current && current.session && setArchived(current.id, current.session.state !== "archived"));
  $("download").addEventListener("click", () => current && download(current.id, "jsonl"));
  $("download-md").addEventListener("click", () => current && download(current.id, "markdown"));
  let deleteArmed = null;
  $("delete").addEventListener("click", () => {
    if (!current) return;
    const btn = $("delete");
    if (deleteArmed === current.id) {
      deleteArmed = null;
      btn.textContent = "Delete";
      deleteSession(current.id);
      return;
    }
    deleteArmed = current.id;
    btn.textContent = "Confirm delete";
    setTimeout(() => {
      deleteArmed = null;
      btn.textContent = "Delete";
    }, 4000);
  });

  let filterTimer = null;
  const refilter = () => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => sessionList.load(), 250);
  };
  $("filter-project").addEventListener("input", refilter);
  $("filter-provider").addEventListener("change", refilter);
  $("filter-state").addEventListener("change", refilter);
  $("load-more").addEventListener("click", () => sessionList.load({ append: true }));

  $("token-button").addEventListener("click", () => {
    if ($("token-panel").hidden) openTokenPanel();
    else $("token-panel").hidden = true;
  });
  $("close-token").addEventListener("click", () => ($("token-panel").hidden = true));
  $("clear-token").addEventListener("click", () => {
    tokens.save("", "");
    $("token-input").value = "";
    $("admin-token-input").value = "";
    toast("Tokens forgotten.");
  });
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    tokens.save($("token-input").value.trim(), $("admin-token-input").value.trim());
    $("token-panel").hidden = true;
    unauthorizedShown = false;
    toast("Token saved.");
    refreshAll();
  });
  document.querySelector('[data-testid="connection-status"]').addEventListener("click", () => {
    if (!live.open) live.reconnectNow();
  });
  window.addEventListener("hashchange", route);
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) operators.stop();
    else if ((location.hash || "").startsWith("#/operators")) operators.start();
  });
}

function refreshAll() {
  loadProviders();
  sessionList.load();
  live.reconnectNow();
  if (current) {
    const id = current.id;
    current.close();
    current = null;
    location.hash = `#/sessions/${id}`;
    route();
  }
}

wire();
route();
loadProviders();
sessionList.load();
live.connect();
