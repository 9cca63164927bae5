// Troupe JavaScript client: a dependency-free ES module for browsers and
// Node.js (20 or later; pass the `ws` package's WebSocket in the options
// where globalThis.WebSocket is missing).
//
// It speaks Troupe's envelope protocol ({"type","payload","id"}) and its
// built-in room protocol (room.join, room.publish, room.leave, room.history,
// room.message, presence.diff), and it keeps a connection alive: heartbeats
// with a deadline, reconnection with exponential backoff and jitter, and
// rooms that rejoin with the last sequence number they saw, so that a
// reconnect loses and repeats no message.

/** The subprotocol under which the server may pack several envelopes,
 * separated by newlines, into one frame. */
export const SUBPROTOCOL_NDJSON = 'ndjson';

/** Defaults of the client's options; see the README for each. */
export const DEFAULTS = Object.freeze({
  protocols: [SUBPROTOCOL_NDJSON],
  reconnect: true,
  minDelay: 250,
  maxDelay: 10000,
  factor: 2,
  jitter: 0.5,
  pingInterval: 20000,
  pongTimeout: 10000,
  connectTimeout: 10000,
  requestTimeout: 10000,
  maxQueued: 1000,
});

// WebSocket readyState values, the same in browsers and in `ws`.
const CONNECTING = 0;
const OPEN = 1;

/**
 * The error a request rejects with: an error envelope from the server (its
 * code and message), or one of the client's own codes: "timeout",
 * "disconnected" (the connection ended before the answer came), "closed"
 * (the client was closed), "queue_full".
 */
// The names of a room's own events: an application event of the same type
// would be taken for one, so it is not delivered to room.on.
const ROOM_EVENTS = new Set(['message', 'presence', 'joined', 'recover', 'left', 'error']);

export class TroupeError extends Error {
  constructor(code, message, details) {
    super(message || code);
    this.name = 'TroupeError';
    this.code = code;
    if (details !== undefined) this.details = details;
  }
}

/**
 * The delay before reconnect attempt number `attempt` (0 for the first):
 * exponential growth from minDelay by factor up to maxDelay, of which a
 * random part up to `jitter` (0..1) is taken away, so that clients dropped
 * together do not all come back at the same instant.
 */
export function backoffDelay(attempt, opts = DEFAULTS, random = Math.random) {
  const { minDelay, maxDelay, factor, jitter } = { ...DEFAULTS, ...opts };
  const base = Math.min(maxDelay, minDelay * Math.pow(factor, Math.max(0, attempt)));
  return base * (1 - jitter * random());
}

// Listeners keyed by name. A listener that throws must not stop the
// client or the other listeners: its error is rethrown on its own, where
// the platform reports uncaught errors.
class Emitter {
  constructor() {
    this._map = new Map();
  }

  on(name, fn) {
    if (typeof fn !== 'function') throw new TypeError('listener must be a function');
    let set = this._map.get(name);
    if (!set) this._map.set(name, (set = new Set()));
    set.add(fn);
    return () => this.off(name, fn);
  }

  off(name, fn) {
    const set = this._map.get(name);
    if (set) {
      set.delete(fn);
      if (set.size === 0) this._map.delete(name);
    }
  }

  emit(name, ...args) {
    const set = this._map.get(name);
    if (!set) return 0;
    for (const fn of [...set]) {
      try {
        fn(...args);
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    }
    return set.size;
  }
}

// A request id as a map key: JSON keeps the number 1 and the string "1"
// apart.
const idKey = (id) => JSON.stringify(id);

/**
 * A connection to a Troupe server that comes back by itself.
 *
 *   const client = new Client('wss://example.com/ws');
 *   await client.connect();
 *   const reply = await client.request('greet', { name: 'ann' });
 *
 * With a list of URLs (the nodes of a cluster), each reconnect goes to the
 * next one, and rooms resume there.
 */
export class Client {
  constructor(url, options = {}) {
    // Several URLs: the nodes of one cluster. A lost connection moves on to
    // the next one, so a client whose node went away resumes through
    // another.
    this.urls = Array.isArray(url) ? [...url] : [url];
    if (this.urls.length === 0) throw new TypeError('no URL');
    this._urlIndex = 0;
    this.options = { ...DEFAULTS, ...options };
    this._WebSocket = options.WebSocket || globalThis.WebSocket;
    if (typeof this._WebSocket !== 'function') {
      throw new TypeError(
        'no WebSocket implementation: pass options.WebSocket (under Node.js, the ws package\'s WebSocket)',
      );
    }
    this._ws = null;
    this._state = 'idle';
    this._attempt = 0;
    this._connections = 0;
    this._nextId = 1;
    this._pending = new Map(); // idKey(id) -> request
    this._outbox = []; // frames waiting for a connection: {data, key}
    this._messages = new Emitter(); // envelopes, by type
    this._status = new Emitter(); // connection events
    this._handlers = new Map(); // server requests, by type
    this._rooms = new Map();
    this._waiters = []; // connect() promises
    this._timers = { reconnect: null, connect: null, ping: null };
    this._pingKey = null;
  }

