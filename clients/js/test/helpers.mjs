// Shared helpers of the client's tests. The tests talk to real Troupe
// servers that `go test -run Node ./tests/` starts on 127.0.0.1 and names in
// environment variables.

import net from 'node:net';
import { WebSocket } from 'ws';
import { Client } from '../troupe.js';

/** Bounds every wait for something that should happen; only a hang reaches it. */
export const WAIT = 10000;

/** The URL of a test server, from the environment the Go test sets. */
export function serverURL(name = 'TROUPE_URL') {
  const url = process.env[name];
  if (!url) {
    throw new Error(
      `${name} is not set: these tests run against servers that "go test -run Node ./tests/" starts (scripts/test.sh runs everything)`,
    );
  }
  return url;
}

let counter = 0;

/** A name no other test (or test file, or earlier run) uses. */
export function unique(prefix) {
  counter++;
  return `${prefix}-${process.pid}-${counter}`;
}

/**
 * A Client with the ws package as its WebSocket and quick reconnects,
 * closed when the test ends.
 */
export function newClient(t, options = {}, url = serverURL()) {
  const client = new Client(url, { WebSocket, minDelay: 20, maxDelay: 200, ...options });
  t.after(() => client.close());
  return client;
}

/**
 * Resolves with the arguments of the first call to the listener that
 * subscribe(listener) installs for which pred is true; rejects after WAIT.
 * subscribe returns the function that unsubscribes.
 */
export function until(subscribe, pred = () => true, what = 'an event') {
  return new Promise((resolve, reject) => {
    let off = null;
    let done = false;
    const timer = setTimeout(() => {
      done = true;
      if (off) off();
      reject(new Error(`timed out after ${WAIT} ms waiting for ${what}`));
    }, WAIT);
    off = subscribe((...args) => {
      if (done || !pred(...args)) return;
      done = true;
      clearTimeout(timer);
      off();
      resolve(args);
    });
  });
}

/**
 * Collects a room's messages. wait(n) resolves once n have arrived; seqs
 * and bodies are in arrival order.
 */
export function collect(room) {
  const messages = [];
  const waiters = [];
  room.on('message', (m) => {
    messages.push(m);
    for (const w of [...waiters]) {
      if (messages.length >= w.n) {
        waiters.splice(waiters.indexOf(w), 1);
        clearTimeout(w.timer);
        w.resolve(messages);
      }
    }
  });
  return {
    messages,
    wait(n, what = `${n} messages in ${room.name}`) {
      if (messages.length >= n) return Promise.resolve(messages);
      return new Promise((resolve, reject) => {
        const w = { n, resolve, timer: null };
        w.timer = setTimeout(() => {
          waiters.splice(waiters.indexOf(w), 1);
          reject(new Error(`timed out waiting for ${what}: got ${messages.length} (seqs ${messages.map((m) => m.seq)})`));
        }, WAIT);
        waiters.push(w);
      });
    },
  };
}

/** The seqs from first to last, for comparing with a received sequence. */
export function range(first, last) {
  const out = [];
  for (let s = first; s <= last; s++) out.push(s);
  return out;
}

/**
 * A ws WebSocket that records the text frames it sends, so that a test can
 * check what went on the wire (every instance: a client makes a new one per
 * connection).
 */
export function recordingWebSocket() {
  const sent = [];
  class Recording extends WebSocket {
    send(data, ...rest) {
      sent.push(JSON.parse(String(data)));
      return super.send(data, ...rest);
    }
  }
  return { WebSocket: Recording, sent };
}

/**
 * A TCP proxy on 127.0.0.1 in front of a server: what a test puts between
 * client and server to break the path the way networks do.
 *   cut()     destroys every connection (the client sees 1006);
 *   freeze()  stops forwarding on every connection, both ways, leaving the
 *             sockets open (a dead path that looks alive);
 *   hold()    accepts new connections but forwards nothing until release().
 */
export async function startProxy(t, target = serverURL()) {
  const u = new URL(target);
  const port = Number(u.port);
  const pairs = new Set();
  let held = [];
  let holding = false;

  const link = (down) => {
    const up = net.connect(port, u.hostname);
    const pair = { down, up };
    pairs.add(pair);
    const end = () => {
      pairs.delete(pair);
      down.destroy();
      up.destroy();
    };
    for (const s of [down, up]) {
      s.on('error', end);
      s.on('close', end);
    }
    down.pipe(up);
    up.pipe(down);
    down.resume();
  };

  const server = net.createServer((down) => {
    down.on('error', () => down.destroy());
    if (holding) {
      down.pause();
      held.push(down);
      return;
    }
    link(down);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const proxy = {
    url: `ws://127.0.0.1:${server.address().port}${u.pathname}${u.search}`,
    get connections() {
      return pairs.size;
    },
    cut() {
      for (const { down, up } of [...pairs]) {
        down.destroy();
        up.destroy();
      }
      pairs.clear();
    },
    freeze() {
      for (const { down, up } of pairs) {
        down.unpipe(up);
        up.unpipe(down);
        down.pause();
        up.pause();
      }
    },
    hold() {
      holding = true;
    },
    release() {
      holding = false;
      const waiting = held;
      held = [];
      for (const down of waiting) if (!down.destroyed) link(down);
    },
    close() {
      proxy.cut();
      for (const down of held) down.destroy();
      held = [];
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
  t.after(() => proxy.close());
  return proxy;
}

/**
 * A TCP proxy on 127.0.0.1 that forwards what the server sends at most
 * `rate` bytes a second, in 1 KiB slices, reading from the server only as
 * fast as it forwards: a client on a slow link. unthrottle() lifts the
 * limit (the link recovers).
 */
export async function startThrottledProxy(t, target, rate) {
  const u = new URL(target);
  const sockets = new Set();
  let limit = rate;
  const server = net.createServer((down) => {
    const up = net.connect(Number(u.port), u.hostname);
    sockets.add(down).add(up);
    const end = () => {
      down.destroy();
      up.destroy();
    };
    for (const s of [down, up]) {
      s.on('error', end);
      s.on('close', end);
    }
    down.pipe(up);
    // Server to client: pause the server's side while a chunk drips out.
    up.on('data', (chunk) => {
      if (!limit) {
        down.write(chunk);
        return;
      }
      up.pause();
      let off = 0;
      const drip = () => {
        if (down.destroyed) return;
        const n = limit ? Math.min(1024, chunk.length - off) : chunk.length - off;
        down.write(chunk.subarray(off, off + n));
        off += n;
        if (off >= chunk.length) {
          up.resume();
          return;
        }
        setTimeout(drip, limit ? (n / limit) * 1000 : 0);
      };
      drip();
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const proxy = {
    url: `ws://127.0.0.1:${server.address().port}${u.pathname}${u.search}`,
    unthrottle() {
      limit = 0;
    },
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
  t.after(() => proxy.close());
  return proxy;
}
