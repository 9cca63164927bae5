// Resync instead of cut-off: a member too slow for its room is sent
// room.resync instead of being closed, and its room catches up from the
// history by itself (see helpers.mjs for the servers).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Client } from '../troupe.js';
import { collect, newClient, range, serverURL, startThrottledProxy, unique, WAIT } from './helpers.mjs';

test('a member reading 10 KB/s in a room of 2,000 messages a second is resynced, not cut off, and gets every message once, in order', async (t) => {
  const url = serverURL('TROUPE_RESYNC_URL');
  const proxy = await startThrottledProxy(t, url, 10 * 1024);
  const name = unique('resync');
  const slow = newClient(t, { pingInterval: 0 }, proxy.url);
  const pub = newClient(t, {}, url);
  let disconnects = 0;
  slow.onStatus('disconnected', () => disconnects++);
  let resyncs = 0;
  slow.on('room.resync', () => resyncs++);
  const slowRoom = slow.room(name);
  const recovers = [];
  slowRoom.on('recover', (r) => recovers.push(r));
  const slowGot = collect(slowRoom);
  const pubRoom = pub.room(name);
  const pubGot = collect(pubRoom);
  await slowRoom.join();
  await pubRoom.join();

  // 2,000 a second for two seconds, not acknowledged: the publisher waits
  // on nothing.
  const total = 4000;
  for (let sent = 0; sent < total; ) {
    await new Promise((resolve) => setTimeout(resolve, 10));
    for (let i = 0; i < 20; i++) pub.send('room.publish', { room: name, body: sent++ });
  }
  await pubGot.wait(total);
  assert.deepEqual(
    pubGot.messages.map((m) => m.seq),
    range(1, total),
  );
  const whileSlow = slowGot.messages.length;
  proxy.unthrottle();
  await slowGot.wait(total);
  // The last recover comes right after the last message (the refresh that
  // confirms the room's end answers at once).
  const deadline = Date.now() + WAIT;
  while (!recovers.some((r) => r.seq === total) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 10));
  }

  assert.deepEqual(
    slowGot.messages.map((m) => m.seq),
    range(1, total),
  );
  assert.deepEqual(
    slowGot.messages.map((m) => m.body),
    range(0, total - 1),
  );
  assert.equal(disconnects, 0, 'the slow member was disconnected');
  assert.ok(resyncs >= 1, `no room.resync reached the slow member (it got ${whileSlow} messages while slow)`);
  assert.ok(recovers.length >= 1 && recovers.every((r) => r.recovered), `recover events ${JSON.stringify(recovers)}`);
  assert.equal(recovers.at(-1).seq, total);
  assert.equal(slowRoom.members.length, 2, 'the member list after the refresh');
});

test('a gap that left the history is reported as not recovered, and what follows it comes once, in order', async (t) => {
  // A scripted server: this checks the catch-up's bookkeeping alone.
  const sockets = [];
  class FakeSocket {
    constructor() {
      this.readyState = 0;
      this.protocol = 'ndjson';
      this.sent = [];
      sockets.push(this);
      queueMicrotask(() => {
        this.readyState = 1;
        this.onopen();
      });
    }
    send(data) {
      this.sent.push(JSON.parse(data));
    }
    close(code, reason) {
      this.readyState = 3;
      queueMicrotask(() => this.onclose({ code, reason }));
    }
    push(...envs) {
      this.onmessage({ data: envs.map((e) => JSON.stringify(e)).join('\n') });
    }
    last(type) {
      return this.sent.filter((f) => f.type === type).at(-1);
    }
  }
  const client = new Client('ws://scripted.invalid/ws', { WebSocket: FakeSocket, pingInterval: 0 });
  t.after(() => client.close());
  const room = client.room('r');
  const joined = room.join();
  await client.connect();
  const ws = sockets[0];
  const seen = [];
  const recovers = [];
  const lists = [];
  room.on('message', (m) => seen.push(m.seq));
  room.on('recover', (r) => recovers.push(r));
  room.on('presence', (members) => lists.push(members.map((m) => m.id)));
  const msg = (seq) => ({ type: 'room.message', payload: { room: 'r', seq, from: 'x', body: seq } });
  ws.push({ type: 'room.joined', id: ws.last('room.join').id, payload: { room: 'r', seq: 3, members: [{ id: 'a' }], recovered: false } });
  await joined;
  ws.push(msg(4), { type: 'room.resync', payload: { room: 'r', seq: 4 } }, msg(9), msg(10));
  // The gap is asked for from the history at once; what comes meanwhile
  // is held.
  const page = ws.last('room.history');
  assert.deepEqual(page.payload, { room: 'r', before: 205, limit: 200 });
  assert.deepEqual(seen, [4]);
  // 5 and 6 have left the history.
  ws.push({ type: 'room.history', id: page.id, payload: { room: 'r', messages: [msg(7).payload, msg(8).payload] } });
  assert.deepEqual(seen, [4, 7, 8, 9, 10]);
  // Then the room's end is confirmed by a join that refreshes the members;
  // it says 12, so 11 and 12 are asked for.
  const refresh = ws.last('room.join');
  assert.equal(refresh.payload.since, undefined);
  ws.push({ type: 'room.joined', id: refresh.id, payload: { room: 'r', seq: 12, members: [{ id: 'a' }, { id: 'b' }], recovered: false } });
  assert.deepEqual(lists.at(-1), ['a', 'b']);
  assert.equal(recovers.length, 0, 'recover before the catch-up ended');
  const next = ws.last('room.history');
  assert.deepEqual(next.payload, { room: 'r', before: 211, limit: 200 });
  ws.push(msg(11), { type: 'room.history', id: next.id, payload: { room: 'r', messages: [msg(11).payload, msg(12).payload] } });
  assert.deepEqual(seen, [4, 7, 8, 9, 10, 11, 12]);
  const confirm = ws.last('room.join');
  assert.notEqual(confirm.id, refresh.id);
  ws.push({ type: 'room.joined', id: confirm.id, payload: { room: 'r', seq: 12, members: [{ id: 'a' }, { id: 'b' }], recovered: false } });
  assert.deepEqual(recovers, [{ recovered: false, since: 4, seq: 12 }]);
  ws.push(msg(13));
  assert.deepEqual(seen, [4, 7, 8, 9, 10, 11, 12, 13]);
  assert.equal(room.lastSeq, 13);
  await client.close();
});

