// The mini-program path, end to end: the client on wxTransport(wx) with a `wx` shim built on
// Node's WebSocket and fetch, against a real leadpush server started here.
import '../testing/websocket.mjs';
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createClient, wxTransport } from '../src/leadpush-client.mjs';
import { LeadpushServer, TEMPLATE_ID, assertStrictlyIncreasing, freePort, record, sleep, waitFor } from '../testing/server.mjs';
import { createWx } from '../testing/wx-shim.mjs';

let server;
let manager;
let users; // sales users, one or two per test
let refusedUrl;
const clients = [];

before(async () => {
  server = await new LeadpushServer().start();
  [manager, ...users] = await server.createUsers([
    ['王经理', 'manager'],
    ['李丽', 'sales'],
    ['赵敏', 'sales'],
    ['钱多', 'sales'],
    ['孙悦', 'sales'],
    ['周芳', 'sales'],
    ['吴昊', 'sales'],
    ['郑爽', 'sales'],
  ]);
  refusedUrl = `ws://127.0.0.1:${await freePort()}/ws`; // nothing listens there: connection refused
});

after(async () => {
  clients.forEach((c) => c.stop());
  await server.close();
});

function makeClient(user, wx, extra = {}) {
  const client = createClient({
    baseUrl: server.url,
    token: user.token,
    transport: wxTransport(wx),
    pollWait: 5,
    backoff: { base: 100, max: 800 },
    upgradeInterval: 1500,
    ...extra,
  });
  clients.push(client);
  return client;
}

test('receives an assignment, acks it and marks it read', async () => {
  const sales = users[0];
  const wx = createWx({ refusedUrl });
  const client = makeClient(sales, wx);
  const seen = record(client);
  client.start();
  await waitFor(() => client.state === 'open', { what: 'state open' });
  assert.deepEqual(seen.states, ['connecting', 'open']);
  await waitFor(() => seen.unread.length === 1, { what: 'initial unread' });
  assert.equal(client.unread, 0);

  const lead = await server.assignLead(manager, sales.id, '张三', '13812345678', '抖音');
  await waitFor(() => seen.notifications.length === 1, { what: 'the assignment' });
  const n = seen.notifications[0];
  assert.equal(n.type, 'customer_assigned');
  assert.equal(n.data.customerId, lead.id);
  assert.equal(n.data.customerName, '张三');
  assert.equal(n.data.customerPhone, '13812345678');
  assert.equal(n.data.source, '抖音');
  assert.match(n.data.assignTime, /^\d{4}-\d\d-\d\dT/);
  assert.ok(n.title && n.createdAt);
  assert.equal('prevId' in n, false);
  await waitFor(() => client.unread === 1, { what: 'unread 1' });

  // Shown means delivered: the client acked it over the socket.
  await waitFor(async () => (await server.notificationsOf(sales))[0].deliveredAt, { what: 'deliveredAt' });
  // The last id is kept in wx storage, per user.
  assert.equal(wx.getStorageSync(`leadpush.lastId:${sales.id}`), String(n.id));

  assert.equal(await client.markRead([n.id]), 0);
  assert.equal(client.unread, 0);
  assert.deepEqual(seen.unread, [0, 1, 0]);
  assert.ok((await server.notificationsOf(sales))[0].readAt);
  client.stop();
  assert.equal(client.state, 'stopped');
});

