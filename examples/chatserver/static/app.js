// The chat page: plain JavaScript, no build step, nothing loaded from
// elsewhere. It speaks Troupe's room protocol through the JavaScript client,
// which reconnects by itself and resumes each room from the last message it
// saw; this page shows the room, keeps its messages in sequence order, and
// says whether a reconnect lost anything.
import { Client } from '/troupe.js';

// How many earlier messages a join (or a reload after a gap) shows.
const HISTORY = 100;
// Older messages are dropped so that a long-lived tab stays light.
const KEEP_MESSAGES = 500;
// At most one chat.typing per this many milliseconds: the others only need
// to know that someone is still typing, not every keystroke.
const TYPING_SEND_EVERY = 2000;
// A typing notice fades unless renewed within this time.
const TYPING_SHOW_FOR = 4000;

const $ = (id) => document.getElementById(id);
const ui = {
  status: $('status'),
  joinForm: $('join-form'),
  name: $('name'),
  room: $('room'),
  join: $('join'),
  leave: $('leave'),
  members: $('members'),
  memberCount: $('member-count'),
  noMembers: $('no-members'),
  roomTitle: $('room-title'),
  messages: $('messages'),
  typing: $('typing'),
  sendForm: $('send-form'),
  text: $('text'),
  send: $('send'),
  error: $('error'),
};

const state = {
  client: null,
  clientName: '', // the name the client's URL carries
  me: null, // {id, name} from chat.welcome; a new connection gets a new id
  myIds: new Set(), // every id this page had, so its earlier messages stay its own
  room: null, // the Room on screen
  unsubscribe: [], // its listeners
  shown: new Map(), // seq -> <li> of the messages on screen
  typing: new Map(), // member id -> {name, timer}
  lastTyping: 0,
  historyLoads: 0, // a newer load makes older answers stale
  historyMissing: false, // a load failed: retry after the next rejoin
  busy: false,
  errorTimer: 0,
};

// Member ids are "<name>#<suffix>" (see chatserver.authorize): the name of
// a message's author is known from the message alone.
function nameOf(id) {
  const i = typeof id === 'string' ? id.lastIndexOf('#') : -1;
  return i > 0 ? id.slice(0, i) : String(id);
}

// ---- connection

function newClient(name) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const client = new Client(`${scheme}//${location.host}/ws?name=${encodeURIComponent(name)}`);
  const current = () => client === state.client;
  client.on('chat.welcome', (p) => {
    if (!current()) return;
    state.me = p;
    state.myIds.add(p.id);
    renderMembers();
    for (const li of state.shown.values()) li.classList.toggle('mine', state.myIds.has(li.dataset.from));
  });
  client.on('chat.typing', (p) => current() && showTyping(p));
  // Error envelopes that answer none of the page's requests.
  client.on('error', (p) => current() && showError(p.message || p.code));
  client.onStatus('open', ({ reconnected }) => {
    if (!current()) return;
    // After a reconnect the room's rejoin follows; its "recover" event
    // says how it went.
    if (reconnected && state.room) setStatus('rejoining', 'reconnected: rejoining…');
    else setStatus('open', 'connected');
    render();
  });
  client.onStatus('disconnected', () => {
    if (!current()) return;
    setStatus('reconnecting', 'reconnecting…');
    clearTyping();
    render();
  });
  client.onStatus('reconnecting', ({ attempt }) => {
    if (current()) setStatus('reconnecting', attempt > 1 ? `reconnecting… (attempt ${attempt})` : 'reconnecting…');
  });
  return client;
}

// ---- rooms

async function join(name, roomName) {
  await leave();
  if (!state.client || state.clientName !== name) {
    // The name travels in the WebSocket URL, so another name is another
    // connection.
    const old = state.client;
    state.client = null;
    state.me = null;
    if (old) await old.close();
    state.client = newClient(name);
    state.clientName = name;
    setStatus('connecting', 'connecting…');
  }
  const room = state.client.room(roomName);
  state.room = room;
  state.unsubscribe = [
    room.on('message', addMessage),
    room.on('presence', renderMembers),
    room.on('joined', render),
    room.on('recover', onRecover),
    room.on('error', (err) => {
      // A rejoin was refused: the room is no longer joined.
      showError(`Left ${room.name}: ${err.message}`);
      render();
    }),
  ];
  render();
  try {
    await room.join();
  } catch (err) {
    if (state.room === room) detach();
    render();
    throw err;
  }
  await loadHistory();
}

async function leave() {
  const room = state.room;
  if (!room) return;
  detach();
  render();
  await room.leave();
}

// detach takes the room off the screen.
function detach() {
  for (const off of state.unsubscribe.splice(0)) off();
  state.room = null;
  state.historyLoads++;
  state.historyMissing = false;
  clearMessages();
  clearTyping();
}

// onRecover runs after every rejoin that a reconnect made.
function onRecover({ recovered }) {
  if (recovered) {
    setStatus('recovered', 'connected · recovered: missed nothing');
    if (state.historyMissing) loadHistory();
    return;
  }
  // Messages were lost for good (more than the room keeps, or the room
  // started over): show the room as it is now.
  setStatus('reloading', 'connected · some messages were missed: reloading history…');
  clearMessages();
  loadHistory().then((ok) => {
    if (ok) setStatus('reloaded', 'connected · some messages were missed: reloaded history');
  });
}

