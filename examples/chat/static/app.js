// The chat page: one WebSocket to /ws carrying typed envelopes
// {"type", "payload", "id"} (the protocol is described in main.go).
// Plain JavaScript, no build step, nothing loaded from elsewhere.
(function () {
  "use strict";

  // At most one chat.typing per this many milliseconds: the others only
  // need to know that someone is still typing, not every keystroke.
  const TYPING_SEND_EVERY = 2000;
  // A typing notice fades unless renewed within this time.
  const TYPING_SHOW_FOR = 4000;
  // Browsers cannot send WebSocket pings, and the server closes a connection
  // that stays silent for its idle timeout (60 s by default).
  const PING_EVERY = 25000;
  // Reconnect delays double from the first to the last.
  const BACKOFF_FIRST = 500;
  const BACKOFF_LAST = 15000;
  // Older messages are dropped so a long-lived tab stays light.
  const KEEP_MESSAGES = 500;
  const STORAGE_KEY = "troupe-chat";

  const $ = (id) => document.getElementById(id);
  const ui = {
    status: $("status"),
    joinForm: $("join-form"),
    name: $("name"),
    room: $("room"),
    rooms: $("rooms"),
    noRooms: $("no-rooms"),
    members: $("members"),
    memberCount: $("member-count"),
    roomTitle: $("room-title"),
    leave: $("leave"),
    messages: $("messages"),
    typing: $("typing"),
    sendForm: $("send-form"),
    text: $("text"),
    sendButton: document.querySelector("#send-form button"),
    error: $("error"),
  };

  const state = {
    ws: null,
    nextId: 1,
    pending: new Map(), // request id -> {type, room}
    rooms: new Map(), // room name -> see newRoom
    active: null, // name of the room on screen
    name: "",
    me: null, // {id, name}: the session id changes with every connection
    attempts: 0,
    everOpen: false,
    pingTimer: 0,
    lastTyping: 0,
    errorTimer: 0,
  };

  function newRoom(name) {
    return {
      name,
      joined: false,
      members: new Map(), // id -> name, in join order
      messages: [], // {kind: "msg", from, text, ts} or {kind: "notice", text}
      typing: new Map(), // id -> {name, timer}
      unread: 0,
    };
  }

  // ---- persistence: a reload rejoins the same rooms under the same name.

  function load() {
    try {
      const saved = JSON.parse(localStorage.getItem(STORAGE_KEY) || "{}");
      state.name = typeof saved.name === "string" ? saved.name : "";
      for (const name of Array.isArray(saved.rooms) ? saved.rooms : []) {
        if (typeof name === "string" && name) state.rooms.set(name, newRoom(name));
      }
      state.active = state.rooms.keys().next().value || null;
    } catch (_) {
      // Storage may be disabled or hold garbage: start empty.
    }
    ui.name.value = state.name;
  }

  function save() {
    try {
      localStorage.setItem(STORAGE_KEY, JSON.stringify({ name: state.name, rooms: [...state.rooms.keys()] }));
    } catch (_) {
      // Not being remembered is fine.
    }
  }

  // ---- connection

  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(scheme + "//" + location.host + "/ws");
    state.ws = ws;
    setStatus("connecting", "connecting…");

    ws.onopen = () => {
      state.attempts = 0;
      setStatus("open", "connected");
      if (state.everOpen) {
        for (const r of state.rooms.values()) notice(r, "Reconnected.");
      }
      state.everOpen = true;
      for (const r of state.rooms.values()) request("chat.join", { room: r.name, name: state.name });
      state.pingTimer = setInterval(() => send({ type: "chat.ping" }), PING_EVERY);
      render();
    };

    ws.onmessage = (ev) => {
      let env;
      try {
        env = JSON.parse(ev.data);
      } catch (_) {
        return;
      }
      if (env && typeof env.type === "string") receive(env);
    };

    ws.onclose = (ev) => {
      if (state.ws !== ws) return;
      state.ws = null;
      clearInterval(state.pingTimer);
      state.pending.clear();
      for (const r of state.rooms.values()) {
        if (r.joined) notice(r, "Disconnected" + (ev.reason ? " (" + ev.reason + ")" : "") + ".");
        r.joined = false;
        r.members.clear();
        clearTyping(r);
      }
      const delay = Math.min(BACKOFF_LAST, BACKOFF_FIRST * 2 ** state.attempts);
      state.attempts++;
      // Jitter keeps a crowd of pages from reconnecting in lockstep after a
      // server restart.
      const wait = Math.round(delay * (0.5 + Math.random() / 2));
      setStatus("closed", "offline, retrying in " + Math.ceil(wait / 1000) + " s");
      setTimeout(connect, wait);
      render();
    };
  }

  function send(env) {
    if (!state.ws || state.ws.readyState !== WebSocket.OPEN) return false;
    state.ws.send(JSON.stringify(env));
    return true;
  }

  // request sends an envelope whose answer (reply or error) is matched to it
  // by id; extra is remembered with it until then. Only requests that are
  // always answered go through here, so nothing is left pending for ever.
  function request(type, payload, extra) {
    const id = state.nextId++;
    if (!send({ type, payload, id })) {
      showError("Not connected; try again in a moment.");
      return false;
    }
    state.pending.set(id, Object.assign({ type, room: payload.room }, extra));
    return true;
  }

  // ---- what the server sends

  function receive(env) {
    const p = env.payload || {};
    const req = env.id != null ? state.pending.get(env.id) : undefined;
    if (req) state.pending.delete(env.id);

    switch (env.type) {
      case "chat.joined": {
        const r = state.rooms.get(p.room) || newRoom(p.room);
        state.rooms.set(p.room, r);
        const first = r.messages.length === 0;
        r.joined = true;
        state.me = p.you;
        r.members = new Map((p.members || []).map((m) => [m.id, m.name]));
        if (first) notice(r, "You joined " + p.room + " as " + p.you.name + ".");
        if (!state.active || (req && req.select)) state.active = p.room;
        save();
        break;
      }
      case "chat.left":
        dropRoom(p.room);
        break;
      case "chat.presence": {
        const r = state.rooms.get(p.room);
        if (!r) break;
        if (p.joined) {
          r.members.set(p.joined.id, p.joined.name);
          notice(r, p.joined.name + " joined.");
        }
        if (p.left) {
          r.members.delete(p.left.id);
          stopTyping(r, p.left.id);
          notice(r, p.left.name + " left.");
        }
        break;
      }
      case "chat.message": {
        const r = state.rooms.get(p.room);
        if (!r) break;
        stopTyping(r, p.from.id);
        addMessage(r, { kind: "msg", from: p.from, text: p.text, ts: p.ts });
        if (r.name !== state.active) r.unread++;
        break;
      }
      case "chat.typing": {
        const r = state.rooms.get(p.room);
        if (!r) break;
        stopTyping(r, p.from.id);
        const timer = setTimeout(() => {
          r.typing.delete(p.from.id);
          renderTyping();
        }, TYPING_SHOW_FOR);
        r.typing.set(p.from.id, { name: p.from.name, timer });
        break;
      }
      case "error": {
        showError(p.message || p.code || "error");
        // A join that failed leaves no half-made room behind.
        if (req && req.type === "chat.join") {
          const r = state.rooms.get(req.room);
          if (r && !r.joined && r.messages.length === 0) dropRoom(req.room);
        }
        break;
      }
      default:
        return; // chat.pong and anything newer than this page
    }
    render();
  }

  function dropRoom(name) {
    const r = state.rooms.get(name);
    if (!r) return;
    clearTyping(r);
    state.rooms.delete(name);
    if (state.active === name) state.active = state.rooms.keys().next().value || null;
    save();
  }

  function addMessage(r, m) {
    r.messages.push(m);
    if (r.messages.length > KEEP_MESSAGES) r.messages.splice(0, r.messages.length - KEEP_MESSAGES);
    if (r.name === state.active) appendMessage(m, true);
  }

  function notice(r, text) {
    addMessage(r, { kind: "notice", text });
  }

  function stopTyping(r, id) {
    const t = r.typing.get(id);
    if (t) {
      clearTimeout(t.timer);
      r.typing.delete(id);
    }
  }

  function clearTyping(r) {
    for (const id of [...r.typing.keys()]) stopTyping(r, id);
  }

  // ---- drawing

  function render() {
    const active = state.rooms.get(state.active);
    if (active) active.unread = 0;

    ui.rooms.replaceChildren(
      ...[...state.rooms.values()].map((r) => {
        const li = el("li", { class: r.name === state.active ? "active" : "" });
        li.append(el("span", {}, r.name + (r.joined ? "" : " …")));
        if (r.unread) li.append(el("span", { class: "unread" }, String(r.unread)));
        li.addEventListener("click", () => {
          state.active = r.name;
          render();
          renderMessages();
          ui.text.focus();
        });
        return li;
      }),
    );
    ui.noRooms.hidden = state.rooms.size > 0;

    const members = active ? [...active.members] : [];
    ui.members.replaceChildren(
      ...members.map(([id, name]) => el("li", { class: state.me && id === state.me.id ? "me" : "" }, name)),
    );
    ui.memberCount.textContent = active ? "(" + members.length + ")" : "";

    ui.roomTitle.textContent = active ? active.name : "No room";
    const usable = !!(active && active.joined);
    ui.leave.disabled = !usable;
    ui.text.disabled = !usable;
    ui.sendButton.disabled = !usable;
    if (ui.messages.dataset.room !== (state.active || "")) renderMessages();
    renderTyping();
  }

  function renderMessages() {
    const r = state.rooms.get(state.active);
    ui.messages.dataset.room = state.active || "";
    ui.messages.replaceChildren();
    if (r) for (const m of r.messages) appendMessage(m, false);
    ui.messages.scrollTop = ui.messages.scrollHeight;
  }

  function appendMessage(m, live) {
    const box = ui.messages;
    const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
    let li;
    if (m.kind === "notice") {
      li = el("li", { class: "notice" }, m.text);
    } else {
      const mine = state.me && m.from.id === state.me.id;
      const when = new Date(m.ts);
      li = el("li", { class: mine ? "mine" : "" });
      li.append(
        el("time", { datetime: when.toISOString() }, when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })),
        el("span", { class: "from" }, m.from.name),
        el("span", { class: "text" }, m.text),
      );
    }
    box.append(li);
    while (box.childElementCount > KEEP_MESSAGES) box.firstElementChild.remove();
    // Follow new messages only if the reader was already at the bottom.
    if (!live || atBottom) box.scrollTop = box.scrollHeight;
  }

  function renderTyping() {
    const r = state.rooms.get(state.active);
    const names = r ? [...r.typing.values()].map((t) => t.name) : [];
    let text = "";
    if (names.length === 1) text = names[0] + " is typing…";
    else if (names.length === 2) text = names[0] + " and " + names[1] + " are typing…";
    else if (names.length > 2) text = "Several people are typing…";
    ui.typing.textContent = text;
  }

  function setStatus(kind, text) {
    ui.status.dataset.state = kind;
    ui.status.textContent = text;
  }

  function showError(text) {
    ui.error.textContent = text;
    clearTimeout(state.errorTimer);
    state.errorTimer = setTimeout(() => (ui.error.textContent = ""), 5000);
  }

  // el builds an element; text goes in as text, never as HTML.
  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v) node.setAttribute(k, v);
    if (text != null) node.textContent = text;
    return node;
  }

  // ---- what the user does

  ui.joinForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const room = ui.room.value.trim();
    if (!room) return;
    state.name = ui.name.value.trim();
    const existing = state.rooms.get(room);
    if (existing && existing.joined) {
      state.active = room;
      render();
      return;
    }
    // select: the user asked to look at this room, unlike the joins
    // that a reconnect replays.
    if (request("chat.join", { room, name: state.name }, { select: true })) ui.room.value = "";
  });

  ui.leave.addEventListener("click", () => {
    if (state.active) request("chat.leave", { room: state.active });
  });

  ui.sendForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = ui.text.value;
    if (!state.active || !text.trim()) return;
    // Not a request: the answer is the broadcast, which carries no id.
    if (!send({ type: "chat.message", payload: { room: state.active, text } })) {
      showError("Not connected; try again in a moment.");
      return;
    }
    ui.text.value = "";
    state.lastTyping = 0;
  });

  ui.text.addEventListener("input", () => {
    const now = Date.now();
    if (!state.active || !ui.text.value.trim() || now - state.lastTyping < TYPING_SEND_EVERY) return;
    state.lastTyping = now;
    send({ type: "chat.typing", payload: { room: state.active } });
  });

  load();
  render();
  connect();
})();
