// The live inbox on every console page: the shared leadpush client (clients/js, served as
// /console/static/leadpush-client.mjs) keeps a WebSocket open, resumes after reconnects and falls back to
// long-polling; this module turns its events into toasts, the unread badge and page events.
import { api, getToken, h, label, sessionEnded } from './common.js';

const CLIENT_URL = '/console/static/leadpush-client.mjs';
const TOAST_MS = 10000;
const MAX_TOASTS = 4;

const STATE_TEXT = {
  idle: '未连接', connecting: '连接中', open: '实时', connected: '实时', live: '实时', websocket: '实时',
  polling: '轮询', 'long-polling': '轮询', longpoll: '轮询', reconnecting: '重连中', closed: '已断开',
  offline: '离线', stopped: '已停止', unavailable: '实时不可用', error: '连接错误', unauthorized: '登录失效',
};

let client = null;
let starting = null;
// Set by sign-out: from then on no client is made, and a start still in flight gives up at its next step
// (sign-out wins over a live inbox that was still connecting).
let signedOut = false;
let baselineId = Number.POSITIVE_INFINITY; // notifications at or below this id were there before the page loaded
const seen = new Set();
let resolveRecent;
// The inbox page awaits this: the newest notifications and the unread count when the page opened.
export const recent = new Promise((resolve) => { resolveRecent = resolve; });

export function startLive(me) {
  if (signedOut) return Promise.resolve(null);
  starting ??= start(me);
  return starting;
}

// Whether a start in flight must stop here: signed out meanwhile (or the token is gone).
function abandoned() {
  if (!signedOut && getToken()) return false;
  console.info('live inbox not started: signed out');
  return true;
}

async function start(me) {
  let first = { items: [], latestId: 0, unread: 0 };
  try {
    first = (await api('/console/api/notifications/recent', { query: { limit: 50 } })).data;
  } catch (error) {
    console.warn('could not load recent notifications', error);
  }
  baselineId = first.latestId;
  for (const n of first.items) seen.add(n.id);
  setUnread(first.unread);
  resolveRecent(first);
  if (abandoned()) return null;

  let mod;
  try {
    mod = await import(CLIENT_URL);
  } catch (error) {
    console.error('the shared leadpush client could not be loaded', error);
    setState('unavailable');
    return null;
  }
  if (abandoned()) return null;
  client = mod.createClient({
    baseUrl: location.origin,
    token: getToken(),
    transport: mod.browserTransport(),
    storageKey: 'leadpush.console.lastId', // the client appends the user id
  });
  client.on('notification', onNotification);
  client.on('unread', (count) => setUnread(count));
  client.on('state', (state) => {
    setState(state);
    // The session expired or was revoked (or signed out elsewhere) while the page was open: the server
    // closed the socket with 4401 or answered a long poll 401.
    if (state === 'unauthorized' && !signedOut) sessionEnded();
  });
  addEventListener('online', () => client && client.reconnect()); // back online: do not wait for the backoff
  client.start();
  return client;
}

export function stopLive() {
  signedOut = true;
  if (client) client.stop();
  client = null;
}

function onNotification(n) {
  if (!n || typeof n.id !== 'number' || seen.has(n.id)) return;
  seen.add(n.id);
  // On a device's first start the client replays the whole history; the page already shows the
  // newest of it, so only what arrived since the page opened (live, or replayed after a reconnect)
  // becomes a list entry and a toast.
  if (n.id <= baselineId) return;
  window.dispatchEvent(new CustomEvent('leadpush:notification', { detail: n }));
  // Already read when it arrives: about the user's own action (the server creates those read — a claim
  // is no news to the one who claimed), or read on another device meanwhile. Listed, not popped up.
  if (!n.readAt) showToast(n);
}

export function setUnread(count) {
  const n = Number(count) || 0;
  const badge = document.getElementById('unread-badge');
  const link = document.getElementById('inbox-link');
  if (badge) {
    badge.textContent = n > 99 ? '99+' : String(n);
    badge.hidden = n <= 0;
  }
  if (link) link.setAttribute('aria-label', n > 0 ? `消息，${n} 条未读` : '消息');
  window.dispatchEvent(new CustomEvent('leadpush:unread', { detail: n }));
}

function setState(state) {
  const name = typeof state === 'string' ? state : state?.state ?? state?.status ?? 'idle';
  const node = document.getElementById('live-state');
  if (!node) return;
  const text = STATE_TEXT[name] ?? String(name);
  node.textContent = text;
  node.dataset.state = text === '实时' ? 'open' : text === '轮询' ? 'polling' : name;
  node.title = `实时通知：${text}`;
}

export function targetOf(n) {
  const data = n.data || {};
  if (data.customerId) return { href: `/console/customers/${encodeURIComponent(data.customerId)}`, text: '查看线索' };
  return { href: '/console/inbox', text: '查看消息' };
}

function showToast(n) {
  const box = document.getElementById('toasts');
  if (!box) return;
  const target = targetOf(n);
  const toast = h('div', { class: 'toast', dataset: { notificationId: n.id } },
    h('span', { class: 'title', text: n.title || label('kind', n.type) }),
    h('button', { type: 'button', 'aria-label': '关闭提醒', title: '关闭', text: '×', onclick: () => toast.remove() }),
    n.body ? h('span', { class: 'body', text: n.body }) : null,
    h('a', { href: target.href, text: target.text }),
  );
  box.appendChild(toast);
  while (box.children.length > MAX_TOASTS) box.firstElementChild.remove();
  setTimeout(() => {
    if (!toast.contains(document.activeElement)) toast.remove();
  }, TOAST_MS);
}

// Marks notifications read (all of them when ids is null); answers the new unread count.
export async function markRead(ids) {
  if (client) {
    // The shared client posts /api/notifications/read and emits the new unread count itself.
    return client.markRead(ids ?? undefined);
  }
  const r = await api('/api/notifications/read', { method: 'POST', body: ids ? { ids } : {} });
  setUnread(r.data.unread);
  return r.data.unread;
}
