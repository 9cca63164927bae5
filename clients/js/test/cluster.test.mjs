// A client given the URLs of several nodes of one cluster: when its node
// goes away it reconnects to the next one, and its rooms resume there with
// nothing missed (against two Troupe servers sharing rooms; see helpers.mjs).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { collect, newClient, range, serverURL, startProxy, unique, until } from './helpers.mjs';

const nodeURLs = () => serverURL('TROUPE_CLUSTER_URLS').split(',');

test('a client whose node goes away resumes its room through the next node', async (t) => {
  const name = unique('moving');
  const [urlA, urlB] = nodeURLs();
  // Ann reaches each node through a proxy, so that the test can cut her
  // connection and hold her reconnect while Bob publishes.
  const viaA = await startProxy(t, urlA);
  const viaB = await startProxy(t, urlB);
  const annClient = newClient(t, {}, [viaA.url, viaB.url]);
  const ann = annClient.room(name, { meta: { name: 'ann' } });
  const bob = newClient(t, {}, urlB).room(name, { meta: { name: 'bob' } });
  await ann.join();
  await bob.join();
  assert.equal(await annClient.request('test.node'), 'node-a');
  const got = collect(ann);
  for (let i = 1; i <= 5; i++) await bob.publish(i);
  await got.wait(5);

  viaA.hold();
  viaB.hold();
  const down = until((fn) => annClient.onStatus('disconnected', fn), () => true, 'ann to notice the cut');
  viaA.cut();
  await down;
  for (let i = 6; i <= 12; i++) await bob.publish(i);

  const recovered = until((fn) => ann.on('recover', fn), () => true, 'recovery');
  viaA.release();
  viaB.release();
  const [r] = await recovered;
  assert.deepEqual(r, { recovered: true, since: 5, seq: 12 });
  assert.equal(await annClient.request('test.node'), 'node-b', 'the reconnect went to the next node');
  assert.deepEqual(got.messages.map((m) => m.seq), range(1, 12));

  // Both ways from here: Ann's messages reach Bob and herself once.
  assert.equal(await ann.publish(13), 13);
  await got.wait(13);
  assert.deepEqual(got.messages.map((m) => m.seq), range(1, 13));
});
