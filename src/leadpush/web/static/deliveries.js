// /console/deliveries (消息发送记录, the delivery monitor): counters per channel and status (refreshed every few
// seconds), the delivery ledger with filters, and a 重新发送 (retry) button on failed / dead deliveries (admins).
// 发送经过 opens a row's attempt history under it (each try: time, result, errcode, explanation, worker); a
// held row says why it waits (holdReason), a merged one which delivery carries it (已合并到 #N).
// The page says 发送方式 for channel, 发送失败（已停止重试） for dead, 对接系统推送 for webhook: plain words for a
// sales manager (common.js LABELS); the API's values are unchanged.
import { api, boot, clear, fillOptions, fmtTime, formValues, fromUrl, h, label, pill, say, sayError, toUrl } from './common.js';
import { Pager } from './leadtable.js';

const me = await boot({ roles: ['admin', 'manager'] });
const isAdmin = me.role === 'admin';
const REFRESH_MS = 3000;
const RETRYABLE = ['dead', 'failed', 'skipped'];
const FINAL = ['sent', 'dead', 'skipped', 'merged'];
const PAGE_SIZE = 50;
const form = document.getElementById('filters');
const tbody = document.querySelector('#deliveries tbody');

fillOptions(document.getElementById('f-status'), 'deliveryStatus');
fillOptions(document.getElementById('f-channel'), 'channel');
document.getElementById('retry-hint').hidden = isAdmin;
const params = fromUrl(form, ['status', 'channel']);
let page = Math.max(1, Number(params.get('page')) || 1);
const pager = new Pager((p) => load(p));

async function loadCounters() {
  const { data } = await api('/console/api/delivery-stats');
  const table = document.getElementById('counters');
  const head = clear(table.querySelector('thead'));
  head.appendChild(h('tr', {}, h('th', { scope: 'col', text: '发送方式' }),
    data.statuses.map((s) => h('th', { scope: 'col', text: label('deliveryStatus', s) })),
    h('th', { scope: 'col', text: '合计' })));
  const counts = new Map(data.counts.map((c) => [`${c.channel}/${c.status}`, c.count]));
  const body = clear(table.querySelector('tbody'));
  for (const channel of data.channels) {
    const cells = data.statuses.map((s) => counts.get(`${channel}/${s}`) ?? 0);
    const total = cells.reduce((a, b) => a + b, 0);
    body.appendChild(h('tr', { dataset: { channel } },
      h('th', { scope: 'row', text: label('channel', channel) }),
      cells.map((n, i) => h('td', { class: 'num', dataset: { status: data.statuses[i] }, text: n })),
      h('td', { class: 'num', text: total })));
  }
  document.getElementById('counters-updated').textContent = `每 ${REFRESH_MS / 1000} 秒自动刷新`;
}

function statusCell(d) {
  return h('td', { class: 'status-cell', tabindex: -1 }, pill('deliveryStatus', d.status));
}

function historyId(d) {
  return `history-${d.id}`;
}

function actionCell(d, tr) {
  const td = h('td', { class: 'action-cell' });
  const open = Boolean(document.getElementById(historyId(d)));
  const toggle = h('button', {
    type: 'button', class: 'history-toggle', text: open ? '收起经过' : '发送经过',
    'aria-expanded': String(open), 'aria-controls': historyId(d), 'aria-label': `第 ${d.id} 条的发送经过`,
  });
  toggle.addEventListener('click', () => toggleHistory(d, tr, toggle));
  td.appendChild(toggle);
  if (isAdmin && RETRYABLE.includes(d.status)) {
    const button = h('button', { type: 'button', class: 'retry', text: '重新发送', 'aria-label': `重新发送第 ${d.id} 条` });
    button.addEventListener('click', () => retry(d, tr, button));
    td.appendChild(button);
  }
  return td;
}

function row(d) {
  const tr = h('tr', { dataset: { deliveryId: d.id, status: d.status } });
  fill(tr, d);
  return tr;
}

function fill(tr, d) {
  clear(tr);
  tr.dataset.status = d.status;
  tr.append(
    h('td', { text: `#${d.id}` }),
    h('td', { class: 'wrap', text: d.title }),
    h('td', { text: d.recipientName }),
    h('td', { text: label('channel', d.channel) }),
    statusCell(d),
    h('td', { text: d.attempts }),
    h('td', { class: 'wrap error-cell', text: explanation(d) }),
    h('td', { text: fmtTime(d.updatedAt) }),
    actionCell(d, tr),
  );
}

