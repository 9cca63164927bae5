// Plain clients of the npm package ws, without Troupe's client: what any
// non-Go program sees of the wire protocol. They join a room, publish and
// receive through a real Troupe server (see helpers.mjs).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WebSocket } from 'ws';
import { WAIT, serverURL, unique } from './helpers.mjs';

// A ws connection that keeps every envelope it receives, so that a test
// can wait for the next one of a kind.
class Peer {
  static async open(t, protocols = []) {
    const ws = new WebSocket(serverURL(), protocols);
    const peer = new Peer(ws);
    t.after(() => peer.close());
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    return peer;
  }

  constructor(ws) {
    this.ws = ws;
    this.inbox = [];
    this.waiters = [];
    this.closed = new Promise((resolve) => ws.once('close', (code) => resolve(code)));
    ws.on('message', (data, isBinary) => {
      assert.equal(isBinary, false, 'the server sends text frames');
      const text = data.toString();
      // Under the ndjson subprotocol one frame may carry several
      // envelopes, one a line.
      const lines = ws.protocol === 'ndjson' ? text.split('\n').filter((l) => l) : [text];
      for (const line of lines) this.inbox.push(JSON.parse(line));
      this.check();
    });
  }

  send(env) {
    this.ws.send(JSON.stringify(env));
  }

  check() {
    for (const w of [...this.waiters]) {
      const i = this.inbox.findIndex(w.pred);
      if (i >= 0) {
        const [env] = this.inbox.splice(i, 1);
        this.waiters.splice(this.waiters.indexOf(w), 1);
        clearTimeout(w.timer);
        w.resolve(env);
      }
    }
  }

  // next resolves with (and removes) the first envelope, received or to
  // come, of the given type that matches pred.
  next(type, pred = () => true) {
    return new Promise((resolve, reject) => {
      const w = { pred: (e) => e.type === type && pred(e), resolve, timer: null };
      w.timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        reject(new Error(`no ${type} within ${WAIT} ms; inbox: ${JSON.stringify(this.inbox).slice(0, 500)}`));
      }, WAIT);
      this.waiters.push(w);
      this.check();
    });
  }

  async close() {
    if (this.ws.readyState === WebSocket.OPEN || this.ws.readyState === WebSocket.CONNECTING) this.ws.close(1000);
    await this.closed;
  }
}

test('plain ws clients join a room, publish and receive through the server', async (t) => {
  const room = unique('ws');
  const ann = await Peer.open(t);
  const bob = await Peer.open(t, ['ndjson']);
  assert.equal(bob.ws.protocol, 'ndjson', 'the server selects the offered ndjson subprotocol');
  assert.equal(ann.ws.protocol, '');

  ann.send({ type: 'room.join', id: 'j1', payload: { room, meta: { name: 'ann' } } });
  const annJoined = await ann.next('room.joined');
  assert.equal(annJoined.id, 'j1');
  assert.equal(annJoined.payload.room, room);
  assert.equal(annJoined.payload.seq, 0);
  assert.equal(annJoined.payload.recovered, false);
  assert.equal(annJoined.payload.members.length, 1);
  const annID = annJoined.payload.members[0].id;
  assert.equal(typeof annID, 'string');
  assert.deepEqual(annJoined.payload.members[0].meta, { name: 'ann' });

  bob.send({ type: 'room.join', id: 7, payload: { room, meta: { name: 'bob' } } });
  const bobJoined = await bob.next('room.joined');
  assert.equal(bobJoined.id, 7, 'a numeric id comes back as a number');
  const members = bobJoined.payload.members;
  assert.deepEqual(members.map((m) => m.meta.name), ['ann', 'bob']);
  assert.equal(members[0].id, annID);
  const bobID = members[1].id;

  // Ann hears of Bob.
  const diff = await ann.next('presence.diff', (e) => e.payload.joins.length > 0);
  assert.deepEqual(diff.payload, { room, joins: [{ id: bobID, meta: { name: 'bob' } }], leaves: [] });

  // Ann publishes; both get the message, Ann also the acknowledgement.
  ann.send({ type: 'room.publish', id: 'p1', payload: { room, body: { text: 'hello', n: [1, 2] } } });
  const published = await ann.next('room.published');
  assert.deepEqual(published, { type: 'room.published', id: 'p1', payload: { room, seq: 1 } });
  const expected = { room, seq: 1, from: annID, body: { text: 'hello', n: [1, 2] } };
  assert.deepEqual((await ann.next('room.message')).payload, expected);
  assert.deepEqual((await bob.next('room.message')).payload, expected);

  // A publish without an id is not acknowledged, but delivered.
  bob.send({ type: 'room.publish', payload: { room, body: 'hi ann' } });
  const second = { room, seq: 2, from: bobID, body: 'hi ann' };
  assert.deepEqual((await ann.next('room.message')).payload, second);
  assert.deepEqual((await bob.next('room.message')).payload, second);

  // The built-in keepalive.
  bob.send({ type: 'ping', id: 'k', payload: { t: 1 } });
  assert.deepEqual(await bob.next('pong'), { type: 'pong', id: 'k', payload: { t: 1 } });

  // Bob leaves: he is told, Ann hears of it, and his publishes are refused.
  bob.send({ type: 'room.leave', id: 'l', payload: { room } });
  const left = await bob.next('room.left');
  assert.equal(left.id, 'l');
  assert.equal(left.payload.room, room);
  const gone = await ann.next('presence.diff', (e) => e.payload.leaves.length > 0);
  assert.deepEqual(gone.payload, { room, joins: [], leaves: [{ id: bobID, meta: { name: 'bob' } }] });
  bob.send({ type: 'room.publish', id: 'p2', payload: { room, body: 'late' } });
  const refused = await bob.next('error');
  assert.equal(refused.id, 'p2');
  assert.equal(refused.payload.code, 'not_member');
  assert.equal(typeof refused.payload.message, 'string');

  assert.deepEqual(bob.inbox, [], 'bob got nothing else');
  assert.deepEqual(ann.inbox, [], 'ann got nothing else');
});

test('a plain ws client resumes a room with since after reconnecting', async (t) => {
  const room = unique('ws-resume');
  const ann = await Peer.open(t);
  const bob = await Peer.open(t);
  ann.send({ type: 'room.join', id: 1, payload: { room } });
  await ann.next('room.joined');
  bob.send({ type: 'room.join', id: 1, payload: { room } });
  await bob.next('room.joined');
  for (let i = 1; i <= 3; i++) bob.send({ type: 'room.publish', id: i, payload: { room, body: i } });
  await bob.next('room.published', (e) => e.id === 3);
  const seen = [];
  for (let i = 1; i <= 3; i++) seen.push((await ann.next('room.message')).payload.seq);
  assert.deepEqual(seen, [1, 2, 3]);

  await ann.close();
  for (let i = 4; i <= 6; i++) bob.send({ type: 'room.publish', id: i, payload: { room, body: i } });
  await bob.next('room.published', (e) => e.id === 6);

  const again = await Peer.open(t);
  again.send({ type: 'room.join', id: 'r', payload: { room, since: 3 } });
  const joined = await again.next('room.joined');
  assert.equal(joined.payload.seq, 6);
  assert.equal(joined.payload.recovered, true);
  const missed = [];
  for (let i = 0; i < 3; i++) missed.push((await again.next('room.message')).payload);
  assert.deepEqual(missed.map((m) => [m.seq, m.body]), [[4, 4], [5, 5], [6, 6]]);
  assert.deepEqual(again.inbox, [], 'nothing before or between the missed messages');
});
