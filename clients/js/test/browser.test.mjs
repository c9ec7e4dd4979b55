// The web path: browserTransport() on Node's WebSocket and fetch, with an in-memory
// localStorage, against a real leadpush server started here.
import '../testing/websocket.mjs';
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { browserTransport, createClient } from '../src/leadpush-client.mjs';
import { LeadpushServer, assertStrictlyIncreasing, record, sleep, waitFor } from '../testing/server.mjs';

class MemoryLocalStorage {
  constructor() {
    this.map = new Map();
  }
  getItem(k) {
    return this.map.has(k) ? this.map.get(k) : null;
  }
  setItem(k, v) {
    this.map.set(k, String(v));
  }
  removeItem(k) {
    this.map.delete(k);
  }
}

let server;
let manager;
let users;
const clients = [];

before(async () => {
  server = await new LeadpushServer().start();
  [manager, ...users] = await server.createUsers([
    ['王经理', 'manager'],
    ['李丽', 'sales'],
    ['赵敏', 'sales'],
  ]);
});

after(async () => {
  clients.forEach((c) => c.stop());
  delete globalThis.localStorage;
  await server.close();
});

function makeClient(user, transport, extra = {}) {
  const client = createClient({ baseUrl: server.url, token: user.token, transport, pollWait: 5, backoff: { base: 100, max: 800 }, ...extra });
  clients.push(client);
  return client;
}

test('browser transport: WebSocket, acks, read marks, and the last id in localStorage across reloads', async () => {
  const sales = users[0];
  // The transport's defaults are the page's globals: WebSocket, fetch, localStorage.
  const storage = new MemoryLocalStorage();
  globalThis.localStorage = storage;
  const client = makeClient(sales, browserTransport());
  const seen = record(client);
  client.start();
  await waitFor(() => client.state === 'open', { what: 'open' });
  const lead = await server.assignLead(manager, sales.id, '网页线索', '13900000000', '官网');
  await server.assignLead(manager, sales.id, '网页线索2');
  await waitFor(() => seen.notifications.length === 2, { what: 'two assignments' });
  assert.equal(seen.notifications[0].type, 'customer_assigned');
  assert.equal(seen.notifications[0].data.customerId, lead.id);
  assert.equal(seen.notifications[0].data.source, '官网');
  assert.equal(storage.getItem(`leadpush.lastId:${sales.id}`), String(seen.notifications[1].id));
  await waitFor(async () => (await server.notificationsOf(sales)).every((n) => n.deliveredAt), { what: 'acks' });
  await waitFor(() => client.unread === 2, { what: 'unread 2' });
  assert.equal(await client.markRead(), 0); // all
  assert.equal(client.unread, 0);

  // A reload: a new client on the same localStorage replays nothing, then gets what is new.
  client.stop();
  await server.assignLead(manager, sales.id, '刷新期间的线索');
  const reloaded = makeClient(sales, browserTransport());
  const seen2 = record(reloaded);
  reloaded.start();
  await waitFor(() => seen2.notifications.length === 1, { what: 'the new one' });
  await waitFor(() => reloaded.unread === 1, { what: 'unread after reload' });
  await sleep(200);
  assert.deepEqual(seen2.notifications.map((n) => n.data.customerName), ['刷新期间的线索']);
  const all = [...seen.ids(), ...seen2.ids()];
  assertStrictlyIncreasing(all);
  assert.deepEqual(all, (await server.notificationsOf(sales)).map((n) => n.id));
  reloaded.stop();
  delete globalThis.localStorage;
});

test('browser transport without WebSocket long-polls', async () => {
  const sales = users[1];
  const storage = new MemoryLocalStorage();
  const client = makeClient(sales, browserTransport({ WebSocket: null, localStorage: storage }));
  const seen = record(client);
  client.start();
  await waitFor(() => client.state === 'polling', { what: 'polling' });
  assert.equal(client.mode, 'poll');
  await server.assignLead(manager, sales.id, '只能轮询');
  await waitFor(() => seen.notifications.length === 1, { what: 'the assignment over long-polling' });
  assert.equal(seen.notifications[0].data.customerName, '只能轮询');
  assert.equal(storage.getItem(`leadpush.lastId:${sales.id}`), String(seen.notifications[0].id));
  await waitFor(async () => (await server.notificationsOf(sales))[0].deliveredAt, { what: 'ack over HTTP' });
  assert.equal(await client.markRead(seen.ids()), 0);
  await assert.rejects(client.requestCredits(['TID']), (e) => e.code === 'unsupported');
  client.stop();
  assert.deepEqual(seen.states, ['connecting', 'polling', 'stopped']);
});

test("a refused request rejects with the server's error code and Chinese message, not a generic one", async () => {
  const sales = users[0];
  const client = makeClient(sales, browserTransport({ WebSocket: null, localStorage: new MemoryLocalStorage() }));
  const tooMany = Array.from({ length: 1001 }, (_, i) => i + 1); // the server takes at most 1000 ids
  const error = await client.markRead(tooMany).then(
    () => assert.fail('markRead of 1001 ids should be refused'),
    (e) => e,
  );
  assert.equal(error.name, 'LeadpushError');
  assert.equal(error.status, 422);
  assert.equal(error.code, 'validation_error');
  assert.match(error.message, /^参数错误：ids /);
  assert.ok(Array.isArray(error.data) && error.data[0].field === 'ids', 'the details travel along');
});
