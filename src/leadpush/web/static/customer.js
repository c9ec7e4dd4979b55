// /console/customers/{id}: one lead — its details, assign (managers), claim / release (sales),
// follow-ups and the history of every ownership change.
import {
  api, assignees, between, boot, clear, duration, fillOptions, fillUserSelect, fmtTime, h, label, pill, say, sayError,
} from './common.js';

const me = await boot();
const staff = me.role !== 'sales';
const id = Number(document.body.dataset.customerId);
let customer = null;

const assignForm = document.getElementById('assign-form');
const assignTo = document.getElementById('assign-to');
const claimButton = document.getElementById('claim');
const releaseForm = document.getElementById('release-form');
const followForm = document.getElementById('follow-up-form');
const planForm = document.getElementById('plan-form');
const planAt = document.getElementById('plan-at');
const planNote = document.getElementById('plan-note');
const planClear = document.getElementById('plan-clear');

// An instant as a datetime-local value in the console's timezone (the API reads a time without an offset in
// LEADPUSH_TIMEZONE, so what is typed is what is meant, whatever the browser's own zone).
const TIMEZONE = document.body.dataset.timezone || 'Asia/Shanghai';
function localInput(iso) {
  const parts = Object.fromEntries(new Intl.DateTimeFormat('en-CA', {
    timeZone: TIMEZONE, year: 'numeric', month: '2-digit', day: '2-digit', hour: '2-digit', minute: '2-digit', hourCycle: 'h23',
  }).formatToParts(new Date(iso)).map((p) => [p.type, p.value]));
  return `${parts.year}-${parts.month}-${parts.day}T${parts.hour}:${parts.minute}`;
}

fillOptions(document.getElementById('fu-status'), 'status');
// The assignee list must be in place before the current owner can be preselected in it.
const assigneesReady = staff
  ? assignees(me).then((users) => fillUserSelect(assignTo, users)).catch(sayError)
  : Promise.resolve();

function info(c) {
  const rows = [
    ['姓名', c.name], ['电话', c.phone], ['来源', c.source || '—'], ['状态', pill('status', c.status)],
    ['负责人', c.inPool ? '公海' : c.ownerName ?? `#${c.ownerId}`], ['分配时间', fmtTime(c.assignedAt)],
    ['最后跟进', fmtTime(c.lastFollowUpAt)], ['下次跟进', fmtTime(c.nextFollowUpAt)],
    ['流转截止', fmtTime(c.transferDueAt)], ['创建时间', fmtTime(c.createdAt)],
    ['备注', c.note || '—'],
  ];
  if (!c.inPool) {
    // Speed to lead of the current ownership: how long its owner took to open it and to follow it up.
    rows.splice(6, 0,
      ['首次打开用时', c.openedAt ? duration(between(c.assignedAt, c.openedAt)) : '未打开'],
      ['首次跟进用时', c.firstFollowUpAt ? duration(between(c.assignedAt, c.firstFollowUpAt)) : '未跟进']);
  }
  const dl = clear(document.getElementById('info'));
  for (const [term, value] of rows) dl.append(h('dt', { text: term }), h('dd', {}, value));
}

async function loadCustomer() {
  const { data } = await api(`/api/customers/${id}`);
  customer = data;
  document.getElementById('customer-name').textContent = data.name;
  document.title = `${data.name} · 线索详情 · leadpush`;
  info(data);
  const mine = data.ownerId === me.id;
  claimButton.hidden = staff || !data.inPool;
  releaseForm.hidden = staff || !mine;
  // Salespeople follow up their own leads; managers and admins may record one on any lead they see.
  followForm.hidden = !(staff || mine);
  showPlan(data, (staff || mine) && !data.inPool);
  if (staff) {
    await assigneesReady;
    assignTo.value = data.ownerId ? String(data.ownerId) : '';
  }
}

// The follow-up plan: shown to everyone who sees the lead, set and cleared by whoever may follow it up
// (a lead in the pool has no owner to remind, so no plan).
function showPlan(c, editable) {
  const current = document.getElementById('plan-current');
  if (c.nextFollowUpAt) {
    clear(current).append(h('strong', { text: fmtTime(c.nextFollowUpAt) }), c.nextFollowUpNote ? ` · ${c.nextFollowUpNote}` : '');
  } else {
    current.textContent = c.inPool ? '公海中的线索没有跟进计划' : '未设置';
  }
  planForm.hidden = !editable;
  planClear.hidden = !c.nextFollowUpAt;
  planAt.value = c.nextFollowUpAt ? localInput(c.nextFollowUpAt) : '';
  planNote.value = c.nextFollowUpNote ?? '';
}

async function loadFollowUps() {
  const list = clear(document.getElementById('follow-ups'));
  const { data } = await api(`/api/customers/${id}/follow-ups`);
  if (!data.length) list.appendChild(h('li', { class: 'muted', text: '还没有跟进记录' }));
  for (const f of [...data].reverse()) {
    list.appendChild(h('li', {},
      h('div', { class: 'meta' }, `${fmtTime(f.createdAt)} · ${f.userName ?? '#' + f.userId}`, f.status ? ' · ' : null, f.status ? pill('status', f.status) : null),
      h('div', { class: 'content', text: f.content }),
    ));
  }
}

