// Rooms of the built-in room protocol through the client: order, presence,
// history, and resuming after a reconnect, against a real Troupe server
// (see helpers.mjs).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Client } from '../troupe.js';
import {
  collect,
  newClient,
  range,
  recordingWebSocket,
  serverURL,
  startProxy,
  unique,
  until,
} from './helpers.mjs';

// names returns the names in a member list, sorted: what a chat shows.
const names = (members) => members.map((m) => m.meta && m.meta.name).sort();

// byID sorts a member list for comparing lists from different clients.
const byID = (members) => [...members].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));

// presence resolves once the room's member list satisfies pred.
async function presence(room, pred, what) {
  if (pred(room.members)) return;
  try {
    await until((fn) => room.on('presence', fn), (members) => pred(members), what);
  } catch (err) {
    err.message += `; members: ${JSON.stringify(room.members)}`;
    throw err;
  }
}

test('two clients see the same messages in the same gap-free order', async (t) => {
  const name = unique('order');
  const a = newClient(t).room(name, { meta: { name: 'ann' } });
  const b = newClient(t).room(name, { meta: { name: 'bob' } });
  const joinedA = await a.join();
  const joinedB = await b.join();
  assert.equal(joinedA.room, name);
  assert.equal(joinedA.seq, 0);
  assert.equal(joinedA.recovered, false);
  assert.equal(joinedB.seq, 0);
  assert.deepEqual(names(joinedB.members), ['ann', 'bob']);

  const gotA = collect(a);
  const gotB = collect(b);
  const n = 60;
  // Both publish at once, without waiting for each other.
  const [seqsA, seqsB] = await Promise.all([
    Promise.all(range(1, n).map((i) => a.publish({ from: 'ann', i }))),
    Promise.all(range(1, n).map((i) => b.publish({ from: 'bob', i }))),
  ]);
  await gotA.wait(2 * n);
  await gotB.wait(2 * n);

  const seqs = gotA.messages.map((m) => m.seq);
  assert.deepEqual(seqs, range(1, 2 * n), 'seq starts at 1 and has no gap or repeat');
  assert.deepEqual(gotB.messages, gotA.messages, 'both members see the same messages in the same order');
  // Every publish resolved with the seq its message was given.
  for (const [i, seq] of seqsA.entries()) assert.deepEqual(gotA.messages[seq - 1].body, { from: 'ann', i: i + 1 });
  for (const [i, seq] of seqsB.entries()) assert.deepEqual(gotA.messages[seq - 1].body, { from: 'bob', i: i + 1 });
  // Each client's messages keep the order it sent them in.
  const order = (who) => gotA.messages.filter((m) => m.body.from === who).map((m) => m.body.i);
  assert.deepEqual(order('ann'), range(1, n));
  assert.deepEqual(order('bob'), range(1, n));
  // "from" is the id the member list gives the sender.
  const idOf = (who) => b.members.find((m) => m.meta.name === who).id;
  assert.ok(gotA.messages.every((m) => m.from === idOf(m.body.from)));
  assert.notEqual(idOf('ann'), idOf('bob'));
  assert.equal(a.lastSeq, 2 * n);
});

// reached resolves once the room has seen the message with this seq.
function reached(room, seq) {
  if (room.lastSeq !== null && room.lastSeq >= seq) return Promise.resolve();
  return until((fn) => room.on('message', fn), (m) => m.seq >= seq, `${room.meta.name} to see seq ${seq}`);
}

// settle publishes through one room and waits until every room has the
// message. The server sends pending presence diffs before any message, so
// after this every change that came before is known to all.
async function settle(publisher, rooms) {
  const seq = await publisher.publish('sync');
  await Promise.all(rooms.map((r) => reached(r, seq)));
}