  /** "idle", "connecting", "open", "reconnecting" (waiting to retry) or "closed". */
  get state() {
    return this._state;
  }

  /** The current WebSocket (null between connections). */
  get socket() {
    return this._ws;
  }

  /** The subprotocol the server selected for the current connection. */
  get protocol() {
    return this._ws ? this._ws.protocol : '';
  }

  /**
   * Starts connecting (if the client is idle) and resolves once a connection
   * is open. It keeps trying, with backoff, until then; it rejects only if
   * the client is closed first.
   */
  connect() {
    if (this._state === 'closed') {
      return Promise.reject(new TroupeError('closed', 'client is closed'));
    }
    if (this._state === 'idle') this._open();
    if (this._state === 'open') return Promise.resolve();
    return new Promise((resolve, reject) => this._waiters.push({ resolve, reject }));
  }

  /**
   * Closes the connection for good: no reconnect, pending requests reject
   * with "closed". Resolves once the socket has closed.
   */
  close(code = 1000, reason = '') {
    if (this._state === 'closed') return Promise.resolve();
    this._state = 'closed';
    this._clearTimers();
    const err = new TroupeError('closed', 'client is closed');
    for (const w of this._waiters.splice(0)) w.reject(err);
    this._outbox = [];
    for (const key of [...this._pending.keys()]) this._settle(key, null, err);
    for (const room of this._rooms.values()) room._onClose(err);
    const ws = this._ws;
    this._ws = null;
    this._status.emit('closed', { code, reason, wasClean: true });
    if (!ws) return Promise.resolve();
    return new Promise((resolve) => {
      let done = false;
      const finish = () => {
        if (!done) {
          done = true;
          clearTimeout(cut);
          resolve();
        }
      };
      // A peer that never answers the close handshake does not hold us.
      const cut = setTimeout(() => {
        kill(ws);
        finish();
      }, 2000);
      ws.onopen = null;
      ws.onmessage = null;
      ws.onerror = () => {};
      ws.onclose = finish;
      if (ws.readyState === CONNECTING) {
        kill(ws);
        finish();
        return;
      }
      try {
        ws.close(code, reason);
      } catch {
        kill(ws);
        finish();
      }
    });
  }

  /**
   * Subscribes fn(payload, envelope) to envelopes of the given type ("*":
   * every envelope). An "error" envelope that answers none of this client's
   * requests goes to "error" subscribers. Returns a function that
   * unsubscribes.
   */
  on(type, fn) {
    return this._messages.on(type, fn);
  }

  /** Unsubscribes fn from type. */
  off(type, fn) {
    this._messages.off(type, fn);
  }

  /**
   * Subscribes fn to a connection event: "open" ({reconnected}),
   * "disconnected" ({code, reason}), "reconnecting" ({attempt, delay}) or
   * "closed" (close was called). Returns a function that unsubscribes.
   */
  onStatus(event, fn) {
    return this._status.on(event, fn);
  }

  /**
   * Answers the server's requests of the given type (Session.Request on the
   * server): fn(payload, envelope) returns the answer's payload (or a
   * promise of it); a thrown TroupeError answers an error envelope with its
   * code, any other error one with code "handler_error".
   */
  handle(type, fn) {
    this._handlers.set(type, fn);
    return () => {
      if (this._handlers.get(type) === fn) this._handlers.delete(type);
    };
  }

