// The client's own logic against a scripted transport: dedupe across replays, gaps, resume,
// backoff, fallback and upgrade, unauthorized, idle sockets. Fast and deterministic.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { backoffDelay, createClient, memoryStorage } from '../src/leadpush-client.mjs';

const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

async function until(check, what = 'condition', timeout = 3000) {
  const deadline = Date.now() + timeout;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await tick(2);
  }
}

/** A transport whose sockets and HTTP requests the test drives by hand. */
function scriptedTransport({ sockets = true } = {}) {
  const t = {
    storage: memoryStorage(),
    sockets: [],
    requests: [],
    openSocket: null,
    request(req) {
      let resolve;
      let reject;
      const promise = new Promise((res, rej) => {
        resolve = res;
        reject = rej;
      });
      const r = {
        ...req,
        aborted: false,
        reply: (status, data) => resolve({ status, data: { success: status < 400, message: '', data } }),
        answer: (status, body) => resolve({ status, data: body }), // any body: an error envelope, null (not JSON)
        fail: (msg = 'network down') => reject(new Error(msg)),
      };
      t.requests.push(r);
      return { promise, abort: () => ((r.aborted = true), reject(new Error('aborted'))) };
    },
    pending: (pathPrefix) => t.requests.filter((r) => !r.done && r.url.includes(pathPrefix)),
  };
  if (sockets) {
    t.openSocket = (url, h) => {
      const s = {
        url,
        h,
        sent: [],
        closedByClient: null,
        send: (text) => {
          if (s.closedByClient) throw new Error('closed');
          s.sent.push(JSON.parse(text));
        },
        close: (code) => (s.closedByClient = code || 1000),
        msg: (obj) => h.onMessage(JSON.stringify(obj)),
        drop: (code = 1006) => h.onClose({ code, reason: '' }),
      };
      t.sockets.push(s);
      return s;
    };
  }
  return t;
}

const note = (id, prevId, extra = {}) => ({ id, prevId, type: 'customer_assigned', title: `n${id}`, data: { customerId: id }, readAt: null, ...extra });

function makeClient(transport, extra = {}) {
  return createClient({ baseUrl: 'http://lp.test', token: 'tok', transport, backoff: { base: 10, max: 40 }, random: () => 0.5, ...extra });
}

function watch(client) {
  const seen = { ids: [], unread: [], states: [] };
  client.on('notification', (n) => seen.ids.push(n.id));
  client.on('unread', (n) => seen.unread.push(n));
  client.on('state', (s) => seen.states.push(s));
  return seen;
}

test('backoff grows exponentially with jitter and is capped', () => {
  const b = { base: 100, max: 1000 };
  assert.equal(backoffDelay(0, b, () => 0), 50);
  assert.equal(backoffDelay(0, b, () => 1), 100);
  assert.equal(backoffDelay(3, b, () => 1), 800);
  assert.equal(backoffDelay(10, b, () => 1), 1000);
  assert.equal(backoffDelay(10, b, () => 0), 500);
  for (let i = 0; i < 100; i++) {
    const d = backoffDelay(2, b);
    assert.ok(d >= 200 && d <= 400, String(d));
  }
});

