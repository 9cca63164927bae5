// The client's connection, request/reply and heartbeat, against a real
// Troupe server (see helpers.mjs).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WebSocket } from 'ws';
import { Client, TroupeError, backoffDelay } from '../troupe.js';
import { newClient, serverURL, startProxy, until, unique } from './helpers.mjs';

test('request resolves with the payload of the answer that carries its id', async (t) => {
  const client = newClient(t);
  await client.connect();
  assert.equal(client.state, 'open');
  // Many at once: each must get its own answer, not a neighbour's.
  const payloads = Array.from({ length: 25 }, (_, i) => ({ n: i, text: `hello ${i}`, nested: [i, { i }] }));
  const replies = await Promise.all(payloads.map((p) => client.request('test.echo', p)));
  assert.deepEqual(replies, payloads);
});

test('requests made before the connection opens are sent once it does', async (t) => {
  const client = newClient(t);
  assert.equal(client.state, 'idle');
  // No connect(): the request itself opens the connection.
  const reply = await client.request('test.echo', { early: true });
  assert.deepEqual(reply, { early: true });
  assert.equal(client.state, 'open');
});

test('an error envelope rejects the request with its code and message', async (t) => {
  const client = newClient(t);
  await client.connect();
  // An error that rejects a request goes to that request only.
  const stray = [];
  client.on('error', (e) => stray.push(e));
  await assert.rejects(client.request('no.such.type', {}), (err) => {
    assert.ok(err instanceof TroupeError, `${err} is a TroupeError`);
    assert.equal(err.code, 'unknown_type');
    assert.match(err.message, /no\.such\.type/);
    return true;
  });
  await assert.rejects(client.request('test.fail', {}), { name: 'TroupeError', code: 'teapot', message: 'refused on purpose' });
  // The room protocol's own refusal: publishing to a room not joined.
  await assert.rejects(client.request('room.publish', { room: unique('nobody'), body: 'x' }), { code: 'not_member' });
  // The connection is still usable.
  assert.deepEqual(await client.request('test.echo', 'still here'), 'still here');
  assert.deepEqual(stray, [], 'errors that rejected requests also reached on("error")');
});

test('a request times out, and its late answer is not taken for the next request', async (t) => {
  const client = newClient(t);
  await client.connect();
  await assert.rejects(client.request('test.delay', { ms: 800 }, { timeout: 100 }), (err) => {
    assert.equal(err.code, 'timeout');
    return true;
  });
  // The server answers test.delay late, then this (it handles one
  // session's messages in order): the echo must get the echo.
  const late = until((fn) => client.on('reply', fn), (p) => p && p.ms === 800, 'the late answer');
  const reply = await client.request('test.echo', { after: 'timeout' });
  assert.deepEqual(reply, { after: 'timeout' });
  await late;
});

test('the built-in ping is answered with pong, the same id and payload', async (t) => {
  const client = newClient(t);
  await client.connect();
  const pong = until((fn) => client.on('pong', fn), () => true, 'pong');
  assert.deepEqual(await client.request('ping', { nonce: 42 }), { nonce: 42 });
  const [payload, env] = await pong;
  assert.deepEqual(payload, { nonce: 42 });
  assert.equal(typeof env.id, 'number');
});

test('ndjson: the client offers it, the server selects it, and packed frames are split', async (t) => {
  // Count the frames a client receives, to tell how the server packed them.
  let frames = 0;
  class Counting extends WebSocket {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', () => frames++);
    }
  }
  const client = newClient(t, { WebSocket: Counting });
  await client.connect();
  assert.equal(client.protocol, 'ndjson');

  const first = until((fn) => client.on('test.first', fn), () => true, 'test.first');
  const second = until((fn) => client.on('test.second', fn), () => true, 'test.second');
  await client.request('test.pair', {});
  assert.deepEqual((await first)[0], 1);
  assert.deepEqual((await second)[0], 2);

  const items = [];
  client.on('test.item', (i) => items.push(i));
  const n = 500;
  frames = 0;
  await client.request('test.burst', { n });
  assert.deepEqual(items, Array.from({ length: n }, (_, i) => i));
  t.diagnostic(`${n + 1} envelopes arrived in ${frames} frames`);
});

test('without ndjson every frame is one envelope and a burst arrives whole', async (t) => {
  const client = newClient(t, { protocols: [] });
  await client.connect();
  assert.equal(client.protocol, '');
  const items = [];
  client.on('test.item', (i) => items.push(i));
  await client.request('test.burst', { n: 300 });
  assert.deepEqual(items, Array.from({ length: 300 }, (_, i) => i));
});