  /**
   * Sends {"type", "payload"} without waiting for an answer. While no
   * connection is open it is queued (at most maxQueued frames) and sent
   * once one is.
   */
  send(type, payload) {
    this._enqueue(encode(type, payload, undefined), null);
  }

  /**
   * Sends {"type", "payload", "id"} and resolves with the payload of the
   * answer carrying the same id; rejects with a TroupeError for an error
   * envelope, when no answer comes within timeout ms (default
   * requestTimeout), or when the connection ends before the answer.
   */
  request(type, payload, { timeout } = {}) {
    return this._request(type, payload, { timeout }).then((env) => env.payload);
  }

  /** The room with this name (one object per name): see Room. */
  room(name, options = {}) {
    let room = this._rooms.get(name);
    if (!room) {
      room = new Room(this, name, options);
      this._rooms.set(name, room);
    } else {
      room._configure(options);
    }
    return room;
  }

  // _request sends a request and resolves with the whole answer envelope.
  // onAnswer(env, err), if given, runs synchronously when the request is
  // settled, before any later frame is handled (promise callbacks run only
  // after the whole frame): rooms use it to update their join state in
  // order with the messages that follow. With queue false a request is
  // refused ("disconnected") instead of waiting for a connection.
  _request(type, payload, { timeout, onAnswer, queue = true } = {}) {
    if (this._state === 'closed') {
      return Promise.reject(new TroupeError('closed', 'client is closed'));
    }
    const id = this._nextId++;
    const key = idKey(id);
    const ms = timeout ?? this.options.requestTimeout;
    return new Promise((resolve, reject) => {
      const req = { resolve, reject, onAnswer, sent: false, timer: null };
      this._pending.set(key, req);
      req.timer = setTimeout(() => {
        this._outbox = this._outbox.filter((f) => f.key !== key);
        this._settle(key, null, new TroupeError('timeout', `no answer to ${type} within ${ms} ms`));
      }, ms);
      const data = encode(type, payload, id);
      if (!queue && this._state !== 'open') {
        this._settle(key, null, new TroupeError('disconnected', 'not connected'));
        return;
      }
      try {
        this._enqueue(data, key);
      } catch (err) {
        this._settle(key, null, err);
      }
    });
  }

  _settle(key, env, err) {
    const req = this._pending.get(key);
    if (!req) return false;
    this._pending.delete(key);
    clearTimeout(req.timer);
    if (req.onAnswer) req.onAnswer(env, err);
    if (err) req.reject(err);
    else req.resolve(env);
    return true;
  }

  _enqueue(data, key) {
    if (this._state === 'open' && this._ws && this._ws.readyState === OPEN) {
      this._ws.send(data);
      if (key) this._pending.get(key).sent = true;
      return;
    }
    if (this._state === 'closed') throw new TroupeError('closed', 'client is closed');
    if (this._outbox.length >= this.options.maxQueued) {
      throw new TroupeError('queue_full', `${this.options.maxQueued} messages already wait for a connection`);
    }
    this._outbox.push({ data, key });
    if (this._state === 'idle') this._open();
  }

  /** The URL of the current (or next) connection. */
  get url() {
    return this.urls[this._urlIndex];
  }

  _open() {
    this._state = 'connecting';
    let ws;
    try {
      ws = new this._WebSocket(this.url, this.options.protocols);
    } catch (err) {
      this._connectionLost(null, 1006, String((err && err.message) || err));
      return;
    }
    ws.binaryType = 'arraybuffer';
    this._ws = ws;
    let gotMessage = false;
    this._timers.connect = setTimeout(() => {
      this._abandon(ws, 'connect timeout');
    }, this.options.connectTimeout);
    ws.onopen = () => {
      if (ws !== this._ws) return;
      clearTimeout(this._timers.connect);
      this._onOpen(ws);
    };
    ws.onmessage = (ev) => {
      if (ws !== this._ws) return;
      if (!gotMessage) {
        // The server accepted and answered: back off from scratch next
        // time. (Resetting on open alone would hammer a server that
        // accepts and at once closes.)
        gotMessage = true;
        this._attempt = 0;
      }
      this._onFrame(ws, ev.data);
    };
    ws.onerror = () => {
      // A close event always follows; it carries what there is to say.
    };
    ws.onclose = (ev) => {
      if (ws !== this._ws) return;
      this._connectionLost(ws, ev.code, ev.reason);
    };
  }

