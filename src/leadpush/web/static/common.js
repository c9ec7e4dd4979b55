// Shared by every console page: the token, JSON API calls, safe DOM building, labels, sign-in state.
// Data from the API is only ever put into the page with textContent / text nodes (see h()), never as HTML.

export const TOKEN_KEY = 'leadpush.console.token';

export const LABELS = {
  role: { admin: '管理员', manager: '经理', sales: '销售' },
  status: { new: '新线索', following: '跟进中', won: '已成交', lost: '已流失', invalid: '无效' },
  via: {
    web: '网页分配', miniprogram: '小程序分配', batch: '批量分配', public_pool: '公海分配',
    claim: '领取', release: '释放', auto_transfer: '自动流转', route: '分配规则', escalation: '超时改派',
  },
  deliveryStatus: {
    pending: '待发送', sending: '发送中', sent: '已发送', failed: '发送失败（稍后自动重试）', dead: '发送失败（已停止重试）', skipped: '未发送',
    merged: '已合并',
  },
  // One try of a delivery (its attempt history): what the channel answered.
  attemptOutcome: { sent: '已发送', retry: '失败，稍后重试', permanent: '无法发送', skipped: '未发送' },
  channel: { inapp: '站内消息', wechat: '微信订阅消息', wecom: '企业微信', webhook: '对接系统推送' },
  condition: {
    no_follow_up_after_assign: '分配后未跟进', no_follow_up_since_last: '距上次跟进超时', not_won_within: '限期未成交',
  },
  action: { public_pool: '退回公海', round_robin: '团队内轮流分配', user: '转给指定人' },
  trigger: { cron: '定时', manual: '手动', deadline: '到期' },
  kind: {
    customer_assigned: '新线索', customers_assigned: '新线索（批量）', customer_recycled: '线索收回',
    customers_recycled: '线索收回（批量）', transfer_warning: '流转预警', lead_duplicate: '客户再次咨询',
    sla_reminder: '首次联系提醒', sla_escalated: '首次联系超时', followup_due: '跟进提醒',
  },
};

export function label(group, value) {
  if (value === null || value === undefined || value === '') return '—';
  return (LABELS[group] && LABELS[group][value]) || String(value);
}

export function getToken() {
  try { return localStorage.getItem(TOKEN_KEY); } catch { return null; }
}

export function setToken(token) { localStorage.setItem(TOKEN_KEY, token); }

export function clearToken() {
  try { localStorage.removeItem(TOKEN_KEY); } catch { /* storage unavailable */ }
}

export class ApiError extends Error {
  constructor(status, code, message, data) {
    super(message);
    this.status = status;
    this.code = code;
    this.data = data ?? null;
  }
}

// The error for an answer that is not a success. The error envelope is {success: false, message, code, data}:
// code and message are at its top level (data holds details). Not an envelope (a proxy's error page):
// http_error. The same rule as the client kit's errorFromAnswer (clients/js), so the page's own calls and the
// live inbox's report one error the same way (tests/test_console.py checks they agree).
function errorFromAnswer(status, json) {
  const isEnvelope = json !== null && typeof json === 'object';
  const message = isEnvelope && typeof json.message === 'string' && json.message ? json.message : `请求失败（HTTP ${status}）`;
  const code = isEnvelope && typeof json.code === 'string' && json.code ? json.code : 'http_error';
  return new ApiError(status, code, message, isEnvelope ? json.data : null);
}

// The sign-in page, coming back here afterwards. expired: the session ended (expired, revoked, signed out
// elsewhere) while the page was open; the sign-in page says so.
export function loginUrl({ expired = false } = {}) {
  const next = location.pathname + location.search;
  const params = new URLSearchParams();
  if (next.startsWith('/console') && !next.startsWith('/console/login')) params.set('next', next);
  if (expired) params.set('expired', '1');
  const qs = params.toString();
  return '/console/login' + (qs ? '?' + qs : '');
}

// Forgets the session and goes to the sign-in page, which says the session has ended.
export function sessionEnded() {
  clearToken();
  location.assign(loginUrl({ expired: true }));
}

