// The HTTP fallback through the client: behind a proxy that refuses
// WebSocket upgrades (see tests/refusing_proxy_test.go) the client moves to
// Server-Sent Events and POST by itself, keeps its rooms gap-free across a
// cut stream and across the move back to a WebSocket.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { collect, newClient, range, serverURL, unique, until } from './helpers.mjs';

const refusing = () => serverURL('TROUPE_REFUSING_URL');
const control = (path) => fetch(refusing().replace(/^ws/, 'http') + path).then((r) => r.arrayBuffer());

test('behind a proxy that refuses WebSocket upgrades, the client falls back and works the same', async (t) => {
  const client = newClient(t, { upgradeInterval: -1 }, refusing());
  const opened = until((fn) => client.onStatus('open', fn), () => true, 'open');
  await client.connect();
  const [ev] = await opened;
  assert.equal(ev.transport, 'sse');
  assert.equal(client.transport, 'sse');
  assert.deepEqual(await client.request('test.echo', { n: 1 }), { n: 1 });
  await assert.rejects(client.request('test.fail', {}), (err) => err.code === 'teapot');

  // The server asks, the client answers: request/reply both ways.
  client.handle('test.question', (p) => ({ answer: p.q * 2 }));
  const asked = until((fn) => client.on('test.asked', fn), () => true, 'test.asked');
  client.send('test.ask', { type: 'test.question', payload: { q: 21 } });
  const [res] = await asked;
  assert.deepEqual(res.payload, { answer: 42 });
});

test('a stream cut mid-conversation is reopened in the same session: every message once, in order', async (t) => {
  const name = unique('sse-cut');
  const ann = newClient(t, { upgradeInterval: -1 }, refusing());
  let disconnects = 0;
  ann.onStatus('disconnected', () => disconnects++);
  const a = ann.room(name, { meta: { name: 'ann' } });
  const b = newClient(t).room(name, { meta: { name: 'bob' } });
  await a.join();
  await b.join();
  const got = collect(a);
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < 5; i++) await b.publish({ n: round * 10 + i });
    await control('/__cut');
    for (let i = 5; i < 10; i++) await b.publish({ n: round * 10 + i });
    await a.publish({ n: round * 10 + 10, from: 'ann' });
  }
  await got.wait(33);
  assert.deepEqual(
    got.messages.map((m) => m.seq),
    range(1, 33),
  );
  assert.equal(disconnects, 0, 'a reopened stream is not a reconnect');
});

test('a stream that opens and ends at once is reopened with backoff, and given up after resumeTimeout', async (t) => {
  // Every reopen of the session's stream answers 200 and ends at once.
  let reopens = 0;
  const fetchFn = (url, init) => {
    const sse = new URL(url).searchParams.get('sse');
    if ((init && init.method) || sse === 'open') return fetch(url, init);
    reopens++;
    return Promise.resolve(new Response('', { status: 200, headers: { 'Content-Type': 'text/event-stream' } }));
  };
  const ann = newClient(t, { upgradeInterval: -1, EventSource: null, fetch: fetchFn, resumeTimeout: 1000 }, refusing());
  await ann.connect();
  assert.equal(ann.transport, 'sse');
  const lost = until((fn) => ann.onStatus('disconnected', fn), () => true, 'the disconnect after resumeTimeout');
  await control('/__cut');
  await lost;
  // Waits of 50, 100, 200, 400 ms fit in the second; at a fixed 50 ms
  // there would be twenty.
  assert.ok(reopens <= 8, `${reopens} reopens in resumeTimeout`);
});

test('once upgrades pass again, the client moves back to a WebSocket and its rooms resume with since', async (t) => {
  const name = unique('sse-up');
  // This test alone lets upgrades through the shared proxy; the others
  // in this file are done with it by then or set upgradeInterval -1.
  t.after(() => control('/__refuse'));
  const ann = newClient(t, { upgradeInterval: 200 }, refusing());
  const a = ann.room(name);
  const b = newClient(t).room(name);
  await a.join();
  await b.join();
  const got = collect(a);
  assert.equal(ann.transport, 'sse');
  for (let i = 0; i < 5; i++) await b.publish(i);
  await got.wait(5);
  const moved = until((fn) => ann.onStatus('open', fn), (ev) => ev.transport === 'websocket', 'the move to websocket');
  await control('/__allow');
  // Messages keep coming while the client moves.
  let n = 5;
  const pump = (async () => {
    while (ann.transport !== 'websocket' || ann.state !== 'open') {
      await b.publish(n++);
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  await moved;
  await pump;
  for (let i = 0; i < 5; i++) await b.publish(n++);
  await got.wait(n);
  assert.deepEqual(
    got.messages.map((m) => m.seq),
    range(1, n),
  );
  assert.deepEqual(
    got.messages.map((m) => m.body),
    range(0, n - 1),
  );
});

test('with reconnect off, the client still moves back to a WebSocket and stays open', async (t) => {
  const name = unique('sse-up-noreconnect');
  t.after(() => control('/__refuse'));
  const ann = newClient(t, { upgradeInterval: 200, reconnect: false }, refusing());
  const closed = [];
  ann.onStatus('closed', (ev) => closed.push(ev));
  const a = ann.room(name);
  const b = newClient(t).room(name);
  await a.join();
  await b.join();
  const got = collect(a);
  assert.equal(ann.transport, 'sse');
  const moved = until((fn) => ann.onStatus('open', fn), (ev) => ev.transport === 'websocket', 'the move to websocket');
  await control('/__allow');
  await moved;
  assert.equal(ann.state, 'open');
  assert.deepEqual(closed, []);
  await b.publish('after the move');
  await got.wait(1);
  assert.deepEqual(
    got.messages.map((m) => m.body),
    ['after the move'],
  );
});

test('close() ends an upgrade probe still in flight', async (t) => {
  // The first WebSocket is refused (the client falls back); the probes
  // after it hang, as behind a proxy that swallows upgrades.
  const sockets = [];
  class Hanging {
    constructor() {
      this.protocol = '';
      this.readyState = 0;
      this.ended = false;
      sockets.push(this);
      if (sockets.length === 1) setImmediate(() => this.onclose && this.onclose({ code: 1006, reason: '' }));
    }
    send() {}
    close() {
      this.ended = true;
    }
    terminate() {
      this.ended = true;
    }
  }
  const client = newClient(t, { WebSocket: Hanging, upgradeInterval: 20, fallbackTimeout: 60000 }, refusing());
  await client.connect();
  assert.equal(client.transport, 'sse');
  while (sockets.length < 2) await new Promise((r) => setTimeout(r, 10));
  client.close();
  assert.ok(sockets[1].ended, 'the probe is closed with the client');
});

test('an event over readLimit ends the fallback connection with 1009, without reopening the stream', async (t) => {
  let gets = 0;
  const fetchFn = (url, init) => {
    if (init && init.method) return Promise.resolve(new Response(null, { status: 204 }));
    gets++;
    const body = 'event: session\ndata: tok\n\ndata: ' + 'x'.repeat(1000) + '\n\n';
    return Promise.resolve(new Response(body, { status: 200, headers: { 'Content-Type': 'text/event-stream' } }));
  };
  const ann = newClient(t, { upgradeInterval: -1, EventSource: null, fetch: fetchFn, readLimit: 100, reconnect: false }, refusing());
  const lost = until((fn) => ann.onStatus('disconnected', fn), () => true, 'the disconnect');
  ann.connect().catch(() => {});
  const [ev] = await lost;
  assert.equal(ev.code, 1009);
  assert.equal(gets, 1, 'the stream is not reopened');
});