  _onOpen(ws) {
    this._state = 'open';
    const reconnected = this._connections > 0;
    this._connections++;
    this._startHeartbeat(ws);
    // Rooms first, so that queued publishes reach the server after the
    // joins that they need.
    for (const room of this._rooms.values()) room._onConnect();
    const outbox = this._outbox;
    this._outbox = [];
    for (const f of outbox) {
      if (f.key && !this._pending.has(f.key)) continue;
      ws.send(f.data);
      if (f.key) this._pending.get(f.key).sent = true;
    }
    for (const w of this._waiters.splice(0)) w.resolve();
    this._status.emit('open', { reconnected });
  }

  // _abandon gives up on a socket that is silent (no pong, or a handshake
  // that hangs): waiting for its close event could take minutes, so it is
  // cut and a new connection is made at once.
  _abandon(ws, reason) {
    if (ws !== this._ws) return;
    ws.onopen = null;
    ws.onmessage = null;
    ws.onclose = null;
    ws.onerror = () => {};
    kill(ws);
    this._connectionLost(ws, 1006, reason);
  }

  _connectionLost(ws, code, reason) {
    if (this._state === 'closed') return;
    this._ws = null;
    this._clearTimers();
    const err = new TroupeError('disconnected', `connection lost (${code}${reason ? ' ' + reason : ''})`);
    // Requests already sent may or may not have been carried out; their
    // answers are gone with the connection. Unsent ones wait in the outbox.
    for (const [key, req] of [...this._pending]) {
      if (req.sent) this._settle(key, null, err);
    }
    for (const room of this._rooms.values()) room._onDisconnect();
    this._status.emit('disconnected', { code, reason, url: this.url });
    this._urlIndex = (this._urlIndex + 1) % this.urls.length;
    if (!this.options.reconnect) {
      this.close(code, reason);
      return;
    }
    const delay = backoffDelay(this._attempt, this.options);
    this._attempt++;
    this._state = 'reconnecting';
    this._status.emit('reconnecting', { attempt: this._attempt, delay });
    this._timers.reconnect = setTimeout(() => {
      this._timers.reconnect = null;
      if (this._state === 'reconnecting') this._open();
    }, delay);
  }

  _clearTimers() {
    for (const k of Object.keys(this._timers)) {
      clearTimeout(this._timers[k]);
      clearInterval(this._timers[k]);
      this._timers[k] = null;
    }
    if (this._pingKey) {
      const ping = this._pending.get(this._pingKey);
      if (ping) clearTimeout(ping.timer);
      this._pending.delete(this._pingKey);
      this._pingKey = null;
    }
  }

  // The heartbeat: a "ping" envelope every pingInterval, which the server
  // answers "pong" with the same id. No pong within pongTimeout means the
  // path is dead even if the socket looks open (a half-open TCP
  // connection), so the client reconnects. The pings also keep the server's
  // idle timeout from closing a client that only listens.
  _startHeartbeat(ws) {
    const { pingInterval, pongTimeout } = this.options;
    if (!(pingInterval > 0)) return;
    this._timers.ping = setInterval(() => {
      if (ws !== this._ws || this._pingKey) return;
      const id = this._nextId++;
      const key = idKey(id);
      this._pingKey = key;
      const req = {
        sent: true,
        timer: null,
        resolve: () => {},
        reject: () => {},
        onAnswer: () => {
          if (this._pingKey === key) this._pingKey = null;
        },
      };
      this._pending.set(key, req);
      req.timer = setTimeout(() => {
        this._pending.delete(key);
        if (this._pingKey === key) this._pingKey = null;
        this._abandon(ws, 'pong timeout');
      }, pongTimeout);
      ws.send(encode('ping', { t: Date.now() }, id));
    }, pingInterval);
  }