// Calls the JSON API with the stored token; answers the envelope ({success, message, data}) or throws ApiError
// (status, code, message, data). A 401 for the stored token means the session has ended: the page goes to the
// sign-in page (unless signInOn401 is false). `raw` (a Blob or string) is sent as-is with `contentType` instead of
// a JSON body: a file upload.
export async function api(path, { method = 'GET', body, raw, contentType, token = getToken(), query, signInOn401 = true } = {}) {
  const headers = { Accept: 'application/json' };
  if (token) headers.Authorization = 'Bearer ' + token;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (raw !== undefined) headers['Content-Type'] = contentType || 'application/octet-stream';
  let url = path;
  if (query) {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query)) {
      if (value !== undefined && value !== null && value !== '') params.set(key, String(value));
    }
    const qs = params.toString();
    if (qs) url += (url.includes('?') ? '&' : '?') + qs;
  }
  let response;
  try {
    const payload = raw !== undefined ? raw : body === undefined ? undefined : JSON.stringify(body);
    response = await fetch(url, { method, headers, body: payload });
  } catch {
    throw new ApiError(0, 'network_error', '网络错误，请检查连接后重试');
  }
  let json = null;
  try { json = await response.json(); } catch { /* not JSON */ }
  if (response.status === 401 && token && signInOn401) {
    sessionEnded();
    throw new ApiError(401, 'unauthorized', '登录已失效，请重新登录');
  }
  if (!response.ok || !json || json.success === false) throw errorFromAnswer(response.status, json);
  return json;
}

// Builds an element. props: class, text, dataset, on<Event> handlers, anything else as an attribute.
// Children: strings (become text nodes), nodes, arrays, null/false (skipped).
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = String(value);
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') node.addEventListener(key.slice(2).toLowerCase(), value);
    else if (value === true) node.setAttribute(key, '');
    else node.setAttribute(key, String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else if (child instanceof Node) node.appendChild(child);
    else node.appendChild(document.createTextNode(String(child)));
  }
}

export function clear(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
  return node;
}

const TIMEZONE = document.body.dataset.timezone || 'Asia/Shanghai';
let formatter;
try {
  formatter = new Intl.DateTimeFormat('zh-CN', {
    timeZone: TIMEZONE, year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', hour12: false,
  });
} catch {
  formatter = new Intl.DateTimeFormat('zh-CN', { dateStyle: 'short', timeStyle: 'short' });
}

export function fmtTime(iso) {
  if (!iso) return '—';
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : formatter.format(date);
}

// Seconds as people say them: 45 秒, 3 分钟, 1 小时 5 分, 2 天 3 小时.
export function duration(seconds) {
  if (seconds === null || seconds === undefined) return '—';
  const s = Math.round(seconds);
  if (s < 60) return `${s} 秒`;
  if (s < 3600) return `${Math.floor(s / 60)} 分钟`;
  if (s < 86400) {
    const m = Math.floor((s % 3600) / 60);
    return `${Math.floor(s / 3600)} 小时${m ? ` ${m} 分` : ''}`;
  }
  const hours = Math.floor((s % 86400) / 3600);
  return `${Math.floor(s / 86400)} 天${hours ? ` ${hours} 小时` : ''}`;
}

// From one ISO instant to another, as a duration (null while the second has not happened).
export function between(fromIso, toIso) {
  if (!fromIso || !toIso) return null;
  return (new Date(toIso).getTime() - new Date(fromIso).getTime()) / 1000;
}

export function pill(kind, value, text) {
  return h('span', { class: `pill ${value ?? ''}`, text: text ?? label(kind, value) });
}

// A role="status" line: message, or error (red) when isError.
export function say(text, isError = false, target = document.getElementById('page-status')) {
  if (!target) return;
  target.textContent = text || '';
  target.classList.toggle('error', Boolean(isError));
}

export function sayError(error, target) {
  say(error instanceof ApiError || error instanceof Error ? error.message : String(error), true, target);
}

let mePromise = null;

// Every signed-in page starts here: checks the token, fills the header, starts the live inbox.
// roles: which roles may use the page (others get a notice instead of a broken page).
export async function boot({ roles } = {}) {
  if (!getToken()) {
    location.replace(loginUrl());
    return new Promise(() => {}); // navigating away
  }
  mePromise ??= api('/api/me').then((r) => r.data);
  let me;
  try {
    me = await mePromise;
  } catch (error) {
    sayError(error);
    throw error;
  }
  document.body.dataset.role = me.role;
  for (const item of document.querySelectorAll('[data-roles]')) {
    item.hidden = !item.dataset.roles.split(' ').includes(me.role);
  }
  const isStaff = me.role === 'admin' || me.role === 'manager';
  for (const node of document.querySelectorAll('.staff-only')) node.hidden = !isStaff;
  for (const node of document.querySelectorAll('.sales-only')) node.hidden = me.role !== 'sales';
  const name = document.getElementById('me-name');
  if (name) name.textContent = `${me.name}（${label('role', me.role)}）`;
  document.getElementById('sign-out')?.addEventListener('click', signOut);
  import('./live.js').then((live) => live.startLive(me)).catch((error) => {
    console.error('live inbox failed to start', error);
  });
  if (roles && !roles.includes(me.role)) {
    for (const node of document.querySelectorAll('main > :not(h1):not(#page-status)')) node.hidden = true;
    say('您的角色无权使用此页面。', true);
    return new Promise(() => {}); // the page's own script stops here
  }
  return me;
}