// loadHistory shows the room's recent messages. Live ones may arrive
// meanwhile; both go in by sequence number, each once.
async function loadHistory() {
  const room = state.room;
  const load = ++state.historyLoads;
  let messages;
  try {
    messages = await room.history({ limit: HISTORY });
  } catch (err) {
    if (load === state.historyLoads) {
      state.historyMissing = true;
      if (err.code !== 'disconnected') showError(`Could not load history: ${err.message}`);
    }
    return false;
  }
  if (load !== state.historyLoads || room !== state.room) return false;
  state.historyMissing = false;
  for (const m of messages) addMessage(m);
  return true;
}

// ---- messages

function addMessage(m) {
  if (state.shown.has(m.seq)) return;
  const body = m.body && typeof m.body === 'object' ? m.body : {};
  const li = el('li', { class: 'msg', 'data-seq': String(m.seq), 'data-from': m.from });
  if (state.myIds.has(m.from)) li.classList.add('mine');
  li.append(
    el('span', { class: 'from', title: m.from }, nameOf(m.from)),
    el('span', { class: 'text' }, typeof body.text === 'string' ? body.text : JSON.stringify(m.body)),
  );
  const box = ui.messages;
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  // Live messages come in order and go last; history goes before them.
  let next = null;
  for (let node = box.lastElementChild; node; node = node.previousElementSibling) {
    if (Number(node.dataset.seq) < m.seq) break;
    next = node;
  }
  box.insertBefore(li, next);
  state.shown.set(m.seq, li);
  while (box.childElementCount > KEEP_MESSAGES) {
    state.shown.delete(Number(box.firstElementChild.dataset.seq));
    box.firstElementChild.remove();
  }
  stopTyping(m.from);
  // Follow new messages only if the reader was already at the bottom.
  if (atBottom || !next) box.scrollTop = box.scrollHeight;
}

function clearMessages() {
  state.shown.clear();
  ui.messages.replaceChildren();
}

// ---- typing

function showTyping(p) {
  if (!state.room || p.room !== state.room.name) return;
  stopTyping(p.from);
  const timer = setTimeout(() => {
    state.typing.delete(p.from);
    renderTyping();
  }, TYPING_SHOW_FOR);
  state.typing.set(p.from, { name: p.name || nameOf(p.from), timer });
  renderTyping();
}

function stopTyping(id) {
  const t = state.typing.get(id);
  if (!t) return;
  clearTimeout(t.timer);
  state.typing.delete(id);
  renderTyping();
}

function clearTyping() {
  for (const id of [...state.typing.keys()]) stopTyping(id);
}

// ---- drawing

function render() {
  const room = state.room;
  const joined = !!(room && room.joined);
  ui.roomTitle.textContent = room ? room.name : 'No room';
  ui.leave.disabled = !room || state.busy;
  ui.join.disabled = state.busy;
  ui.text.disabled = !joined;
  ui.send.disabled = !joined;
  renderMembers();
}

function renderMembers() {
  const members = state.room && state.room.joined ? state.room.members : [];
  ui.members.replaceChildren(
    ...members.map((m) => {
      const me = state.me && m.id === state.me.id;
      const li = el('li', { class: me ? 'me' : '', title: m.id }, nameOf(m.id));
      if (me) li.append(el('span', { class: 'you' }, ' (you)'));
      return li;
    }),
  );
  ui.memberCount.textContent = members.length ? `(${members.length})` : '';
  ui.noMembers.hidden = members.length > 0;
  // Someone who left is no longer typing.
  for (const id of [...state.typing.keys()]) {
    if (!members.some((m) => m.id === id)) stopTyping(id);
  }
}

function renderTyping() {
  const names = [...state.typing.values()].map((t) => t.name);
  let text = '';
  if (names.length === 1) text = `${names[0]} is typing…`;
  else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
  else if (names.length > 2) text = 'several people are typing…';
  ui.typing.textContent = text;
}

function setStatus(kind, text) {
  ui.status.dataset.state = kind;
  ui.status.textContent = text;
}

function showError(text) {
  ui.error.textContent = text;
  clearTimeout(state.errorTimer);
  state.errorTimer = setTimeout(() => (ui.error.textContent = ''), 8000);
}

// el builds an element; text goes in as text, never as HTML.
function el(tag, attrs, text) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v) node.setAttribute(k, v);
  if (text != null) node.textContent = text;
  return node;
}

// ---- what the user does

async function busy(fn) {
  state.busy = true;
  render();
  try {
    await fn();
  } catch (err) {
    showError(err.message || String(err));
  } finally {
    state.busy = false;
    render();
  }
}

ui.joinForm.addEventListener('submit', (ev) => {
  ev.preventDefault();
  if (state.busy) return;
  const name = ui.name.value.trim() || 'anon';
  const roomName = ui.room.value.trim();
  if (!roomName) return;
  if (state.room && state.room.name === roomName && state.clientName === name) return;
  busy(async () => {
    await join(name, roomName);
    ui.text.focus();
  });
});

ui.leave.addEventListener('click', () => {
  if (!state.busy) busy(leave);
});

ui.sendForm.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const room = state.room;
  const text = ui.text.value;
  if (!room || !text.trim()) return;
  ui.text.value = '';
  state.lastTyping = 0;
  try {
    await room.publish({ text });
  } catch (err) {
    if (err.code === 'disconnected') {
      // It may have reached the room before the connection went: the
      // resume shows it if it did.
      showError('The connection dropped while sending: if your message does not appear, send it again.');
      return;
    }
    showError(`Not sent: ${err.message}`);
    if (!ui.text.value) ui.text.value = text;
  }
});

ui.text.addEventListener('input', () => {
  const now = Date.now();
  const room = state.room;
  if (!room || !room.joined || !ui.text.value.trim() || now - state.lastTyping < TYPING_SEND_EVERY) return;
  state.lastTyping = now;
  state.client.send('chat.typing', { room: room.name });
});

render();