test('presence lists agree on every client after joins and leaves', async (t) => {
  const name = unique('presence');
  const clients = {};
  const rooms = {};
  for (const who of ['ann', 'bob', 'cy', 'dan', 'eve']) {
    clients[who] = newClient(t);
    rooms[who] = clients[who].room(name, { meta: { name: who } });
  }
  const { ann, bob, cy, dan, eve } = rooms;
  // agree checks that every room in list shows exactly the expected names
  // and the same ids.
  const agree = (list, expected) => {
    for (const r of list) assert.deepEqual(names(r.members), expected, `${r.meta.name}'s member list`);
    for (const r of list.slice(1)) assert.deepEqual(byID(r.members), byID(list[0].members), `${r.meta.name} and ${list[0].meta.name} agree`);
  };

  await ann.join();
  // Bob and Cy join together, right after Ann: the server may report all
  // three in one batched diff.
  await Promise.all([bob.join(), cy.join()]);
  await settle(ann, [ann, bob, cy]);
  agree([ann, bob, cy], ['ann', 'bob', 'cy']);

  // Cy leaves; Dan and Eve join together and Dan leaves at once.
  const cyID = ann.members.find((m) => m.meta.name === 'cy').id;
  const annSawCyLeave = until((fn) => ann.on('presence', fn), (_, diff) => diff.leaves.some((m) => m.id === cyID), 'cy to leave');
  await cy.leave();
  await Promise.all([dan.join(), eve.join()]);
  await dan.leave();
  await settle(ann, [ann, bob, eve]);
  agree([ann, bob, eve], ['ann', 'bob', 'eve']);
  const [, diff] = await annSawCyLeave;
  assert.deepEqual(diff.leaves.find((m) => m.id === cyID), { id: cyID, meta: { name: 'cy' } });
  assert.deepEqual(cy.members, []);
  assert.equal(cy.joined, false);
  assert.deepEqual(dan.members, []);

  // Bob's connection goes away: the room tells the others.
  await clients.bob.close();
  await Promise.all([ann, eve].map((r) => presence(r, (m) => m.length === 2, `${r.meta.name} to see bob go`)));
  await settle(eve, [ann, eve]);
  agree([ann, eve], ['ann', 'eve']);

  // Cy comes back.
  await cy.join();
  await settle(cy, [ann, cy, eve]);
  agree([ann, cy, eve], ['ann', 'cy', 'eve']);
});

test('after a reconnect a room rejoins with since and receives exactly what it missed', async (t) => {
  const name = unique('resume');
  const proxy = await startProxy(t);
  const rec = recordingWebSocket();
  const aClient = newClient(t, { WebSocket: rec.WebSocket }, proxy.url);
  const a = aClient.room(name, { meta: { name: 'ann' } });
  const b = newClient(t).room(name, { meta: { name: 'bob' } });
  await a.join();
  await b.join();
  const got = collect(a);
  const recoveries = [];
  a.on('recover', (r) => recoveries.push(r));

  for (let i = 1; i <= 5; i++) await b.publish(i);
  await got.wait(5);

  // Ann's connection is cut and her reconnects are held: what Bob
  // publishes now, she can only get by resuming.
  proxy.hold();
  const down = until((fn) => aClient.onStatus('disconnected', fn), () => true, 'ann to notice the cut');
  proxy.cut();
  await down;
  for (let i = 6; i <= 15; i++) await b.publish(i);
  assert.equal(got.messages.length, 5);

  const recovered = until((fn) => a.on('recover', fn), () => true, 'recovery');
  proxy.release();
  const [r] = await recovered;
  assert.deepEqual(r, { recovered: true, since: 5, seq: 15 });
  assert.deepEqual(got.messages.map((m) => m.seq), range(1, 15), 'the missed messages arrived by the time recovery was reported');

  // The rejoin asked for what came after the last message seen.
  const joins = rec.sent.filter((f) => f.type === 'room.join' && f.payload.room === name);
  assert.equal(joins.length, 2);
  assert.equal(joins[0].payload.since, undefined);
  assert.equal(joins[1].payload.since, 5);
  assert.deepEqual(joins[1].payload.meta, { name: 'ann' });

  // Live messages follow, from both sides.
  await b.publish(16);
  assert.equal(await a.publish(17), 17);
  await got.wait(17);
  assert.deepEqual(got.messages.map((m) => m.seq), range(1, 17), 'each message once, none missing');
  assert.deepEqual(got.messages.map((m) => m.body), [...range(1, 16), 17]);
  assert.equal(recoveries.length, 1);
});