test('survives the server being restarted: misses nothing, shows nothing twice', async () => {
  // Two clients watch the same restart: one keeps retrying its socket, the other gives up on
  // it quickly and long-polls until the socket works again.
  const watchers = [
    { user: users[1], opts: { fallbackAfter: 1000 } },
    { user: users[2], opts: { fallbackAfter: 2 } },
  ].map(({ user, opts }) => {
    const wx = createWx({ refusedUrl });
    const client = makeClient(user, wx, opts);
    return { user, wx, client, seen: record(client) };
  });
  const assignAll = (name) => Promise.all(watchers.map((w) => server.assignLead(manager, w.user.id, name)));
  // On a time-out, say what each client saw (states, names) and what the server logged.
  const allHave = (count, what) =>
    waitFor(() => watchers.every((w) => w.seen.notifications.length === count), { what, timeout: 15000 }).catch((e) => {
      const saw = watchers.map((w) => `[${w.seen.states.join('>')}] ${w.seen.notifications.map((n) => n.data.customerName).join(',')}`);
      throw new Error(`${e.message}\n${saw.join('\n')}\nserver log:\n${server.log.slice(-4000)}`);
    });

  watchers.forEach((w) => w.client.start());
  await waitFor(() => watchers.every((w) => w.client.state === 'open'), { what: 'open' });
  await assignAll('线索1');
  await allHave(1, 'the first lead');

  await server.kill();
  await waitFor(() => watchers.every((w) => w.client.state === 'reconnecting' || w.client.state === 'polling'), {
    what: 'the clients to notice',
  });
  await sleep(1000); // long enough for the second client to fall back to polling
  await server.start(); // same port, same database
  await assignAll('线索2'); // perhaps before a client is back: replayed on resume
  await assignAll('线索3');
  await waitFor(() => watchers.every((w) => w.client.state === 'open'), { what: 'both back on WebSocket', timeout: 15000 });
  await assignAll('线索4'); // live
  await allHave(4, 'all four');
  await sleep(300); // would a duplicate come late?
  for (const w of watchers) {
    const onServer = (await server.notificationsOf(w.user)).map((n) => n.id);
    assert.deepEqual(w.seen.ids(), onServer);
    assert.deepEqual(
      w.seen.notifications.map((n) => n.data.customerName),
      ['线索1', '线索2', '线索3', '线索4'],
    );
    assertStrictlyIncreasing(w.seen.ids());
  }
  assert.ok(watchers[0].seen.states.includes('reconnecting'));
  assert.ok(!watchers[0].seen.states.includes('polling'));
  assert.ok(watchers[1].seen.states.includes('polling'), watchers[1].seen.states.join(','));

  // The app restarts: a new client on the same storage shows only what is new.
  const { user, wx, client, seen } = watchers[0];
  client.stop();
  await server.assignLead(manager, user.id, '关闭期间的线索');
  const again = makeClient(user, wx);
  const seen2 = record(again);
  again.start();
  await waitFor(() => seen2.notifications.length === 1, { what: 'the one assigned while closed' });
  assert.equal(seen2.notifications[0].data.customerName, '关闭期间的线索');
  await server.assignLead(manager, user.id, '重启后的线索');
  await waitFor(() => seen2.notifications.length === 2, { what: 'a live one' });
  await sleep(200);
  assert.equal(seen2.notifications.length, 2);
  assert.deepEqual([...seen.ids(), ...seen2.ids()], (await server.notificationsOf(user)).map((n) => n.id));
  watchers.forEach((w) => w.client.stop());
  again.stop();
});

test('falls back to long-polling when WebSocket is refused, and upgrades back', async () => {
  const sales = users[3];
  const wx = createWx({ refusedUrl });
  wx.refuseSockets = true;
  const client = makeClient(sales, wx, { fallbackAfter: 2, upgradeInterval: 800 });
  const seen = record(client);
  client.start();
  await waitFor(() => client.state === 'polling', { what: 'polling' });
  assert.equal(client.mode, 'poll');
  const lead = await server.assignLead(manager, sales.id, '轮询线索');
  await waitFor(() => seen.notifications.length === 1, { what: 'the assignment over long-polling' });
  assert.equal(seen.notifications[0].data.customerId, lead.id);
  assert.equal(client.mode, 'poll');
  assert.equal(client.unread, 1);
  await waitFor(async () => (await server.notificationsOf(sales))[0].deliveredAt, { what: 'acked over HTTP' });
  const probes = wx.sockets.length;
  await waitFor(() => wx.sockets.length > probes, { what: 'another WebSocket probe while polling' });
  assert.equal(client.state, 'polling');

  wx.refuseSockets = false; // the network lets sockets through again
  // The probe's socket makes the server re-check the user's tokens: that must not end the long poll
  // (it once did, with 401, and the client stopped for good), so fail fast on 'unauthorized'.
  await waitFor(() => client.state === 'open' || client.state === 'unauthorized', {
    what: 'upgrade to WebSocket',
    timeout: 30000,
  });
  assert.equal(client.state, 'open', seen.states.join(','));
  assert.equal(client.mode, 'ws');
  await server.assignLead(manager, sales.id, '升级后的线索');
  await waitFor(() => seen.notifications.length === 2, { what: 'the live one' });
  await sleep(200);
  assert.deepEqual(seen.ids(), (await server.notificationsOf(sales)).map((n) => n.id));
  client.stop();
});