  _onFrame(ws, data) {
    if (typeof data !== 'string') return; // binary frames are not envelopes
    if (ws.protocol === SUBPROTOCOL_NDJSON) {
      let start = 0;
      while (start < data.length) {
        let end = data.indexOf('\n', start);
        if (end < 0) end = data.length;
        if (end > start) this._onText(data.slice(start, end));
        start = end + 1;
        if (ws !== this._ws) return; // a listener closed or replaced it
      }
    } else {
      this._onText(data);
    }
  }

  _onText(text) {
    let env;
    try {
      env = JSON.parse(text);
    } catch {
      return;
    }
    if (!env || typeof env !== 'object' || typeof env.type !== 'string') return;
    const p = env.payload;
    if (p && typeof p === 'object' && typeof p.room === 'string') {
      const room = this._rooms.get(p.room);
      if (room) room._onEnvelope(env);
    }
    if (env.id !== undefined && env.id !== null) {
      const key = idKey(env.id);
      if (this._pending.has(key)) {
        if (env.type === 'error') {
          const e = p || {};
          this._settle(key, env, new TroupeError(e.code || 'error', e.message || 'error', e));
          // It rejected its request, which is where it belongs: not
          // also to on('error'), which is for errors nobody asked for.
          return;
        }
        this._settle(key, env, null);
      } else if (typeof env.id === 'string' && env.type !== 'error' && env.type !== 'reply') {
        // This client's ids are numbers: a string id that answers nothing
        // of ours is a request from the server.
        this._answer(env);
      }
    }
    const n = this._messages.emit(env.type, p, env) + this._messages.emit('*', p, env);
    if (env.type === 'error' && env.id == null && n === 0 && typeof console !== 'undefined') {
      // An error that answers no request and that nobody listens for
      // would otherwise vanish.
      console.warn('troupe: error from server', p);
    }
  }

  // _answer replies to a request the server sent (an envelope with an id
  // that is not one of ours).
  _answer(env) {
    const fn = this._handlers.get(env.type);
    const ws = this._ws;
    const reply = (type, payload) => {
      if (ws === this._ws && ws && ws.readyState === OPEN) ws.send(encode(type, payload, env.id));
    };
    if (!fn) {
      reply('error', { code: 'unknown_type', message: `no handler for ${env.type}` });
      return;
    }
    Promise.resolve()
      .then(() => fn(env.payload, env))
      .then(
        (result) => reply('reply', result),
        (err) =>
          reply('error', {
            code: err instanceof TroupeError ? err.code : 'handler_error',
            message: String((err && err.message) || err),
          }),
      );
  }
}

/**
 * A room of the built-in room protocol. Get one with client.room(name,
 * {meta}); it keeps its membership across reconnects: every joined room
 * rejoins with `since` = the last sequence number it saw, receives what it
 * missed, and drops anything it has already seen.
 */
export class Room {
  constructor(client, name, options) {
    this.client = client;
    this.name = name;
    this.meta = undefined;
    this._events = new Emitter();
    this._members = [];
    this._lastSeq = null; // newest seq seen; null before the first join
    this._want = false; // the application wants to be a member
    this._leaving = 0; // room.leave requests in flight
    this._joined = false; // room.joined arrived on this connection
    this._joining = null; // {since} while a join is in flight
    this._recoverAt = null; // {since, seq} while missed messages arrive
    this._joinWaiters = [];
    this._configure(options);
  }

  _configure({ meta, onMessage, onPresence, onJoined, onRecover, onError } = {}) {
    if (meta !== undefined) this.meta = meta;
    if (onMessage) this.on('message', onMessage);
    if (onPresence) this.on('presence', onPresence);
    if (onJoined) this.on('joined', onJoined);
    if (onRecover) this.on('recover', onRecover);
    if (onError) this.on('error', onError);
  }

  /** Whether the room is joined on the current connection. */
  get joined() {
    return this._joined;
  }

  /** The newest sequence number seen (null before the first join). */
  get lastSeq() {
    return this._lastSeq;
  }

  /** The members, [{id, meta}], as of the last room.joined and presence.diff. */
  get members() {
    return this._members.map((m) => ({ ...m }));
  }

