// Troupe JavaScript client: a dependency-free ES module for browsers and
// Node.js (20 or later; pass the `ws` package's WebSocket in the options
// where globalThis.WebSocket is missing).
//
// It speaks Troupe's envelope protocol ({"type","payload","id"}) and its
// built-in room protocol (room.join, room.publish, room.leave, room.history,
// room.message, presence.diff, presence.count, presence.list, room.resync),
// and it keeps a connection alive: heartbeats with a deadline,
// reconnection with exponential backoff and jitter, and rooms that rejoin
// with the last sequence number they saw, so that a reconnect loses and
// repeats no message; a room the server resyncs (it dropped messages this
// client did not read in time) catches up from the history by itself.
// Where a proxy refuses WebSocket upgrades it falls back by itself to the
// server's HTTP fallback (Server-Sent Events down, POST up), and moves back
// to a WebSocket once one opens again.

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
  maxOutbox: 1000,
  fallback: true,
  fallbackTimeout: 3000,
  upgradeInterval: 30000,
  resumeTimeout: 5000,
  readLimit: 16 * 1024 * 1024,
});

// WebSocket readyState values, the same in browsers and in `ws`.
const CONNECTING = 0;
const OPEN = 1;

/**
 * The error a request rejects with: an error envelope from the server (its
 * code and message), or one of the client's own codes: "timeout",
 * "disconnected" (the connection ended before the answer came), "closed"
 * (the client was closed), "queue_full", "outbox_full".
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

// PROBE_ID is the id of the ping that checks a new WebSocket carries
// messages (_open); its pong is the client's own business.
const PROBE_ID = 'troupe:probe';

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
    // The transport of the next connection: 'websocket', or 'sse' once a
    // WebSocket could not be opened (see _open).
    this._transport = 'websocket';
    this._wsWorks = false; // a WebSocket of this client has delivered a message
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
    this._unacked = 0; // room publishes not yet acknowledged (Room.publish)
    this._messages = new Emitter(); // envelopes, by type
    this._status = new Emitter(); // connection events
    this._handlers = new Map(); // server requests, by type
    this._rooms = new Map();
    this._waiters = []; // connect() promises
    this._timers = { reconnect: null, connect: null, ping: null, upgrade: null, probe: null };
    this._probe = null; // the WebSocket that tries whether upgrades pass again
    this._pingKey = null;
    this._lastFrameAt = 0; // when the last frame arrived (ms)
  }

  /** "idle", "connecting", "open", "reconnecting" (waiting to retry) or "closed". */
  get state() {
    return this._state;
  }

  /** The current WebSocket (null between connections). */
  get socket() {
    return this._ws;
  }

  /** The transport of the current (or next) connection: "websocket", or
   * "sse" (the HTTP fallback). */
  get transport() {
    return this._transport;
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
  _request(type, payload, { timeout, onAnswer, queue = true, room } = {}) {
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
      const data = encode(type, payload, id, room);
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
    const transport = this._transport;
    let ws;
    try {
      ws =
        transport === 'sse'
          ? new StreamSocket(this.url, this.options)
          : new this._WebSocket(this.url, this.options.protocols);
    } catch (err) {
      this._connectionLost(null, 1006, String((err && err.message) || err));
      return;
    }
    ws.binaryType = 'arraybuffer';
    this._ws = ws;
    let opened = false;
    let gotMessage = false;
    // A WebSocket that has never worked here gets less time: a proxy that
    // swallows upgrades should not hold the client for connectTimeout.
    const probing = transport === 'websocket' && !this._wsWorks && this.options.fallback;
    const limit = probing ? Math.min(this.options.fallbackTimeout, this.options.connectTimeout) : this.options.connectTimeout;
    this._timers.connect = setTimeout(() => {
      this._abandon(ws, 'connect timeout', !gotMessage);
    }, limit);
    ws.onopen = () => {
      if (ws !== this._ws) return;
      opened = true;
      if (probing) {
        // Open is not enough: some proxies pass the upgrade and then
        // nothing. A message must arrive within fallbackTimeout; the
        // ping's pong is one.
        ws.send(encode('ping', { t: Date.now() }, PROBE_ID));
      } else {
        clearTimeout(this._timers.connect);
      }
      this._onOpen(ws);
    };
    ws.onmessage = (ev) => {
      if (ws !== this._ws) return;
      this._lastFrameAt = Date.now();
      if (!gotMessage) {
        // The server accepted and answered: back off from scratch next
        // time. (Resetting on open alone would hammer a server that
        // accepts and at once closes.)
        gotMessage = true;
        this._attempt = 0;
        if (transport === 'websocket') this._wsWorks = true;
        if (probing) clearTimeout(this._timers.connect);
      }
      this._onFrame(ws, ev.data);
    };
    ws.onerror = () => {
      // A close event always follows; it carries what there is to say.
    };
    ws.onclose = (ev) => {
      if (ws !== this._ws) return;
      this._connectionLost(ws, ev.code, ev.reason, !gotMessage && !opened);
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
    if (this._transport === 'sse') this._scheduleUpgrade();
    this._status.emit('open', { reconnected, transport: this._transport });
  }

  // _scheduleUpgrade has a connection of the HTTP fallback try a WebSocket
  // every upgradeInterval; once one answers a ping, the client moves to
  // WebSocket (a reconnect, between requests: rooms resume with since).
  _scheduleUpgrade() {
    const every = this.options.upgradeInterval;
    if (!(every > 0)) return;
    const ws = this._ws;
    this._timers.upgrade = setTimeout(() => {
      this._timers.upgrade = null;
      if (ws !== this._ws) return;
      let probe;
      try {
        probe = new this._WebSocket(this.url, this.options.protocols);
      } catch {
        this._scheduleUpgrade();
        return;
      }
      // Both are ended by _clearTimers: a closed client keeps neither.
      const give = setTimeout(() => finish(false), this.options.fallbackTimeout);
      this._timers.probe = give;
      this._probe = probe;
      let done = false;
      const finish = (ok) => {
        if (done) return;
        done = true;
        clearTimeout(give);
        if (this._timers.probe === give) this._timers.probe = null;
        if (this._probe === probe) this._probe = null;
        probe.onopen = probe.onmessage = probe.onerror = probe.onclose = null;
        if (ok) {
          try {
            probe.close(1000, '');
          } catch {
            // closed already
          }
        } else {
          kill(probe);
        }
        if (ws !== this._ws) return;
        if (ok) this._moveToWebSocket(ws);
        else this._scheduleUpgrade();
      };
      probe.onopen = () => probe.send(encode('ping', { t: Date.now() }, PROBE_ID));
      probe.onmessage = () => finish(true);
      probe.onerror = () => {};
      probe.onclose = () => finish(false);
    }, every);
  }

  // _moveToWebSocket ends the fallback connection ws, once no request
  // waits for its answer on it, and reconnects at once over WebSocket.
  _moveToWebSocket(ws) {
    if (ws !== this._ws) return;
    const busy = [...this._pending.entries()].some(([key, req]) => req.sent && key !== this._pingKey);
    if (busy) {
      this._timers.upgrade = setTimeout(() => this._moveToWebSocket(ws), 100);
      return;
    }
    this._transport = 'websocket';
    this._wsWorks = true;
    ws.onopen = ws.onmessage = ws.onclose = null;
    ws.onerror = () => {};
    try {
      ws.close(1000, 'moving to websocket');
    } catch {
      kill(ws);
    }
    this._connectionLost(ws, 1000, 'moving to websocket', true);
  }

  // _abandon gives up on a socket that is silent (no pong, or a handshake
  // that hangs): waiting for its close event could take minutes, so it is
  // cut and a new connection is made at once.
  _abandon(ws, reason, neverWorked = false) {
    if (ws !== this._ws) return;
    ws.onopen = null;
    ws.onmessage = null;
    ws.onclose = null;
    ws.onerror = () => {};
    kill(ws);
    this._connectionLost(ws, 1006, reason, neverWorked);
  }

  // neverWorked: the connection ended before it delivered anything (a
  // refused upgrade, a proxy that swallows it). A WebSocket that never
  // worked is followed at once by the HTTP fallback, at the same URL; a
  // fallback that never worked by a WebSocket again, after the backoff.
  _connectionLost(ws, code, reason, neverWorked = false) {
    if (this._state === 'closed') return;
    const opened = this._state !== 'connecting';
    this._ws = null;
    this._clearTimers();
    const err = new TroupeError('disconnected', `connection lost (${code}${reason ? ' ' + reason : ''})`);
    // Requests already sent may or may not have been carried out; their
    // answers are gone with the connection. Unsent ones wait in the outbox.
    for (const [key, req] of [...this._pending]) {
      if (req.sent) this._settle(key, null, err);
    }
    for (const room of this._rooms.values()) room._onDisconnect();
    let immediate = false;
    const moving = code === 1000 && reason === 'moving to websocket';
    if (moving) {
      immediate = true; // the same URL, over WebSocket
    } else if (neverWorked && this.options.fallback && this._transport === 'websocket') {
      this._transport = 'sse';
      immediate = true;
    } else {
      if (neverWorked && this._transport === 'sse') this._transport = 'websocket';
      this._urlIndex = (this._urlIndex + 1) % this.urls.length;
    }
    // Falling back before anything opened is part of connecting: the
    // application hears of it only if the fallback fails too.
    const silent = immediate && !opened;
    if (!silent) this._status.emit('disconnected', { code, reason, url: this.url });
    // The move back to WebSocket is the client's own doing, not a loss:
    // it goes on even when lost connections are not made again.
    if (!this.options.reconnect && !silent && !moving) {
      this.close(code, reason);
      return;
    }
    const delay = immediate ? 0 : backoffDelay(this._attempt, this.options);
    if (!immediate) this._attempt++;
    this._state = silent ? 'connecting' : 'reconnecting';
    if (!silent) this._status.emit('reconnecting', { attempt: this._attempt, delay });
    this._timers.reconnect = setTimeout(() => {
      this._timers.reconnect = null;
      if (this._state === 'reconnecting' || (silent && this._state === 'connecting')) this._open();
    }, delay);
  }


  _clearTimers() {
    for (const k of Object.keys(this._timers)) {
      clearTimeout(this._timers[k]);
      clearInterval(this._timers[k]);
      this._timers[k] = null;
    }
    if (this._probe) {
      const probe = this._probe;
      this._probe = null;
      probe.onopen = probe.onmessage = probe.onclose = null;
      probe.onerror = () => {};
      kill(probe);
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
      // No pong, and nothing else either, for pongTimeout: the path is
      // dead. What keeps arriving extends the wait: on a slow link the
      // pong comes behind it.
      const expire = () => {
        const quiet = Date.now() - this._lastFrameAt;
        if (quiet < pongTimeout) {
          req.timer = setTimeout(expire, pongTimeout - quiet);
          return;
        }
        this._pending.delete(key);
        if (this._pingKey === key) this._pingKey = null;
        this._abandon(ws, 'pong timeout');
      };
      req.timer = setTimeout(expire, pongTimeout);
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
    if (env.id === PROBE_ID) return; // the answer to the client's own probe (_open)
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
    this._count = 0; // the room's member count, as the server last told it
    this._counted = false; // the server counts the members: _members is a first page, not kept current
    this._lastSeq = null; // newest seq seen; null before the first join
    this._want = false; // the application wants to be a member
    this._leaving = 0; // room.leave requests in flight
    this._joined = false; // room.joined arrived on this connection
    this._joining = null; // {since} while a join is in flight
    this._recoverAt = null; // {since, seq} while missed messages arrive
    this._catch = null; // a resync's catch-up in progress (see _onResync)
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

  /**
   * The members, [{id, meta}], as of the last room.joined, presence.diff
   * and presence.list. In a room the server counts (see counted) only a
   * first page of them, not kept current.
   */
  get members() {
    return this._members.map((m) => ({ ...m }));
  }

  /**
   * The number of members: as the server last told it (room.joined,
   * presence.count, presence.list), or the length of the list as diffs
   * keep it.
   */
  get count() {
    return this._counted ? this._count : this._members.length;
  }

  /**
   * Whether the server counts the room's members instead of listing them
   * (a room above the server's PresenceLimit): members is then a first
   * page, and only count follows the room. A presence.list lists them
   * again.
   */
  get counted() {
    return this._counted;
  }

  /**
   * Subscribes to a room event: "message" (the room.message payload {room,
   * seq, from, body}), "presence" (members, {joins, leaves, count,
   * counted, reset}), "joined" (the
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

  /**
   * Publishes body (any JSON value) and resolves with its sequence number.
   *
   * The publish carries a message id (`mid`: a random UUID unless given,
   * at most 64 bytes) and stays in the client's outbox until the server
   * acknowledges it: cut off by a disconnect (or unanswered within
   * requestTimeout, or refused as "unavailable"), it is sent again, with
   * the same mid, after the reconnect and the room's rejoin, and the
   * server publishes a mid once. So the promise settles once, with the seq
   * every member sees. It rejects with the server's refusal, "closed",
   * "outbox_full" (maxOutbox publishes wait already) or, with a timeout
   * (ms, default none), "timeout" (the message may then have been
   * published or not). With maxOutbox negative it is a plain request.
   */
  publish(body, { timeout, mid } = {}) {
    const client = this.client;
    const payload = { room: this.name, body };
    if (mid !== undefined) payload.mid = mid;
    const max = client.options.maxOutbox;
    if (max < 0) return client.request('room.publish', payload, { timeout }).then((p) => p.seq);
    if (client._state === 'closed') return Promise.reject(new TroupeError('closed', 'client is closed'));
    if (client._unacked >= max) {
      return Promise.reject(
        new TroupeError('outbox_full', `${max} publishes already wait for their acknowledgement`),
      );
    }
    if (payload.mid === undefined) payload.mid = newMid();
    client._unacked++;
    const deadline = timeout === undefined ? null : Date.now() + timeout;
    return new Promise((resolve, reject) => {
      let done = false;
      let timer = null;
      let attempt = 0;
      const finish = (err, seq) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        client._unacked--;
        if (err) reject(err);
        else resolve(seq);
      };
      if (deadline !== null) {
        timer = setTimeout(
          () => finish(new TroupeError('timeout', `room ${this.name}: publish not acknowledged within ${timeout} ms`)),
          timeout,
        );
      }
      const send = () => {
        if (done) return;
        if (client._state === 'closed') {
          finish(new TroupeError('closed', 'client is closed'));
          return;
        }
        let ms = client.options.requestTimeout;
        if (deadline !== null) ms = Math.max(1, Math.min(ms, deadline - Date.now()));
        client._request('room.publish', payload, { timeout: ms }).then(
          (env) => finish(null, env.payload && env.payload.seq),
          (err) => {
            if (done) return;
            switch (err.code) {
              case 'disconnected': // sent, answer lost: again, queued for the next connection
              case 'timeout':
                send();
                return;
              case 'queue_full': {
                // Too many frames wait for a connection: again once one
                // is open (or the client is closed).
                const offs = ['open', 'closed'].map((ev) =>
                  client.onStatus(ev, () => {
                    for (const off of offs) off();
                    send();
                  }),
                );
                return;
              }
              case 'unavailable': // not taken now: again after a while
                setTimeout(send, backoffDelay(attempt++, client.options));
                return;
              default:
                finish(err);
            }
          },
        );
      };
      send();
    });
  }

  /**
   * Sends a request to the room's own logic (a server's
   * troupe.HandleRoom handler for type): the envelope names this room, the
   * room answers in its order, and this resolves with the reply's payload
   * or rejects with a TroupeError (not_member when not joined, the code
   * the room's logic chose, internal if it failed).
   */
  request(type, payload, { timeout } = {}) {
    return this.client._request(type, payload, { timeout, room: this.name }).then((env) => env.payload);
  }

  /**
   * Leaves the room: no more messages, no rejoin after a reconnect.
   * Resolves once the server confirms (at once when not connected: the
   * server forgot the membership with the connection).
   */
  async leave({ timeout } = {}) {
    this._want = false;
    this._recoverAt = null;
    this._endCatchUp();
    const err = new TroupeError('left', `left room ${this.name}`);
    for (const w of this._joinWaiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(err);
    }
    if (!this._joined && !this._joining) {
      this._clearMembers();
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
      this._clearMembers();
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
    const snap = { room: this.name, seq: this._lastSeq, members: this.members, count: this.count, recovered: true };
    if (this._counted) snap.presence = 'count';
    return snap;
  }

  _sendJoin(rejoin, refresh = false) {
    const payload = { room: this.name };
    if (this.meta !== undefined) payload.meta = this.meta;
    const since = rejoin && this._lastSeq !== null ? this._lastSeq : null;
    if (since !== null) {
      payload.since = since;
      // The room's incarnation: numbers from an earlier one mean nothing.
      if (this._epoch) payload.epoch = this._epoch;
    }
    const joining = { since, refresh };
    this._joining = joining;
    this.client
      ._request('room.join', payload, {
        queue: false,
        onAnswer: (env, err) => {
          if (this._joining === joining) this._joining = null;
          if (refresh) {
            // A refresh refused leaves the membership as it is.
            if (err) this._onRefresh(null, err);
            return;
          }
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
    this._endCatchUp();
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
      case 'presence.count':
        if (this._joined && p && typeof p.count === 'number') {
          // The room counts its members now: the list stops following it.
          this._counted = true;
          this._count = p.count;
          this._emitPresence({ joins: [], leaves: [] });
        }
        break;
      case 'presence.list':
        // The room lists its members again: the whole list, as at a join.
        if (this._joined) this._resetMembers(p);
        break;
      case 'room.resync':
        this._onResync(p);
        break;
      case 'room.left':
        // With a reason, the server removed this member (its room's
        // logic kept failing): not rejoined until join() is called.
        if (p && p.reason !== undefined) this._want = false;
        this._joined = false;
        this._clearMembers();
        this._endCatchUp();
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
    if (this._joining && this._joining.refresh) {
      this._onRefresh(p, null);
      return;
    }
    const since = this._joining ? this._joining.since : null;
    const rejoin = since !== null;
    this._joined = true;
    this._setMembers(p);
    const seq = typeof p.seq === 'number' ? p.seq : 0;
    if (typeof p.epoch === 'string') this._epoch = p.epoch;
    // On a resume the missed messages follow (since < seq <= p.seq), so the
    // mark stays at since; a room that restarted from a lower sequence
    // number starts over from it.
    this._lastSeq = rejoin ? Math.min(since, seq) : seq;
    const recovered = p.recovered === true;
    this._events.emit('joined', { ...p, rejoin });
    this._emitPresence({ joins: this.members, leaves: [], reset: true });
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
    const cu = this._catch;
    if (cu) {
      if (this._lastSeq !== null && p.seq > this._lastSeq + 1) {
        cu.hold(p);
        return;
      }
      this._deliver(p);
      this._drain();
      return;
    }
    this._deliver(p);
  }

  // _deliver hands p, the next message in order, to the application.
  _deliver(p) {
    this._lastSeq = p.seq;
    this._events.emit('message', p);
    const r = this._recoverAt;
    if (r && p.seq >= r.seq) {
      this._recoverAt = null;
      this._events.emit('recover', { recovered: true, since: r.since, seq: r.seq });
    }
  }

  // Resync: a server whose queue for this client overflowed with the
  // room's traffic drops it and sends room.resync {room, seq}, seq being
  // the last message it wrote before the gap. The room then catches up
  // from the history, a page at a time, while new messages keep coming:
  // those that cannot be delivered yet are held (at most MAX_HELD; beyond
  // that they are read from the history too), so that "message" still
  // sees every message once, in order, without a disconnect. Once caught
  // up, "recover" tells whether everything was recovered (false: part of
  // the gap had left the history; what follows it still comes), and the
  // member list is fetched again with a join, since presence.diffs may
  // have been dropped too.
  _onResync(p) {
    if (!this._joined || this._lastSeq === null || typeof p.seq !== 'number') return;
    let cu = this._catch;
    if (!cu) {
      cu = new CatchUp(this._lastSeq);
      this._catch = cu;
    }
    if (cu.fetching) {
      cu.again = true;
      return;
    }
    this._fetch();
  }

  // _drain delivers the held messages that are next in order.
  _drain() {
    const cu = this._catch;
    let i = 0;
    for (; i < cu.held.length; i++) {
      const m = cu.held[i];
      if (m.seq <= this._lastSeq) continue;
      if (m.seq !== this._lastSeq + 1) break;
      this._deliver(m);
    }
    cu.held.splice(0, i);
  }

  // _fetch asks for the next page of the gap: the messages after lastSeq,
  // up to the first one held.
  _fetch() {
    const cu = this._catch;
    const from = this._lastSeq + 1;
    let before = from + PAGE_SIZE;
    if (cu.held.length > 0) before = Math.min(before, cu.held[0].seq);
    cu.fetching = true;
    cu.again = false;
    this.client
      ._request(
        'room.history',
        { room: this.name, before, limit: before - from },
        { timeout: PAGE_TIMEOUT, queue: false, onAnswer: (env, err) => this._onPage(cu, from, before, env, err) },
      )
      .catch(() => {});
  }

  _onPage(cu, from, before, env, err) {
    if (this._catch !== cu) return;
    cu.fetching = false;
    if (err) {
      if (err.code === 'disconnected' || err.code === 'closed') return; // the rejoin resumes
      if (err.code === 'not_member') {
        this._catch = null;
        return;
      }
      // rate_limited, unavailable, a lost answer: ask again shortly.
      cu.timer = setTimeout(() => {
        cu.timer = null;
        if (this._catch === cu && !cu.fetching && this.client._state === 'open') this._fetch();
      }, PAGE_RETRY);
      return;
    }
    const messages = (env.payload && Array.isArray(env.payload.messages) && env.payload.messages) || [];
    let got = false;
    for (const m of messages) {
      if (!m || typeof m.seq !== 'number' || m.seq <= this._lastSeq || m.seq >= before) continue;
      if (m.seq !== this._lastSeq + 1) cu.lost = true; // the gap's start left the history
      this._deliver(m);
      got = true;
    }
    if (!got) {
      // Nothing of the page is left: skip it if more is known to follow.
      if (cu.held.length > 0) {
        cu.lost = true;
        this._lastSeq = cu.held[0].seq - 1;
      } else if (cu.high >= from) {
        cu.lost = true;
        this._lastSeq = Math.min(cu.high, before - 1);
      }
    }
    this._drain();
    const full = this._lastSeq === before - 1 && before === from + PAGE_SIZE;
    if (cu.again || full || cu.held.length > 0 || this._lastSeq < cu.high) {
      this._fetch();
      return;
    }
    // The history has nothing more: that is the room's end, unless the
    // gap's end left the history too. The room.joined of a refresh says
    // where the room is, and every message up to there reaches this client
    // before it (or a room.resync does).
    if (!cu.confirming) this._refresh(cu);
  }

  // _refresh asks for the member list and the room's seq again: a join of
  // a member answers room.joined with them and changes nothing else.
  _refresh(cu) {
    if (this._joining) {
      this._finishCatchUp(cu); // a join is on its way: it says all of that
      return;
    }
    cu.confirming = true;
    this._sendJoin(false, true);
  }

  _onRefresh(p, err) {
    // Cut off by the connection's end: the rooms' _onDisconnect, which
    // runs next, ends the catch-up, and the rejoin reports again.
    if (err && (err.code === 'disconnected' || err.code === 'closed')) return;
    if (!err) this._resetMembers(p);
    const cu = this._catch;
    if (!cu || !cu.confirming) return;
    cu.confirming = false;
    if (!err && typeof p.seq === 'number') cu.high = Math.max(cu.high, p.seq);
    if (cu.fetching) return; // the page's answer goes on from here
    this._drain();
    if (cu.again || cu.held.length > 0 || this._lastSeq < cu.high) {
      this._fetch();
      return;
    }
    this._finishCatchUp(cu);
  }

  _finishCatchUp(cu) {
    this._catch = null;
    this._events.emit('recover', { recovered: !cu.lost, since: cu.since, seq: this._lastSeq });
  }

  // _endCatchUp abandons a catch-up (the connection ended, or the room was
  // left); a gap found lost is still reported.
  _endCatchUp() {
    const cu = this._catch;
    if (!cu) return;
    this._catch = null;
    clearTimeout(cu.timer);
    if (cu.lost) this._events.emit('recover', { recovered: false, since: cu.since, seq: this._lastSeq });
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
    this._emitPresence({ joins, leaves });
  }

  // _setMembers takes the member list (and count, and mode) of a
  // room.joined or presence.list.
  _setMembers(p) {
    this._members = Array.isArray(p.members) ? p.members.map((m) => ({ ...m })) : [];
    this._counted = p.presence === 'count';
    this._count = typeof p.count === 'number' ? p.count : this._members.length;
  }

  // _resetMembers replaces the member list, and says so.
  _resetMembers(p) {
    this._setMembers(p);
    this._emitPresence({ joins: this.members, leaves: [], reset: true });
  }

  _clearMembers() {
    this._members = [];
    this._counted = false;
    this._count = 0;
  }

  _emitPresence(change) {
    this._events.emit('presence', this.members, { ...change, count: this.count, counted: this._counted });
  }
}

// Bounds of a resync's catch-up: the live messages held while the history
// is read, the messages one room.history page asks for (small enough that
// a slow link takes a page well within the server's write timeout), how
// long a page may take (an answer can be lost to the server's rate limit,
// which answers without the request's id) and the wait before asking again
// for a page that was refused.
const MAX_HELD = 1000;
const PAGE_SIZE = 200;
const PAGE_TIMEOUT = 30000;
const PAGE_RETRY = 250;

// CatchUp is a resync in progress.
class CatchUp {
  constructor(since) {
    this.since = since; // lastSeq when it began
    this.held = []; // live messages beyond lastSeq + 1, ascending
    this.high = 0; // the newest seq seen live
    this.again = false; // a room.resync came while a page was asked for
    this.fetching = false;
    this.lost = false; // part of the gap was no longer in the history
    this.confirming = false; // a refresh asks the room where it is
    this.timer = null;
  }

  hold(m) {
    this.high = Math.max(this.high, m.seq);
    const n = this.held.length;
    if (n >= MAX_HELD || (n > 0 && m.seq <= this.held[n - 1].seq)) return; // read from the history instead
    this.held.push(m);
  }
}

function sameJSON(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

// newMid returns a random UUID, the id of a publish.
function newMid() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === 'function') return c.randomUUID();
  const b = new Uint8Array(16);
  c.getRandomValues(b);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

function encode(type, payload, id, room) {
  const env = { type };
  if (id !== undefined) env.id = id;
  if (room !== undefined) env.room = room;
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

// ---------------------------------------------------------------------------
// The HTTP fallback: a WebSocket-shaped object over the server's
// Server-Sent Events stream (down) and POSTs (up), on the same URL as the
// WebSocket. GET ?sse=open opens a session whose first event, "session",
// carries its token; ?sse=<token> then names it: POST sends envelopes (one
// per line), GET reopens a dropped stream after the last event id read,
// DELETE closes. A last event "close" carries a close code as a close
// frame would. It uses the browser's EventSource where there is one, and
// otherwise reads the stream with fetch (Node.js).

/** How many bytes one POST carries at most (the server's default
 * MaxMessageSize is 64 KiB; a larger envelope goes alone). */
const POST_BYTES = 60000;

class StreamSocket {
  constructor(url, options = {}) {
    this.url = url;
    this.protocol = '';
    this.readyState = CONNECTING;
    this.binaryType = 'arraybuffer';
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
    this._base = streamURL(url);
    this._EventSource = options.EventSource === undefined ? globalThis.EventSource : options.EventSource;
    // Called as a plain function: a browser's fetch refuses any other this.
    const fetchFn = options.fetch || globalThis.fetch;
    this._fetch = (...args) => fetchFn.call(globalThis, ...args);
    this._resumeTimeout = options.resumeTimeout || 5000;
    this._readLimit = options.readLimit || DEFAULTS.readLimit;
    this._token = null;
    this._lastId = '';
    this._outbox = [];
    this._posting = false;
    this._stream = null; // {close()} of the stream being read
    this._lostAt = 0; // when the stream dropped, while reopening it
    this._retry = null;
    this._connect('open', '');
  }

  _query(token, last) {
    const u = new URL(this._base);
    u.searchParams.set('sse', token);
    if (last) u.searchParams.set('last', last);
    return u.toString();
  }

  // _connect opens the stream: a new session (token "open") or the
  // session's own after a drop.
  _connect(token, last) {
    const url = this._query(token, last);
    const handlers = {
      // The drop ends when an event is read (_event), not when a stream
      // opens: one that opens and ends at once keeps the backoff going.
      open: () => {},
      event: (type, data, id) => this._event(type, data, id),
      lost: () => this._lost(),
      gone: () => this._end(1006, 'session unknown to the server'),
      // Reopening would receive the same event again: the connection ends.
      tooBig: () => this._end(1009, `event over ${this._readLimit} characters`),
    };
    this._stream =
      typeof this._EventSource === 'function' ? eventSourceStream(this._EventSource, url, handlers) : fetchStream(this._fetch, url, handlers, this._readLimit);
  }

  _event(type, data, id) {
    if (this.readyState === 3) return;
    this._lostAt = 0;
    if (type === 'session') {
      this._token = data;
      this.readyState = OPEN;
      if (this.onopen) this.onopen({});
      return;
    }
    if (type === 'close') {
      let c = {};
      try {
        c = JSON.parse(data);
      } catch {
        // a close without its code
      }
      this._end(c.code || 1005, c.reason || '');
      return;
    }
    if (id) this._lastId = id;
    if (type === 'message' && this.onmessage) this.onmessage({ data });
  }

  // _lost reopens a dropped stream within the session, for resumeTimeout;
  // a stream that never opened, or a session the server has forgotten,
  // ends the connection (1006).
  _lost() {
    if (this.readyState === 3) return;
    if (!this._token) {
      this._end(1006, 'event stream refused');
      return;
    }
    const now = Date.now();
    if (!this._lostAt) this._lostAt = now;
    if (now - this._lostAt > this._resumeTimeout) {
      this._end(1006, 'event stream lost');
      return;
    }
    this._retry = setTimeout(() => {
      this._retry = null;
      if (this.readyState === OPEN) this._connect(this._token, this._lastId);
    }, Math.min(1000, 50 * 2 ** Math.min(5, Math.floor((now - this._lostAt) / 200))));
  }

  send(data) {
    if (this.readyState !== OPEN) throw new Error('the stream is not open');
    this._outbox.push(String(data));
    this._flush();
  }

  // _flush POSTs what waits, one POST at a time (the server keeps their
  // order only so), as many envelopes per POST as fit.
  _flush() {
    if (this._posting || this._outbox.length === 0 || this.readyState !== OPEN) return;
    let n = 0;
    let size = 0;
    while (n < this._outbox.length && (n === 0 || size + this._outbox[n].length + 1 <= POST_BYTES)) {
      size += this._outbox[n].length + 1;
      n++;
    }
    const batch = this._outbox.splice(0, n);
    this._posting = true;
    this._fetch(this._query(this._token), {
      method: 'POST',
      body: batch.join('\n'),
      headers: { 'Content-Type': 'text/plain;charset=UTF-8' },
    }).then(
      (resp) => {
        this._posting = false;
        if (resp.body && resp.body.cancel) resp.body.cancel().catch(() => {});
        if (resp.ok) this._flush();
        else this._end(1006, `POST answered ${resp.status}`);
      },
      () => {
        this._posting = false;
        this._end(1006, 'POST failed');
      },
    );
  }

  close(code = 1000, reason = '') {
    if (this.readyState >= 2) return;
    const token = this._token;
    this.readyState = 2;
    if (token) {
      this._fetch(this._query(token), { method: 'DELETE', keepalive: true }).then(
        () => this._end(code, reason),
        () => this._end(code, reason),
      );
    } else {
      this._end(code, reason);
    }
  }

  terminate() {
    if (this._token && this.readyState < 2) {
      this._fetch(this._query(this._token), { method: 'DELETE', keepalive: true }).catch(() => {});
    }
    this._end(1006, 'terminated');
  }

  _end(code, reason) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    clearTimeout(this._retry);
    if (this._stream) this._stream.close();
    this._outbox = [];
    const onclose = this.onclose;
    if (onclose) setTimeout(() => onclose({ code, reason, wasClean: code !== 1006 }), 0);
  }
}

// streamURL is the http(s) form of a ws(s) URL.
function streamURL(url) {
  const u = new URL(url, globalThis.location ? globalThis.location.href : undefined);
  if (u.protocol === 'ws:') u.protocol = 'http:';
  if (u.protocol === 'wss:') u.protocol = 'https:';
  return u.toString();
}

// eventSourceStream reads url with the browser's EventSource. Its own
// reconnect is not used (it would reopen the same URL): a drop is
// reported, and the socket reopens the session's stream itself.
function eventSourceStream(EventSource, url, h) {
  const es = new EventSource(url);
  let closed = false;
  es.onopen = () => h.open();
  es.onmessage = (ev) => h.event('message', ev.data, ev.lastEventId);
  es.addEventListener('session', (ev) => h.event('session', ev.data, ''));
  es.addEventListener('close', (ev) => h.event('close', ev.data, ''));
  es.onerror = () => {
    es.close();
    if (!closed) {
      closed = true;
      h.lost();
    }
  };
  return {
    close() {
      closed = true;
      es.close();
    },
  };
}

// fetchStream reads url with fetch, parsing the event stream itself, for
// runtimes without EventSource.
function fetchStream(fetchFn, url, h, limit) {
  const ctrl = new AbortController();
  let closed = false;
  const lost = () => {
    if (!closed) {
      closed = true;
      h.lost();
    }
  };
  // What is kept of an event not yet complete is bounded, like the
  // messages of a WebSocket.
  const tooBig = () => {
    closed = true;
    ctrl.abort();
    h.tooBig();
  };
  (async () => {
    const resp = await fetchFn(url, { headers: { Accept: 'text/event-stream' }, signal: ctrl.signal, cache: 'no-store' });
    if (!resp.ok || !resp.body) {
      if (resp.body && resp.body.cancel) resp.body.cancel().catch(() => {});
      if (resp.status === 404) {
        // The server no longer knows the session: no use trying again.
        closed = true;
        h.gone();
      } else {
        lost();
      }
      return;
    }
    h.open();
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    let type = '';
    let data = null;
    let id = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let i;
      while ((i = buf.search(/\r\n|\r|\n/)) >= 0) {
        if (buf[i] === '\r' && i + 1 === buf.length) break; // maybe a \r\n cut in two
        const line = buf.slice(0, i);
        buf = buf.slice(buf[i] === '\r' && buf[i + 1] === '\n' ? i + 2 : i + 1);
        if (line === '') {
          if (data !== null || type === 'close') h.event(type || 'message', data || '', id);
          type = '';
          data = null;
          if (closed) return;
          continue;
        }
        if (line[0] === ':') continue;
        const c = line.indexOf(':');
        const field = c < 0 ? line : line.slice(0, c);
        let v = c < 0 ? '' : line.slice(c + 1);
        if (v[0] === ' ') v = v.slice(1);
        if (field === 'event') type = v;
        else if (field === 'data') {
          data = data === null ? v : data + '\n' + v;
          if (data.length > limit) return tooBig();
        }
        else if (field === 'id') id = v;
      }
      if (buf.length > limit) return tooBig(); // a line not yet complete
    }
    lost();
  })().catch(lost);
  return {
    close() {
      closed = true;
      ctrl.abort();
    },
  };
}
