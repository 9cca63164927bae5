// Presence in large rooms through the client: above the server's
// PresenceLimit (TROUPE_COUNTED_LIMIT on the server at
// TROUPE_COUNTED_URL) the server counts a room's members instead of
// listing them, and lists them again at half the limit (see helpers.mjs).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { newClient, serverURL, unique, until } from './helpers.mjs';

const names = (members) => members.map((m) => m.meta && m.meta.name).sort();

// presenceWhere resolves with the first 'presence' event of room whose
// change satisfies pred, or at once if the room's state already does.
async function presenceWhere(room, pred, what) {
  if (pred({ count: room.count, counted: room.counted }, room.members)) return;
  try {
    await until((fn) => room.on('presence', fn), (members, change) => pred(change, members), what);
  } catch (err) {
    err.message += `; count ${room.count}, counted ${room.counted}, members ${JSON.stringify(room.members)}`;
    throw err;
  }
}

test('a room above the limit is counted, and listed again at half of it', async (t) => {
  const limit = Number(process.env.TROUPE_COUNTED_LIMIT);
  assert.equal(limit, 4, 'the test server counts rooms above 4 members');
  const url = serverURL('TROUPE_COUNTED_URL');
  const name = unique('counted');
  const rooms = {};
  const join = async (who) => {
    rooms[who] = newClient(t, {}, url).room(name, { meta: { name: who } });
    return rooms[who].join();
  };
  for (const who of ['ann', 'bob', 'cy', 'dan']) await join(who);
  const ann = rooms.ann;
  assert.equal(rooms.dan.count, 4);
  assert.equal(rooms.dan.counted, false);
  assert.deepEqual(names(rooms.dan.members), ['ann', 'bob', 'cy', 'dan']);

  // The fifth: counted. Its room.joined has the count and a first page.
  const joined = await join('eve');
  assert.equal(joined.count, 5);
  assert.equal(joined.presence, 'count');
  assert.deepEqual(names(joined.members), ['ann', 'bob', 'cy', 'dan'], 'the first page, as long as the limit');
  assert.equal(rooms.eve.counted, true);
  assert.equal(rooms.eve.count, 5);
  // Joining again answers from what the room knows: the same count, and
  // that the list is a page.
  const again = await rooms.eve.join();
  assert.equal(again.count, 5);
  assert.equal(again.presence, 'count');
  // The others hear of the count, not of eve.
  await presenceWhere(ann, (c) => c.counted && c.count === 5, 'ann to see the room counted with 5');
  assert.equal(ann.count, 5);
  assert.ok(!names(ann.members).includes('eve'), 'a counted room\'s list is not kept');

  // Back to the limit: still counted.
  await rooms.eve.leave();
  await presenceWhere(ann, (c) => c.count === 4, 'ann to see the count fall to 4');
  assert.equal(ann.counted, true);
  await rooms.dan.leave();
  await presenceWhere(ann, (c) => c.count === 3, 'ann to see the count fall to 3');
  assert.equal(ann.counted, true);

  // Half the limit: listed again, with every member.
  const listed = presenceWhere(ann, (c) => !c.counted && c.reset, 'ann to get the whole list again');
  await rooms.cy.leave();
  await listed;
  assert.equal(ann.count, 2);
  assert.deepEqual(names(ann.members), ['ann', 'bob']);
  await presenceWhere(rooms.bob, (c) => !c.counted, 'bob to get the whole list again');
  assert.deepEqual(names(rooms.bob.members), ['ann', 'bob']);

  // Diffs again: a join shows in the list.
  await join('fay');
  await presenceWhere(ann, (c, members) => names(members).includes('fay'), 'ann to see fay join');
  assert.equal(ann.count, 3);
  assert.equal(ann.counted, false);
});