test('messages published while the server drops a member arrive once each after it rejoins', async (t) => {
  const name = unique('drop');
  const aClient = newClient(t);
  const a = aClient.room(name);
  const b = newClient(t).room(name);
  await a.join();
  await b.join();
  const got = collect(a);
  const recovered = until((fn) => a.on('recover', fn), () => true, 'recovery');

  // Bob keeps publishing while the server drops Ann's connection.
  const n = 40;
  const publishing = Promise.all(range(1, n).map((i) => b.publish(i)));
  await assert.rejects(aClient.request('test.drop', {}), { code: 'disconnected' });
  await publishing;
  const [r] = await recovered;
  assert.equal(r.recovered, true);
  await got.wait(n);
  await b.publish(n + 1);
  await got.wait(n + 1);
  assert.deepEqual(got.messages.map((m) => m.seq), range(1, n + 1));
  assert.deepEqual(got.messages.map((m) => m.body), range(1, n + 1));
});

test('past the history window the rejoin reports recovered: false, and history() reloads', async (t) => {
  const url = serverURL('TROUPE_SMALL_HISTORY_URL');
  const keep = Number(process.env.TROUPE_SMALL_HISTORY);
  assert.ok(keep > 0, 'TROUPE_SMALL_HISTORY is set');
  const name = unique('window');
  const proxy = await startProxy(t, url);
  const aClient = newClient(t, {}, proxy.url);
  const a = aClient.room(name);
  const b = newClient(t, {}, url).room(name);
  await a.join();
  await b.join();
  const got = collect(a);
  await b.publish(1);
  await got.wait(1);

  proxy.hold();
  const down = until((fn) => aClient.onStatus('disconnected', fn), () => true, 'ann to notice the cut');
  proxy.cut();
  await down;
  const missed = keep + 3;
  for (let i = 2; i <= 1 + missed; i++) await b.publish(i);

  const recovered = until((fn) => a.on('recover', fn), () => true, 'the rejoin');
  proxy.release();
  const [r] = await recovered;
  assert.equal(r.recovered, false);
  assert.equal(r.since, 1);
  assert.equal(r.seq, 1 + missed);

  // What a page does then: reload the newest messages.
  const reload = await a.history({ limit: keep });
  assert.deepEqual(reload.map((m) => m.seq), range(2 + missed - keep, 1 + missed));
  assert.deepEqual(reload.map((m) => m.body), range(2 + missed - keep, 1 + missed));

  // Live messages keep coming, with nothing after them lost. The wait is
  // set up before the publish: ann's copy can arrive before bob's ack.
  const live = until((fn) => a.on('message', fn), (m) => m.body === 'live', 'the live message');
  const last = await b.publish('live');
  const [m] = await live;
  assert.equal(m.seq, last);
  assert.equal(a.lastSeq, last);
});

test('history pages backwards in ascending order', async (t) => {
  const name = unique('history');
  const a = newClient(t).room(name);
  await a.join();
  for (let i = 1; i <= 12; i++) await a.publish({ i });
  const newest = await a.history({ limit: 5 });
  assert.deepEqual(newest.map((m) => m.seq), range(8, 12));
  assert.deepEqual(newest.map((m) => m.body.i), range(8, 12));
  assert.ok(newest.every((m) => m.room === name && typeof m.from === 'string'));
  const older = await a.history({ before: newest[0].seq, limit: 5 });
  assert.deepEqual(older.map((m) => m.seq), range(3, 7));
  const oldest = await a.history({ before: older[0].seq, limit: 5 });
  assert.deepEqual(oldest.map((m) => m.seq), [1, 2]);
});