test('the client answers the server\'s requests through handle()', async (t) => {
  const client = newClient(t);
  await client.connect();
  client.handle('test.question', (p) => ({ doubled: p.x * 2 }));
  client.handle('test.refuse', () => {
    throw new TroupeError('nope', 'will not answer');
  });
  const asked = (fn) => client.on('test.asked', fn);

  let result = until(asked, () => true, 'test.asked');
  await client.request('test.ask', { type: 'test.question', payload: { x: 21 } });
  assert.deepEqual((await result)[0], { payload: { doubled: 42 } });

  result = until(asked, () => true, 'test.asked');
  await client.request('test.ask', { type: 'test.refuse', payload: {} });
  assert.deepEqual((await result)[0], { code: 'nope', message: 'will not answer' });

  result = until(asked, () => true, 'test.asked');
  await client.request('test.ask', { type: 'test.unhandled', payload: {} });
  assert.equal((await result)[0].code, 'unknown_type');
});

test('after the server drops the connection the client reconnects by itself', async (t) => {
  const client = newClient(t);
  await client.connect();
  const events = [];
  for (const e of ['disconnected', 'reconnecting', 'open']) client.onStatus(e, (info) => events.push([e, info]));
  const reopened = until((fn) => client.onStatus('open', fn), () => true, 'reconnection');
  // The drop cuts the connection before any answer: the request fails
  // with "disconnected", not with a timeout.
  await assert.rejects(client.request('test.drop', {}), { code: 'disconnected' });
  const [info] = await reopened;
  assert.equal(info.reconnected, true);
  assert.deepEqual(
    events.map(([e]) => e),
    ['disconnected', 'reconnecting', 'open'],
  );
  assert.equal(events[0][1].code, 1006);
  assert.deepEqual(await client.request('test.echo', 'again'), 'again');
});

test('heartbeat: a healthy connection stays up; a dead path fails the pong deadline and the client reconnects', async (t) => {
  const proxy = await startProxy(t);
  const client = newClient(t, { pingInterval: 50, pongTimeout: 1000 }, proxy.url);
  await client.connect();
  const lost = [];
  client.onStatus('disconnected', (info) => lost.push(info));

  // Ten pongs in a row: the heartbeat does not take a working connection
  // for a dead one.
  let pongs = 0;
  await until((fn) => client.on('pong', fn), () => ++pongs >= 10, '10 pongs');
  assert.deepEqual(lost, []);

  // Now nothing gets through, but no socket is closed either: only the
  // missing pong can tell.
  const reopened = until((fn) => client.onStatus('open', fn), () => true, 'reconnection');
  proxy.freeze();
  await reopened;
  assert.equal(lost.length, 1);
  assert.equal(lost[0].reason, 'pong timeout');
  assert.deepEqual(await client.request('test.echo', 'through a new connection'), 'through a new connection');
});

test('close() ends the client: no reconnect, pending requests reject with "closed"', async (t) => {
  const client = newClient(t);
  await client.connect();
  const pending = assert.rejects(client.request('test.delay', { ms: 300 }), { code: 'closed' });
  await client.close();
  await pending;
  assert.equal(client.state, 'closed');
  assert.equal(client.socket, null);
  await assert.rejects(client.request('test.echo', 1), { code: 'closed' });
  await assert.rejects(client.connect(), { code: 'closed' });
});

test('the client refuses to start without a WebSocket implementation', () => {
  // Node 22 and later have a global WebSocket: hide it for this check.
  const saved = Object.getOwnPropertyDescriptor(globalThis, 'WebSocket');
  if (saved) delete globalThis.WebSocket;
  try {
    assert.equal(globalThis.WebSocket, undefined);
    assert.throws(() => new Client(serverURL()), /WebSocket/);
    assert.ok(new Client(serverURL(), { WebSocket }) instanceof Client, 'a WebSocket in the options is enough');
  } finally {
    if (saved) Object.defineProperty(globalThis, 'WebSocket', saved);
  }
});

test('backoffDelay grows exponentially up to maxDelay and jitter only shortens it', () => {
  const opts = { minDelay: 100, maxDelay: 1000, factor: 2, jitter: 0.5 };
  assert.deepEqual(
    [0, 1, 2, 3, 4, 10].map((a) => backoffDelay(a, opts, () => 0)),
    [100, 200, 400, 800, 1000, 1000],
  );
  assert.deepEqual(
    [0, 1, 2, 3, 4].map((a) => backoffDelay(a, opts, () => 1)),
    [50, 100, 200, 400, 500],
  );
  for (let a = 0; a < 8; a++) {
    const d = backoffDelay(a, opts);
    const base = Math.min(1000, 100 * 2 ** a);
    assert.ok(d > base / 2 - 1e-9 && d <= base, `attempt ${a}: ${d} in (${base / 2}, ${base}]`);
  }
});