test('resumes from the stored id of this user; replays are not shown twice; acks what it shows', async () => {
  const t = scriptedTransport();
  t.storage.set('leadpush.lastId:7', '3');
  t.storage.set('leadpush.lastId:8', '99'); // another user on the same phone
  const client = makeClient(t);
  const seen = watch(client);
  client.start();
  assert.match(t.sockets[0].url, /^ws:\/\/lp\.test\/ws\?token=tok$/);
  t.sockets[0].msg({ type: 'hello', data: { userId: 7, latestId: 5 } });
  assert.deepEqual(t.sockets[0].sent[0], { type: 'resume', after: 3 });
  t.sockets[0].msg(note(2, 1)); // already seen: ignored
  t.sockets[0].msg(note(4, 3));
  t.sockets[0].msg(note(5, 4));
  t.sockets[0].msg({ type: 'unread', data: { unread: 2 } });
  assert.deepEqual(seen.ids, [4, 5]);
  await tick(5);
  assert.deepEqual(t.sockets[0].sent[1], { type: 'ack', ids: [4, 5] });
  assert.equal(t.storage.get('leadpush.lastId:7'), '5');
  assert.equal(t.storage.get('leadpush.lastId:8'), '99');

  t.sockets[0].drop(); // the socket breaks; the server replays from 5 on the next one
  assert.equal(client.state, 'reconnecting');
  await until(() => t.sockets.length === 2, 'a reconnect');
  t.sockets[1].msg({ type: 'hello', data: { userId: 7, latestId: 6 } });
  assert.deepEqual(t.sockets[1].sent[0], { type: 'resume', after: 5 });
  t.sockets[1].msg(note(5, 4)); // a replay of something shown: ignored
  t.sockets[1].msg(note(6, 5));
  t.sockets[1].msg({ type: 'unread', data: { unread: 3 } });
  t.sockets[1].msg(note(7, 6)); // live: the count follows locally
  assert.deepEqual(seen.ids, [4, 5, 6, 7]);
  assert.deepEqual(seen.unread, [2, 3, 4]);
  assert.deepEqual(seen.states, ['connecting', 'open', 'reconnecting', 'open']);
  client.stop();
  assert.equal(t.sockets[1].closedByClient, 1000);
  assert.equal(client.state, 'stopped');
});

test('a live notification after a gap makes the client replay from its last id', async () => {
  const t = scriptedTransport();
  const client = makeClient(t);
  const seen = watch(client);
  client.start();
  t.sockets[0].msg({ type: 'hello', data: { userId: 1, latestId: 0 } });
  t.sockets[0].msg({ type: 'unread', data: { unread: 0 } });
  t.sockets[0].msg(note(10, null));
  t.sockets[0].msg(note(12, 11)); // 11 never came
  assert.deepEqual(seen.ids, [10]);
  assert.ok(t.sockets[0].closedByClient);
  await until(() => t.sockets.length === 2, 'the resync');
  t.sockets[1].msg({ type: 'hello', data: { userId: 1, latestId: 12 } });
  assert.deepEqual(t.sockets[1].sent[0], { type: 'resume', after: 10 });
  t.sockets[1].msg(note(11, 10));
  t.sockets[1].msg(note(12, 11));
  assert.deepEqual(seen.ids, [10, 11, 12]);
  client.stop();
});

test('close code 4401 (signed out while open) means unauthorized: no reconnect', async () => {
  const t = scriptedTransport();
  const client = makeClient(t);
  const seen = watch(client);
  client.start();
  t.sockets[0].msg({ type: 'hello', data: { userId: 1, latestId: 0 } });
  t.sockets[0].drop(4401);
  await tick(50);
  assert.equal(t.sockets.length, 1);
  assert.equal(client.state, 'unauthorized');
  assert.equal(seen.states[seen.states.length - 1], 'unauthorized');
  client.stop();
});

test('close code 1008 means unauthorized: no reconnect', async () => {
  const t = scriptedTransport();
  const client = makeClient(t);
  const seen = watch(client);
  client.start();
  t.sockets[0].drop(1008);
  await tick(50);
  assert.equal(t.sockets.length, 1);
  assert.deepEqual(seen.states, ['connecting', 'unauthorized']);
  client.start(); // a new token needs a new client, but start() again retries
  assert.equal(client.state, 'connecting');
  client.stop();
});

test('close code 4429 (sign-in lockout) is retried later with backoff, never given up', async () => {
  const t = scriptedTransport();
  const client = makeClient(t, { fallbackAfter: 2 });
  const seen = watch(client);
  client.start();
  for (let i = 0; i < 4; i++) {
    t.sockets[i].drop(4429);
    assert.equal(client.state, 'reconnecting');
    await until(() => t.sockets.length === i + 2, 'a retry after the lockout');
  }
  assert.equal(client.mode, 'ws'); // no fallback to polling: it would be locked out the same way
  t.sockets[4].msg({ type: 'hello', data: { userId: 1, latestId: 0 } });
  assert.equal(client.state, 'open');
  assert.ok(!seen.states.includes('unauthorized'));
  client.stop();
});