// What the 原因 / 说明 cell says: where a merged row went, why a held row waits, what a digest carries,
// else the last error (or, for a skipped row, the policy's reason).
function explanation(d) {
  if (d.status === 'merged') return d.mergedInto ? `已合并到 #${d.mergedInto}` : '已合并';
  const parts = [];
  if (d.holdReason && d.status === 'pending') parts.push(`等待原因：${d.holdReason}`);
  if (d.folds && d.folds.length) parts.push(`合并发送：另含 ${d.folds.length} 条通知`);
  const error = d.lastError || (d.status === 'skipped' ? d.policy || '' : '');
  if (error) parts.push(error);
  return parts.join('；') || '—';
}

function attemptsTable(attempts) {
  if (!attempts.length) return h('p', { class: 'muted', text: '还没有发送记录（尚未发送，或正在发送）' });
  return h('table', { class: 'data attempts' },
    h('caption', { class: 'muted', text: '发送经过（最早的在前）' }),
    h('thead', {}, h('tr', {}, ['次数', '时间', '结果', 'errcode', '说明', '执行进程'].map((t) => h('th', { scope: 'col', text: t })))),
    h('tbody', {}, attempts.map((a) => h('tr', { dataset: { outcome: a.outcome } },
      h('td', { text: `第 ${a.attempt} 次` }),
      h('td', { text: fmtTime(a.finishedAt) }),
      h('td', {}, pill('attemptOutcome', a.outcome)),
      h('td', { class: 'errcode', text: a.errcode ?? '—' }),
      h('td', { class: 'detail', text: a.detail || '—' }),
      h('td', { class: 'worker', text: a.worker || '—' }),
    ))));
}

async function showHistory(d, tr) {
  const colspan = tr.children.length || 9;
  let row = document.getElementById(historyId(d));
  if (!row) {
    row = h('tr', { id: historyId(d), class: 'history-row', dataset: { deliveryId: d.id } },
      h('td', { colspan, text: '正在读取发送经过…' }));
    tr.after(row);
  }
  const { data } = await api(`/api/deliveries/${d.id}`);
  clear(row).appendChild(h('td', { colspan }, attemptsTable(data.attempts)));
}

async function toggleHistory(d, tr, button) {
  const open = document.getElementById(historyId(d));
  if (open) {
    open.remove();
    button.setAttribute('aria-expanded', 'false');
    button.textContent = '发送经过';
    return;
  }
  button.setAttribute('aria-expanded', 'true');
  button.textContent = '收起经过';
  try {
    await showHistory(d, tr);
  } catch (error) {
    document.getElementById(historyId(d))?.remove();
    button.setAttribute('aria-expanded', 'false');
    button.textContent = '发送经过';
    sayError(error);
  }
}

async function retry(d, tr, button) {
  button.disabled = true;
  try {
    const r = await api(`/api/deliveries/${d.id}/retry`, { method: 'POST' });
    say(`${r.message}（第 ${d.id} 条）`);
    fill(tr, r.data);
    tr.querySelector('.status-cell')?.focus(); // the button is gone; keep the keyboard user on this row
    follow(r.data, tr);
    loadCounters().catch(() => {});
  } catch (error) {
    sayError(error);
    button.disabled = false;
  }
}

// After a retry, watch that one delivery until it is final, updating its row in place.
async function follow(d, tr) {
  const until = Date.now() + 60000;
  while (Date.now() < until && tr.isConnected) {
    await new Promise((resolve) => setTimeout(resolve, 700));
    try {
      const { data } = await api('/api/deliveries', { query: { notificationId: d.notificationId, channel: d.channel } });
      const now = data.items.find((x) => x.id === d.id);
      if (!now) return;
      fill(tr, now);
      if (document.getElementById(historyId(now))) showHistory(now, tr).catch(() => {});
      if (FINAL.includes(now.status)) {
        say(`第 ${d.id} 条：${label('deliveryStatus', now.status)}${now.lastError ? '，' + now.lastError : ''}`, now.status !== 'sent');
        return;
      }
    } catch {
      /* keep trying until the deadline */
    }
  }
}

async function load(p = page) {
  page = p;
  const values = formValues(form);
  toUrl({ ...values, page: page > 1 ? page : '' });
  try {
    const { data } = await api('/api/deliveries', { query: { ...values, page, pageSize: PAGE_SIZE } });
    clear(tbody);
    if (!data.items.length) tbody.appendChild(h('tr', { class: 'empty-row' }, h('td', { colspan: 9, text: '没有符合条件的发送记录' })));
    for (const d of data.items) tbody.appendChild(row(d));
    pager.show(data.total, data.page, data.pageSize);
  } catch (error) {
    sayError(error);
  }
}

form.addEventListener('submit', (event) => {
  event.preventDefault();
  load(1);
});

async function tick() {
  try {
    await loadCounters();
  } catch (error) {
    if (error.status !== 401) console.warn('counters', error);
  }
  setTimeout(tick, REFRESH_MS);
}

await load();
await tick();
document.body.dataset.ready = 'true';