test('on a slow link a pong late behind other frames does not drop the connection; silence does', async (t) => {
  const sockets = [];
  class FakeSocket {
    constructor() {
      this.readyState = 0;
      this.protocol = '';
      sockets.push(this);
      queueMicrotask(() => {
        this.readyState = 1;
        this.onopen();
      });
    }
    send() {}
    close(code, reason) {
      this.readyState = 3;
      queueMicrotask(() => this.onclose && this.onclose({ code, reason }));
    }
    terminate() {
      this.readyState = 3;
    }
  }
  const pongTimeout = 100;
  const client = new Client('ws://scripted.invalid/ws', { WebSocket: FakeSocket, pingInterval: 20, pongTimeout, minDelay: 10_000 });
  t.after(() => client.close());
  const lost = [];
  client.onStatus('disconnected', (e) => lost.push(e));
  await client.connect();
  const ws = sockets[0];
  // Frames for five pong timeouts, and no pong.
  const until = Date.now() + 5 * pongTimeout;
  while (Date.now() < until) {
    ws.onmessage({ data: JSON.stringify({ type: 'tick', payload: {} }) });
    await new Promise((resolve) => setTimeout(resolve, pongTimeout / 5));
  }
  assert.deepEqual(lost, [], 'dropped while frames kept arriving');
  await new Promise((resolve) => setTimeout(resolve, 3 * pongTimeout));
  assert.equal(lost.length, 1, 'not dropped once the server went silent');
  assert.match(lost[0].reason, /pong timeout/);
});

// A scripted server: the test reads what the client sent and answers.
class ScriptedSocket {
  static opened = [];
  constructor() {
    this.protocol = '';
    this.readyState = 0;
    this.sent = [];
    this._wake = null;
    ScriptedSocket.opened.push(this);
    setImmediate(() => {
      this.readyState = 1;
      if (this.onopen) this.onopen({});
    });
  }
  send(data) {
    this.sent.push(JSON.parse(data));
    if (this._wake) this._wake();
  }
  close() {
    this.drop(1000);
  }
  drop(code = 1006) {
    if (this.readyState === 3) return;
    this.readyState = 3;
    if (this.onclose) this.onclose({ code, reason: '' });
  }
  deliver(env) {
    this.onmessage({ data: JSON.stringify(env) });
  }
  async expect(type) {
    const deadline = Date.now() + WAIT;
    for (;;) {
      const i = this.sent.findIndex((e) => e.type === type);
      if (i >= 0) return this.sent.splice(i, 1)[0];
      if (Date.now() > deadline) throw new Error(`the client sent no ${type}`);
      await new Promise((r) => {
        this._wake = r;
        setTimeout(r, 50);
      });
    }
  }
}

test('a catch-up whose closing join is cut off by a disconnect reports nothing: the rejoin reports, once', async (t) => {
  const client = new Client('ws://127.0.0.1:1/', { WebSocket: ScriptedSocket, fallback: false, pingInterval: 0, minDelay: 1, maxDelay: 10 });
  t.after(() => client.close());
  const room = client.room('r');
  const recovers = [];
  room.on('recover', (ev) => recovers.push(ev));
  const joining = room.join();
  await new Promise((r) => setImmediate(r));
  let ws = ScriptedSocket.opened.at(-1);
  const join = await ws.expect('room.join');
  ws.deliver({ type: 'room.joined', id: join.id, payload: { room: 'r', seq: 0, epoch: 'e1', members: [] } });
  await joining;
  ws.deliver({ type: 'room.resync', payload: { room: 'r', seq: 0 } });
  const page = await ws.expect('room.history');
  ws.deliver({ type: 'reply', id: page.id, payload: { messages: [] } });
  await ws.expect('room.join');
  const before = ScriptedSocket.opened.length;
  ws.drop();
  while (ScriptedSocket.opened.length === before) await new Promise((r) => setTimeout(r, 5));
  ws = ScriptedSocket.opened.at(-1);
  const rejoin = await ws.expect('room.join');
  ws.deliver({ type: 'room.joined', id: rejoin.id, payload: { room: 'r', seq: 0, epoch: 'e1', members: [], recovered: false } });
  assert.deepEqual(
    recovers.map((ev) => ev.recovered),
    [false],
    'only the rejoin reports',
  );
});