test('falls back to long-polling after consecutive failures, then upgrades back to WebSocket', async () => {
  const t = scriptedTransport();
  const client = makeClient(t, { fallbackAfter: 3, upgradeInterval: 30, pollWait: 25 });
  const seen = watch(client);
  client.start();
  t.sockets[0].drop();
  await until(() => t.sockets.length === 2);
  t.sockets[1].drop();
  await until(() => t.sockets.length === 3);
  t.sockets[2].drop();
  assert.equal(client.state, 'polling');
  assert.equal(client.mode, 'poll');
  // The user is not known yet (no hello): asked first, for the per-user storage key.
  await until(() => t.pending('/api/me').length === 1);
  t.pending('/api/me')[0].reply(200, { id: 4 });
  await until(() => t.pending('/api/notifications?').length === 1);
  const poll = t.pending('/api/notifications?')[0];
  poll.done = true;
  assert.match(poll.url, /\/api\/notifications\?after=0&limit=100&wait=25$/);
  assert.equal(poll.headers.Authorization, 'Bearer tok');
  poll.reply(200, { items: [note(1, undefined), note(2, undefined)], lastId: 2, unread: 2 });
  await until(() => seen.ids.length === 2);
  await until(() => t.pending('/api/notifications/ack').length === 1, 'an HTTP ack');
  const ack = t.pending('/api/notifications/ack')[0];
  assert.deepEqual(JSON.parse(ack.body), { ids: [1, 2] });
  ack.done = true;
  ack.reply(200, { unread: 2 });
  await until(() => t.pending('after=2').length === 1, 'the next long poll');
  const longPoll = t.pending('after=2')[0];

  // A probe socket fails: still polling. The next one gets its hello: upgrade, poll aborted.
  await until(() => t.sockets.length === 4, 'a probe');
  t.sockets[3].drop();
  assert.equal(client.state, 'polling');
  await until(() => t.sockets.length === 5, 'another probe');
  t.sockets[4].msg({ type: 'hello', data: { userId: 4, latestId: 3 } });
  assert.equal(client.state, 'open');
  assert.equal(client.mode, 'ws');
  assert.equal(longPoll.aborted, true);
  assert.deepEqual(t.sockets[4].sent[0], { type: 'resume', after: 2 });
  t.sockets[4].msg(note(3, 2));
  assert.deepEqual(seen.ids, [1, 2, 3]);
  assert.deepEqual(seen.states, ['connecting', 'reconnecting', 'polling', 'open']);
  client.stop();
});

test('a failing long poll backs off and says "reconnecting"; success says "polling" again', async () => {
  const t = scriptedTransport({ sockets: false });
  const client = makeClient(t);
  const seen = watch(client);
  client.start();
  await until(() => t.pending('/api/me').length === 1);
  t.pending('/api/me')[0].fail();
  t.requests[0].done = true;
  assert.equal(client.state, 'polling');
  await until(() => client.state === 'reconnecting');
  await until(() => t.pending('/api/me').length === 1, 'a retry');
  t.pending('/api/me')[0].reply(200, { id: 1 });
  await until(() => t.pending('/api/notifications?').length === 1);
  t.pending('/api/notifications?')[0].reply(200, { items: [], lastId: 0, unread: 0 });
  await until(() => client.state === 'polling');
  assert.deepEqual(seen.states, ['connecting', 'polling', 'reconnecting', 'polling']);
  client.stop();
});

test('a socket silent for longer than idleTimeout is replaced', async () => {
  const t = scriptedTransport();
  const client = makeClient(t, { idleTimeout: 40 });
  client.start();
  t.sockets[0].msg({ type: 'hello', data: { userId: 1, latestId: 0 } });
  await until(() => t.sockets.length === 2, 'a new socket', 1000);
  assert.ok(t.sockets[0].closedByClient);
  client.stop();
});

