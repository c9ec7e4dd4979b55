// /console/follow-ups (今日跟进): the leads planned for a day and the overdue ones, by planned time — the
// caller's own, or (managers, admins) their team's.
import { api, boot, clear, customerLink, fmtTime, fromUrl, h, pill, say, sayError, toUrl } from './common.js';

const me = await boot({ roles: ['admin', 'manager', 'sales'] });
const isStaff = me.role === 'admin' || me.role === 'manager';
const form = document.getElementById('plans-form');
const dateInput = document.getElementById('p-date');
const scopeSelect = document.getElementById('p-scope');

function row(item) {
  return h('tr', { dataset: { customerId: item.customerId } },
    h('td', { text: fmtTime(item.plannedAt) }),
    h('td', {}, customerLink(item.customerId, item.customerName)),
    h('td', { text: item.phone }),
    h('td', { text: item.ownerName ?? `#${item.ownerId}` }),
    h('td', { class: 'wrap', text: item.note || '—' }),
    h('td', {}, item.overdue ? pill('', 'dead', '已逾期') : pill('', 'pending', '待跟进')),
  );
}

async function load() {
  const query = {};
  if (dateInput.value) query.date = dateInput.value;
  if (isStaff && scopeSelect.value) query.scope = scopeSelect.value;
  const { data } = await api('/api/follow-up-plans', { query });
  dateInput.value = data.date; // the server's today (LEADPUSH_TIMEZONE) when none was chosen
  toUrl({ date: dateInput.value, scope: isStaff ? scopeSelect.value : '' });
  const tbody = clear(document.querySelector('#plans tbody'));
  if (!data.items.length) tbody.appendChild(h('tr', { class: 'empty-row' }, h('td', { colspan: 6, text: '这一天没有跟进计划' })));
  for (const item of data.items) tbody.appendChild(row(item));
  const overdue = data.items.filter((i) => i.overdue).length;
  document.getElementById('plans-summary').textContent =
    `共 ${data.total} 条${overdue ? `，其中已逾期 ${overdue} 条` : ''}${data.truncated ? '（只显示前面的部分）' : ''}`;
}

fromUrl(form, ['date', 'scope']);
form.addEventListener('submit', (event) => {
  event.preventDefault();
  say('');
  load().catch(sayError);
});

try {
  await load();
} catch (error) {
  sayError(error);
}
document.body.dataset.ready = 'true';