async function loadHistory() {
  const tbody = clear(document.querySelector('#history tbody'));
  const { data } = await api(`/api/customers/${id}/assignments`);
  if (!data.length) tbody.appendChild(h('tr', { class: 'empty-row' }, h('td', { colspan: 6, text: '暂无分配记录' })));
  for (const a of data) {
    tbody.appendChild(h('tr', {},
      h('td', { text: fmtTime(a.createdAt) }),
      h('td', { text: label('via', a.via) }),
      h('td', { text: a.fromUserId ? a.fromUserName ?? `#${a.fromUserId}` : '公海' }),
      h('td', { text: a.toUserId ? a.toUserName ?? `#${a.toUserId}` : '公海' }),
      h('td', { text: a.actorId ? a.actorName ?? `#${a.actorId}` : '系统' }),
      h('td', { class: 'wrap', text: a.reason || '—' }),
    ));
  }
}

// What the page says instead of a lead it cannot show. A former owner is told how it left them (the API's
// 404 customer_recycled data: when, which rule or who, to the pool or to a colleague); anyone else only that
// there is no such lead. Either way the empty sections go.
function takenBackText(g) {
  const who = g.via === 'auto_transfer' ? (g.ruleName ? `自动流转规则「${g.ruleName}」` : '自动流转')
    : g.byYou ? '您' : g.actorName ?? '系统';
  const where = !g.toPool ? '转给了其他同事' : g.via === 'release' ? '释放到了公海' : '退回了公海';
  const why = g.reason && g.via !== 'auto_transfer' ? `原因：${g.reason}。` : '';
  return `${fmtTime(g.takenBackAt)}，${who}将这条线索${where}。${why}它已不在您名下，详情不再显示。`;
}

function showUnavailable(error) {
  document.querySelector('.detail-grid').hidden = true;
  const title = document.getElementById('customer-name');
  if (error.code === 'customer_recycled' && error.data) {
    title.textContent = '线索已被收回';
    say(takenBackText(error.data));
  } else if (error.status === 404) {
    title.textContent = '线索不存在';
    say('没有这条线索，或您无权查看。', true);
  } else {
    title.textContent = '线索暂时无法显示';
    sayError(error);
  }
  document.title = `${title.textContent} · leadpush 线索控制台`;
}

async function reloadAll() {
  await loadCustomer();
  await Promise.all([loadFollowUps(), loadHistory()]);
}

assignForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const assignedTo = Number(assignTo.value);
  if (!assignedTo) {
    say('请选择接收线索的人', true);
    return;
  }
  try {
    const r = await api(`/api/customers/${id}/assign`, { method: 'PATCH', body: { assignedTo, version: customer?.version } });
    say(r.message);
    await reloadAll();
  } catch (error) {
    sayError(error);
    if (error.status === 409) await reloadAll().catch(() => {});
  }
});

claimButton.addEventListener('click', async () => {
  try {
    const r = await api(`/api/customers/${id}/claim`, { method: 'POST' });
    say(r.message);
    await reloadAll();
    document.getElementById('fu-content').focus();
  } catch (error) {
    sayError(error);
  }
});

releaseForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const reason = document.getElementById('release-reason').value.trim();
  try {
    const r = await api(`/api/customers/${id}/release`, { method: 'POST', body: reason ? { reason } : {} });
    say(r.message);
    await reloadAll().catch(() => {});
  } catch (error) {
    sayError(error);
  }
});

followForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const content = document.getElementById('fu-content');
  const status = document.getElementById('fu-status');
  const next = document.getElementById('fu-next');
  if (!content.value.trim()) {
    say('请填写跟进内容', true);
    content.focus();
    return;
  }
  try {
    const r = await api(`/api/customers/${id}/follow-ups`, {
      method: 'POST',
      body: {
        content: content.value,
        ...(status.value ? { status: status.value } : {}),
        // A new plan with the follow-up; without one, a plan due today counts as done (the server clears it).
        ...(next.value ? { nextFollowUpAt: next.value } : {}),
      },
    });
    say(r.message);
    content.value = '';
    status.value = '';
    next.value = '';
    await reloadAll();
  } catch (error) {
    sayError(error);
  }
});
planForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  if (!planAt.value) {
    say('请选择下次跟进时间', true);
    planAt.focus();
    return;
  }
  const note = planNote.value.trim();
  try {
    const r = await api(`/api/customers/${id}/follow-up-plan`, { method: 'PUT', body: { at: planAt.value, ...(note ? { note } : {}) } });
    say(r.message);
    await loadCustomer();
  } catch (error) {
    sayError(error);
  }
});

planClear.addEventListener('click', async () => {
  try {
    const r = await api(`/api/customers/${id}/follow-up-plan`, { method: 'DELETE' });
    say(r.message);
    await loadCustomer();
  } catch (error) {
    sayError(error);
  }
});

// Ctrl/⌘+Enter in the follow-up box records it (plain Enter is a new line).
document.getElementById('fu-content').addEventListener('keydown', (event) => {
  if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
    event.preventDefault();
    followForm.requestSubmit();
  }
});

try {
  await loadCustomer();
} catch (error) {
  showUnavailable(error);
}
if (customer) {
  try {
    await Promise.all([loadFollowUps(), loadHistory()]);
  } catch (error) {
    sayError(error);
  }
}
document.body.dataset.ready = 'true';