test('a connectSocket that fails (its fail callback) also ends in long-polling', async () => {
  const sales = users[5];
  const wx = createWx({ refusedUrl });
  wx.failSockets = true;
  const client = makeClient(sales, wx, { fallbackAfter: 2 });
  const seen = record(client);
  client.start();
  await waitFor(() => client.state === 'polling', { what: 'polling' });
  await server.assignLead(manager, sales.id, '域名未配置');
  await waitFor(() => seen.notifications.length === 1, { what: 'the assignment' });
  assert.equal(seen.notifications[0].data.customerName, '域名未配置');
  client.stop();
});

test('requestCredits posts the subscribe result; the server counts one credit', async () => {
  const sales = users[4];
  const wx = createWx({ refusedUrl, subscribeResult: { errMsg: 'requestSubscribeMessage:ok', [TEMPLATE_ID]: 'accept' } });
  const client = makeClient(sales, wx);
  let inTap = true;
  let calledInTap = null;
  wx.onSubscribeCall = () => (calledInTap = inTap);
  const answer = client.requestCredits([TEMPLATE_ID]); // as in a tap handler
  inTap = false;
  assert.equal(calledInTap, true, 'wx.requestSubscribeMessage is called synchronously, inside the tap');
  assert.deepEqual(wx.subscribeCalls, [[TEMPLATE_ID]]);
  const data = await answer;
  assert.equal(data.templateId, TEMPLATE_ID);
  assert.equal(data.added, 1);
  assert.equal(data.credits, 1);
  const mine = await server.api(sales.token, 'GET', '/api/wechat/subscriptions');
  assert.equal(mine.credits, 1);
  assert.deepEqual(mine.templates, { [TEMPLATE_ID]: 1 });
});

test('a ban is kept: the answer and credits() tell the mini program to re-enable in the settings', async () => {
  const sales = users[6];
  const wx = createWx({ refusedUrl, subscribeResult: { errMsg: 'requestSubscribeMessage:ok', [TEMPLATE_ID]: 'ban' } });
  const client = makeClient(sales, wx);
  const before = await client.credits();
  assert.equal(before.credits, 0);
  assert.equal(before.prompt, 'ask_again', 'no credit yet: ask');
  const answer = await client.requestCredits([TEMPLATE_ID]);
  assert.equal(answer.added, 0);
  assert.equal(answer.prompt, 'enable_in_settings');
  assert.match(answer.hint, /设置/);
  const mine = await client.credits();
  assert.equal(mine.prompt, 'enable_in_settings');
  assert.equal(mine.subscriptions[TEMPLATE_ID].lastResult, 'ban');
  assert.equal(typeof mine.subscriptions[TEMPLATE_ID].lastResultAt, 'string');
});

test("a subscribe result the server refuses rejects with the server's code and message", async () => {
  const sales = users[4];
  const badId = 'T'.repeat(129); // template ids are at most 128 characters
  const wx = createWx({ refusedUrl, subscribeResult: { errMsg: 'requestSubscribeMessage:ok', [badId]: 'accept' } });
  const client = makeClient(sales, wx);
  await assert.rejects(client.requestCredits([badId]), (e) => {
    assert.equal(e.status, 422);
    assert.equal(e.code, 'validation_error');
    assert.equal(e.message, '模板 ID 格式不正确');
    return true;
  });
});

test('a bad token ends in state "unauthorized", without reconnecting', async () => {
  const wx = createWx({ refusedUrl });
  const client = makeClient({ token: 'lp_not-a-token' }, wx);
  const seen = record(client);
  client.start();
  await waitFor(() => client.state === 'unauthorized', { what: 'unauthorized' });
  await sleep(500);
  assert.equal(wx.sockets.length, 1);
  assert.deepEqual(seen.states, ['connecting', 'unauthorized']);
  await assert.rejects(client.markRead(), (e) => e.code === 'unauthorized' && e.status === 401);
});