test('after leave() a room gets no more messages and cannot publish', async (t) => {
  const name = unique('leave');
  const a = newClient(t).room(name);
  const b = newClient(t).room(name);
  await a.join();
  await b.join();
  const got = collect(a);
  await b.publish('before');
  await got.wait(1);
  await a.leave();
  assert.equal(a.joined, false);
  await assert.rejects(a.publish('after'), { code: 'not_member' });
  // Bob's next message is delivered to Bob; Ann, not a member, gets
  // nothing (the server handles Bob's publishes in order, so by the time
  // Bob has the second one, Ann would have had the first).
  const gotB = collect(b);
  await b.publish('not for ann');
  await b.publish('nor this');
  await gotB.wait(2);
  assert.deepEqual(got.messages.map((m) => m.body), ['before']);
});

test('a room drops messages it has already seen', async () => {
  // A scripted server: this checks the client's bookkeeping alone.
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
  }
  const client = new Client('ws://scripted.invalid/ws', { WebSocket: FakeSocket, pingInterval: 0 });
  const room = client.room('r');
  const joined = room.join();
  await client.connect();
  const ws = sockets[0];
  const join = ws.sent.find((f) => f.type === 'room.join');
  const seen = [];
  room.on('message', (m) => seen.push(m.seq));
  const msg = (seq) => ({ type: 'room.message', payload: { room: 'r', seq, from: 'x', body: seq } });
  ws.push(
    { type: 'room.joined', id: join.id, payload: { room: 'r', seq: 3, members: [], recovered: false } },
    msg(3),
    msg(4),
    msg(5),
    msg(4),
    msg(5),
    msg(6),
  );
  await joined;
  assert.deepEqual(seen, [4, 5, 6]);
  ws.push(msg(6), msg(7), msg(2), msg(8));
  assert.deepEqual(seen, [4, 5, 6, 7, 8]);
  assert.equal(room.lastSeq, 8);
  await client.close();
});

test('room.on(type) gets the application\'s own events for that room, and only for it', async (t) => {
  const name = unique('custom');
  const other = unique('custom-other');
  const client = newClient(t);
  const a = client.room(name);
  const b = client.room(other);
  await a.join();
  await b.join();
  const got = [];
  const gotOther = [];
  a.on('auction.bid', (p) => got.push(p.n));
  b.on('auction.bid', (p) => gotOther.push(p.n));
  // A custom type named like a room event is not taken for one.
  let fakeLeft = 0;
  a.on('left', () => fakeLeft++);
  const done = until((fn) => a.on('auction.bid', fn), (p) => p.n === 4, 'the last bid');
  const doneOther = until((fn) => b.on('auction.bid', fn), () => true, 'the other room\'s bid');
  for (const n of [1, 2, 3]) await client.request('test.roomcast', { room: name, event: 'auction.bid', n });
  await client.request('test.roomcast', { room: other, event: 'auction.bid', n: 9 });
  await client.request('test.roomcast', { room: name, event: 'left', n: 0 });
  // The room's order: the fake "left" went out before this last bid.
  await client.request('test.roomcast', { room: name, event: 'auction.bid', n: 4 });
  await done;
  await doneOther;
  assert.deepEqual(got, [1, 2, 3, 4]);
  assert.deepEqual(gotOther, [9]);
  assert.equal(fakeLeft, 0);
});

test('room.request asks the room\'s own logic and resolves with its answer', async (t) => {
  const name = unique('logic');
  const a = newClient(t).room(name);
  const b = newClient(t).room(name);
  await assert.rejects(a.request('test.roomadd', { n: 1 }), (err) => err.code === 'not_member');
  await a.join();
  await b.join();
  assert.equal((await a.request('test.roomadd', { n: 2 })).count, 2);
  const answer = await b.request('test.roomadd', { n: 3 });
  assert.equal(answer.count, 5); // one count, kept by the room
  assert.equal(typeof answer.from, 'string');
  await assert.rejects(a.request('test.roomadd', { fail: true }), (err) => err.code === 'refused');
  assert.equal((await a.request('test.roomadd', { n: 0 })).count, 5);
});