// Sign-out: the live inbox stops first (so the server closing its socket is not taken for an ended session),
// then the server ends the session (POST /api/auth/logout closes its sockets and long polls everywhere), then
// the page forgets the token. A session the server no longer knows, or an unreachable server, still signs
// this browser out.
export async function signOut() {
  const button = document.getElementById('sign-out');
  if (button) button.disabled = true;
  try {
    const live = await import('./live.js');
    live.stopLive();
  } catch { /* never started */ }
  const token = getToken();
  if (token) {
    try {
      await api('/api/auth/logout', { method: 'POST', token, signInOn401: false });
    } catch (error) {
      console.warn('sign-out: the server did not end the session', error.code);
    }
  }
  clearToken();
  location.assign('/console/login?signedOut=1');
}

// Users a manager or admin may assign to: active salespeople first, then other staff.
export async function assignees(me) {
  const users = (await api('/api/users')).data.filter((u) => u.active);
  const visible = me.role === 'admin' ? users : users.filter((u) => u.team === me.team);
  return visible.sort((a, b) => (a.role === 'sales' ? 0 : 1) - (b.role === 'sales' ? 0 : 1) || a.id - b.id);
}

export function fillUserSelect(select, users) {
  for (const u of users) {
    select.appendChild(h('option', { value: u.id, text: `${u.name}（${label('role', u.role)}${u.team ? ' · ' + u.team + ' 组' : ''}）` }));
  }
}

export function fillOptions(select, group) {
  for (const [value, text] of Object.entries(LABELS[group])) select.appendChild(h('option', { value, text }));
}

export function customerLink(id, name) {
  return h('a', { href: `/console/customers/${encodeURIComponent(id)}`, text: name });
}

// Read filter fields from a form into an object, and back from the URL.
export function formValues(form) {
  const out = {};
  for (const el of form.elements) {
    if (el.name && !el.disabled && el.type !== 'submit') out[el.name] = el.value.trim();
  }
  return out;
}

export function fromUrl(form, names) {
  const params = new URLSearchParams(location.search);
  for (const name of names) {
    const el = form.elements.namedItem(name);
    if (el && params.has(name)) el.value = params.get(name);
  }
  return params;
}

export function toUrl(values) {
  const params = new URLSearchParams();
  for (const [k, v] of Object.entries(values)) if (v !== '' && v !== undefined && v !== null) params.set(k, String(v));
  const qs = params.toString();
  history.replaceState(null, '', location.pathname + (qs ? '?' + qs : ''));
}

// A 删除 button that asks twice, in the page (no native dialog): the first click turns it into 确认删除？ for
// five seconds, a second click within them runs `onConfirm`.
export function deleteButton(ariaLabel, onConfirm) {
  const button = h('button', { type: 'button', class: 'danger', text: '删除', 'aria-label': ariaLabel });
  let armed = null;
  button.addEventListener('click', async () => {
    if (!armed) {
      button.textContent = '确认删除？';
      armed = setTimeout(() => { armed = null; button.textContent = '删除'; }, 5000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    button.textContent = '删除';
    await onConfirm();
  });
  return button;
}

// A team-scoped rule form's team (#r-team-field / #r-team-fixed): managers' rules are always their own
// team's, so they read it as text; admins choose among the real teams.
export function ruleTeamField(me, teamSelect) {
  if (me.role === 'manager') {
    document.getElementById('r-team-field').hidden = true;
    document.getElementById('r-team-fixed').hidden = false;
    document.getElementById('r-team-text').textContent = me.team ? `${me.team} 组（经理的规则只适用于本团队）` : '未分配团队（无法创建规则）';
    return;
  }
  api('/api/teams').then(({ data }) => {
    for (const t of data) teamSelect.appendChild(h('option', { value: t.name, text: `${t.name} 组` }));
  }).catch(sayError);
}