  /**
   * Subscribes to a room event: "message" (the room.message payload {room,
   * seq, from, body}), "presence" (members, {joins, leaves}), "joined" (the
   * room.joined payload plus {rejoin}), "recover" ({recovered, since, seq},
   * after a reconnect), "left", "error" (a TroupeError: a rejoin refused);
   * or, by its envelope type, an application event whose payload names
   * this room ({"type":"auction.bid","payload":{"room":…}}): fn(payload,
   * envelope).
   */
  on(event, fn) {
    return this._events.on(event, fn);
  }

  /** Unsubscribes fn from event. */
  off(event, fn) {
    this._events.off(event, fn);
  }

  /**
   * Joins the room (connecting first if need be) and resolves with the
   * room.joined payload {room, seq, members, recovered}. Rejects with a
   * TroupeError if the server refuses or nothing comes within timeout ms.
   */
  join({ timeout } = {}) {
    const client = this.client;
    if (client._state === 'closed') return Promise.reject(new TroupeError('closed', 'client is closed'));
    if (this._want && this._joined) return Promise.resolve(this._snapshot());
    const ms = timeout ?? client.options.requestTimeout;
    const p = new Promise((resolve, reject) => {
      const w = { resolve, reject, timer: null };
      w.timer = setTimeout(() => {
        this._joinWaiters = this._joinWaiters.filter((x) => x !== w);
        if (!this._joined && this._joinWaiters.length === 0) this._want = false;
        reject(new TroupeError('timeout', `room ${this.name} not joined within ${ms} ms`));
      }, ms);
      this._joinWaiters.push(w);
    });
    if (!this._want) {
      this._want = true;
      this._lastSeq = null; // a fresh join, not a resume
    }
    if (client._state === 'open') {
      if (!this._joining) this._sendJoin(false);
    } else if (client._state === 'idle') {
      client._open();
    }
    return p;
  }

  /** Publishes body (any JSON value) and resolves with its sequence number. */
  publish(body, { timeout } = {}) {
    return this.client
      .request('room.publish', { room: this.name, body }, { timeout })
      .then((p) => p.seq);
  }

  /**
   * Leaves the room: no more messages, no rejoin after a reconnect.
   * Resolves once the server confirms (at once when not connected: the
   * server forgot the membership with the connection).
   */
  async leave({ timeout } = {}) {
    this._want = false;
    this._recoverAt = null;
    const err = new TroupeError('left', `left room ${this.name}`);
    for (const w of this._joinWaiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(err);
    }
    if (!this._joined && !this._joining) {
      this._members = [];
      return;
    }
    this._leaving++;
    try {
      await this.client._request('room.leave', { room: this.name }, { timeout, queue: false });
    } catch (e) {
      if (e.code !== 'disconnected' && e.code !== 'not_member') throw e;
    } finally {
      this._leaving--;
    }
    if (!this._want) {
      this._joined = false;
      this._members = [];
    }
  }

  /**
   * Resolves with up to limit earlier messages (room.message payloads,
   * oldest first) with a sequence number below before (default: the
   * newest).
   */
  history({ before, limit, timeout } = {}) {
    const payload = { room: this.name };
    if (before !== undefined) payload.before = before;
    if (limit !== undefined) payload.limit = limit;
    return this.client.request('room.history', payload, { timeout }).then((p) => p.messages || []);
  }

  _snapshot() {
    return { room: this.name, seq: this._lastSeq, members: this.members, recovered: true };
  }

  _sendJoin(rejoin) {
    const payload = { room: this.name };
    if (this.meta !== undefined) payload.meta = this.meta;
    const since = rejoin && this._lastSeq !== null ? this._lastSeq : null;
    if (since !== null) {
      payload.since = since;
      // The room's incarnation: numbers from an earlier one mean nothing.
      if (this._epoch) payload.epoch = this._epoch;
    }
    const joining = { since };
    this._joining = joining;
    this.client
      ._request('room.join', payload, {
        queue: false,
        onAnswer: (env, err) => {
          if (this._joining === joining) this._joining = null;
          if (!err || err.code === 'disconnected' || err.code === 'closed') return;
          // Refused (or timed out): the application is told and the room
          // is not rejoined again until join() is called.
          this._want = false;
          for (const w of this._joinWaiters.splice(0)) {
            clearTimeout(w.timer);
            w.reject(err);
          }
          if (rejoin) this._events.emit('error', err);
        },
      })
      .catch(() => {});
  }

