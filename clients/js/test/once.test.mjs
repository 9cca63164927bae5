// Effectively-once publish: the client's outbox sends a publish cut off by
// a disconnect again, with the same message id, and the server publishes
// it once.

import test from 'node:test';
import assert from 'node:assert/strict';
import { newClient, unique, collect, until, range, serverURL } from './helpers.mjs';
import { TroupeError } from '../troupe.js';

// dropMidBurst: a's client sends 100 publishes and, after the 60th, a
// request that makes the server drop its connection (the answers not yet
// written are lost, the last 40 publishes are not handled). After the
// reconnect (on urls, in turn) every member holds each body once, in one
// order, and each promise settled once with the seq the members saw.
async function dropMidBurst(t, urls, watcherURL) {
  const name = unique('once');
  const n = 100;
  const aClient = newClient(t, {}, urls);
  const a = aClient.room(name);
  const b = newClient(t, {}, watcherURL).room(name);
  await a.join();
  await b.join();
  const gotA = collect(a);
  const gotB = collect(b);
  const reconnected = until((fn) => aClient.onStatus('open', fn), (e) => e.reconnected, 'the reconnect');

  // All 100 publishes and the drop request go out now; the server drops
  // the connection when it reaches the drop, after the 60th publish: the
  // answers it had not written are lost, and the last 40 are not handled.
  const settled = new Array(n).fill(0);
  const track = (i) =>
    a.publish(i).then(
      (seq) => {
        settled[i]++;
        return seq;
      },
      (err) => {
        settled[i]++;
        throw err;
      },
    );
  const dropAt = 60;
  const publishes = [];
  for (let i = 0; i < dropAt; i++) publishes.push(track(i));
  const drop = aClient.request('test.drop', {});
  for (let i = dropAt; i < n; i++) publishes.push(track(i));
  await assert.rejects(drop, { code: 'disconnected' });
  const seqs = await Promise.all(publishes);
  await reconnected;

  const msgsB = await gotB.wait(n);
  const msgsA = await gotA.wait(n);
  await b.publish('after'); // everything before it has arrived
  await gotB.wait(n + 1);
  await gotA.wait(n + 1);
  const bodiesB = msgsB.slice(0, n).map((m) => m.body);
  assert.deepEqual(msgsB.map((m) => m.seq), range(1, n + 1), 'seqs 1..n+1 once each');
  assert.deepEqual(msgsA.slice(0, n).map((m) => m.body), bodiesB, 'one order for every member');
  assert.deepEqual([...bodiesB].sort((x, y) => x - y), range(0, n - 1), 'each body once');
  assert.deepEqual(settled, new Array(n).fill(1), 'each promise settled once');
  for (let i = 0; i < n; i++) {
    assert.equal(seqs[i], bodiesB.indexOf(i) + 1, `publish ${i} resolved with the seq the members saw`);
  }
}

test('a drop in the middle of 100 publishes: each body once, one order, each promise once with the seq the members saw', async (t) => {
  await dropMidBurst(t, serverURL(), serverURL());
});

test('the same when the client comes back through another node', async (t) => {
  const urls = serverURL('TROUPE_CLUSTER_URLS').split(',');
  await dropMidBurst(t, urls, urls[1]);
});

test('the outbox is bounded: beyond maxOutbox unacknowledged publishes, publish rejects with outbox_full', async (t) => {
  const name = unique('full');
  const client = newClient(t, { maxOutbox: 2 });
  const room = client.room(name);
  await room.join();
  const first = room.publish(1);
  const second = room.publish(2);
  await assert.rejects(room.publish(3), (err) => err instanceof TroupeError && err.code === 'outbox_full');
  assert.deepEqual((await Promise.all([first, second])).sort(), [1, 2]);
  assert.equal(await room.publish(3), 3, 'room again once they are acknowledged');
});

test('a publish carries the mid the application gives, and a repeat gets the first seq', async (t) => {
  const name = unique('mid');
  const room = newClient(t).room(name);
  const watcher = newClient(t, {}, serverURL()).room(name);
  await room.join();
  await watcher.join();
  const got = collect(watcher);
  assert.equal(await room.publish('x', { mid: 'order-17' }), 1);
  assert.equal(await room.publish('x', { mid: 'order-17' }), 1);
  assert.equal(await room.publish('y'), 2);
  const msgs = await got.wait(2);
  assert.equal(msgs[0].mid, 'order-17');
  assert.deepEqual(msgs.map((m) => m.body), ['x', 'y']);
  await assert.rejects(room.publish('z', { mid: 'x'.repeat(65) }), { code: 'invalid_payload' });
});