test('a throwing listener does not stop delivery to the others', () => {
  const t = scriptedTransport();
  const client = makeClient(t);
  const errors = [];
  const got = [];
  client.on('notification', () => {
    throw new Error('ui bug');
  });
  client.on('notification', (n) => got.push(n.id));
  client.on('error', (e) => errors.push(e.message));
  client.start();
  t.sockets[0].msg({ type: 'hello', data: { userId: 1, latestId: 0 } });
  t.sockets[0].msg(note(1, null));
  t.sockets[0].msg(note(2, 1));
  assert.deepEqual(got, [1, 2]);
  assert.deepEqual(errors, ['ui bug', 'ui bug']);
  client.stop();
});

test('off() and the function returned by on() unsubscribe', () => {
  const t = scriptedTransport();
  const client = makeClient(t);
  const got = [];
  const fn = (s) => got.push(s);
  const unsubscribe = client.on('state', fn);
  client.start();
  unsubscribe();
  client.stop();
  client.on('state', fn);
  client.off('state', fn);
  client.start();
  client.stop();
  assert.deepEqual(got, ['connecting']);
});

test('reconnect() retries at once instead of waiting for the backoff', async () => {
  const t = scriptedTransport();
  const client = makeClient(t, { backoff: { base: 60000, max: 60000 } });
  client.start();
  t.sockets[0].drop();
  assert.equal(client.state, 'reconnecting');
  await tick(20);
  assert.equal(t.sockets.length, 1);
  client.reconnect(); // e.g. from wx.onAppShow or window 'online'
  assert.equal(t.sockets.length, 2);
  client.stop();
});

test('the stored id never moves back; a server whose ids went back (a reset database) is followed', () => {
  const t = scriptedTransport();
  const client = makeClient(t);
  const seen = watch(client);
  client.start();
  t.sockets[0].msg({ type: 'hello', data: { userId: 1, latestId: 3 } });
  t.sockets[0].msg(note(2, 1));
  t.storage.set('leadpush.lastId:1', '9'); // another tab of the same site got further
  t.sockets[0].msg(note(3, 2));
  assert.equal(t.storage.get('leadpush.lastId:1'), '9');
  client.stop();

  const reset = scriptedTransport();
  reset.storage.set('leadpush.lastId:1', '500');
  const fresh = makeClient(reset);
  const seen2 = watch(fresh);
  fresh.start();
  reset.sockets[0].msg({ type: 'hello', data: { userId: 1, latestId: 4 } });
  assert.deepEqual(reset.sockets[0].sent[0], { type: 'resume', after: 4 });
  reset.sockets[0].msg({ type: 'unread', data: { unread: 0 } });
  reset.sockets[0].msg(note(5, 4));
  assert.deepEqual(seen2.ids, [5]);
  assert.deepEqual(seen.ids, [2, 3]);
  fresh.stop();
});

test('reconnect() on an open socket pings it (an answer keeps it)', async () => {
  const t = scriptedTransport();
  const client = makeClient(t);
  client.start();
  t.sockets[0].msg({ type: 'hello', data: { userId: 1, latestId: 0 } });
  t.sockets[0].msg({ type: 'unread', data: { unread: 0 } });
  client.reconnect();
  assert.deepEqual(t.sockets[0].sent.at(-1), { type: 'ping' });
  t.sockets[0].msg({ type: 'pong' }); // alive
  await tick(20);
  assert.equal(t.sockets.length, 1);
  client.stop();
});

test("a refused request rejects with the envelope's top-level code and message; a non-envelope is http_error", async () => {
  const t = scriptedTransport({ sockets: false });
  const client = makeClient(t);
  const refused = client.markRead([1]);
  t.pending('/api/notifications/read')[0].answer(409, { success: false, message: '线索已被他人修改', code: 'version_conflict', data: { version: 3 } });
  await assert.rejects(refused, (e) => {
    assert.equal(e.name, 'LeadpushError');
    assert.deepEqual([e.status, e.code, e.message, e.data], [409, 'version_conflict', '线索已被他人修改', { version: 3 }]);
    return true;
  });
  const proxied = client.markRead([1]);
  t.pending('/api/notifications/read')[1].answer(502, null); // a proxy's HTML error page
  await assert.rejects(proxied, (e) => {
    assert.deepEqual([e.status, e.code, e.message, e.data], [502, 'http_error', '请求失败（HTTP 502）', null]);
    return true;
  });
});