  _onConnect() {
    this._joined = false;
    if (this._want) this._sendJoin(this._lastSeq !== null);
  }

  _onDisconnect() {
    this._joined = false;
    this._joining = null;
    this._recoverAt = null;
  }

  _onClose(err) {
    this._onDisconnect();
    this._want = false;
    for (const w of this._joinWaiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(err);
    }
  }

  // _onEnvelope takes in an envelope about this room, synchronously and in
  // the order the server sent them.
  _onEnvelope(env) {
    const p = env.payload;
    switch (env.type) {
      case 'room.joined':
        this._onJoined(p);
        break;
      case 'room.message':
        this._onMessage(p);
        break;
      case 'presence.diff':
        if (this._joined) this._onPresence(p);
        break;
      case 'room.left':
        this._joined = false;
        this._members = [];
        this._events.emit('left', p);
        break;
      default:
        // The application's own events for this room (a payload whose
        // "room" is this room's name), by their envelope type; not the
        // names of the room's own events, nor errors and replies, which
        // belong to requests.
        if (!ROOM_EVENTS.has(env.type) && env.type !== 'error' && env.type !== 'reply') {
          this._events.emit(env.type, p, env);
        }
    }
  }

  _onJoined(p) {
    if (!this._want) {
      // A join that was given up on (it timed out) went through after
      // all: undo it, unless a leave is already on its way.
      if (this._leaving === 0) {
        this.client._request('room.leave', { room: this.name }, { queue: false }).catch(() => {});
      }
      return;
    }
    const since = this._joining ? this._joining.since : null;
    const rejoin = since !== null;
    this._joined = true;
    this._members = Array.isArray(p.members) ? p.members.map((m) => ({ ...m })) : [];
    const seq = typeof p.seq === 'number' ? p.seq : 0;
    if (typeof p.epoch === 'string') this._epoch = p.epoch;
    // On a resume the missed messages follow (since < seq <= p.seq), so the
    // mark stays at since; a room that restarted from a lower sequence
    // number starts over from it.
    this._lastSeq = rejoin ? Math.min(since, seq) : seq;
    const recovered = p.recovered === true;
    this._events.emit('joined', { ...p, rejoin });
    this._events.emit('presence', this.members, { joins: this.members, leaves: [], reset: true });
    for (const w of this._joinWaiters.splice(0)) {
      clearTimeout(w.timer);
      w.resolve({ ...p, members: this.members });
    }
    if (rejoin) {
      if (recovered && this._lastSeq < seq) {
        this._recoverAt = { since, seq };
      } else {
        this._events.emit('recover', { recovered, since, seq });
      }
    }
  }

  _onMessage(p) {
    if (!this._joined || typeof p.seq !== 'number') return;
    if (this._lastSeq !== null && p.seq <= this._lastSeq) return; // seen already
    this._lastSeq = p.seq;
    this._events.emit('message', p);
    const r = this._recoverAt;
    if (r && p.seq >= r.seq) {
      this._recoverAt = null;
      this._events.emit('recover', { recovered: true, since: r.since, seq: r.seq });
    }
  }

  // Presence is a multiset: several sessions can share one identity. Joins
  // are applied before leaves, so that a diff that batches a member's join
  // and leave ends without it.
  _onPresence(p) {
    const joins = Array.isArray(p.joins) ? p.joins : [];
    const leaves = Array.isArray(p.leaves) ? p.leaves : [];
    for (const m of joins) this._members.push({ ...m });
    for (const m of leaves) {
      let i = this._members.findIndex((x) => x.id === m.id && sameJSON(x.meta, m.meta));
      if (i < 0) i = this._members.findIndex((x) => x.id === m.id);
      if (i >= 0) this._members.splice(i, 1);
    }
    this._events.emit('presence', this.members, { joins, leaves });
  }
}

function sameJSON(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

function encode(type, payload, id) {
  const env = { type };
  if (id !== undefined) env.id = id;
  if (payload !== undefined) env.payload = payload;
  return JSON.stringify(env);
}

// kill cuts a socket without waiting for the close handshake.
function kill(ws) {
  try {
    if (typeof ws.terminate === 'function') ws.terminate();
    else ws.close(4000, 'abandoned');
  } catch {
    // Already closed.
  }
}
