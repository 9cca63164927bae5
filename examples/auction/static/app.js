// The auction page: joins an auction room, shows its state and its bids
// (the room's numbered stream), and bids with room.request('bid').
import { Client } from './troupe.js';

const $ = (id) => document.getElementById(id);
let room = null;
let ends = 0;

function show(state) {
  $('high').textContent = state.high > 0 ? String(state.high) : 'none';
  $('high').dataset.value = String(state.high);
  $('leader').textContent = state.leader ? `by ${state.leader}` : '';
  if (state.ends) ends = Date.parse(state.ends);
  if (state.over) {
    $('clock').textContent = state.leader ? `Sold to ${state.leader} for ${state.high}` : 'Ended without bids';
    $('clock').className = 'over';
    $('bid').disabled = true;
  }
}

function tick() {
  if ($('clock').className !== 'over' && ends > 0) {
    $('clock').textContent = `Ends in ${Math.max(0, Math.ceil((ends - Date.now()) / 1000))} s`;
  }
}
setInterval(tick, 500);

// addMessage shows a message of the room's stream once, in seq order: a
// bid, or the end of the auction.
function addMessage(m) {
  const list = $('bids');
  if (list.querySelector(`li[data-seq="${m.seq}"]`)) return;
  if (m.type === 'auction.bid') {
    const li = document.createElement('li');
    li.dataset.seq = m.seq;
    li.textContent = `${m.body.bidder}: ${m.body.amount}`;
    const later = [...list.children].find((x) => Number(x.dataset.seq) > m.seq);
    list.insertBefore(li, later || null);
    if (m.body.amount > Number($('high').dataset.value || 0)) {
      show({ high: m.body.amount, leader: m.body.bidder });
    }
  } else if (m.type === 'auction.ended') {
    show(m.body);
  }
}

$('join-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const url = new URL('/ws', location.href);
  url.protocol = url.protocol.replace('http', 'ws');
  url.searchParams.set('name', $('name').value.trim());
  const client = new Client(url.toString());
  room = client.room($('room').value.trim());
  room.on('auction.state', show);
  room.on('message', addMessage);
  try {
    const joined = await room.join();
    // The bids before this page came: the stream's history.
    for (const m of await room.history({ before: joined.seq + 1, limit: 1000 })) addMessage(m);
    $('join-form').hidden = true;
    $('auction').hidden = false;
    $('title').textContent = room.name;
  } catch (err) {
    $('error').textContent = err.message;
  }
});

$('bid-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const answer = $('answer');
  try {
    const r = await room.request('bid', { amount: Number($('amount').value) });
    answer.dataset.accepted = String(r.accepted);
    answer.textContent = r.accepted ? `Accepted: ${r.high}` : `Rejected: ${r.reason} (highest ${r.high})`;
  } catch (err) {
    answer.dataset.accepted = 'false';
    answer.textContent = err.message;
  }
});
