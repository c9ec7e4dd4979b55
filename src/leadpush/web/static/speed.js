// /console/speed: speed to lead (time to open, to first follow-up) per person or team, and the first-contact
// rules (staff): list, create, switch on/off, delete.
import { api, boot, clear, deleteButton, duration, h, pill, ruleTeamField, say, sayError } from './common.js';

const me = await boot({ roles: ['admin', 'manager', 'sales'] });
const isStaff = me.role === 'admin' || me.role === 'manager';

function share(row) {
  if (row.openedWithinSlaShare === null || row.openedWithinSlaShare === undefined) return '—';
  return `${Math.round(row.openedWithinSlaShare * 100)}%（${row.openedWithinSla}/${row.withSla}）`;
}

function reportRow(row, groupBy, tag = 'td') {
  const name = groupBy === 'team' && row.key ? `${row.name} 组` : row.name;
  return h('tr', { dataset: { key: row.key } },
    h(tag, tag === 'th' ? { scope: 'row', text: name } : { text: name }),
    h('td', { text: row.assignments }),
    h('td', { text: row.opened }),
    h('td', { text: duration(row.medianOpenSeconds) }),
    h('td', { text: duration(row.p90OpenSeconds) }),
    h('td', { text: duration(row.medianFollowUpSeconds) }),
    h('td', { text: share(row) }),
    h('td', { text: row.unopened }),
  );
}

// A day in the console's timezone as the ISO instant of its start (the browser's offset is close enough
// for whole days; the API takes any offset).
function dayStart(value) {
  return new Date(`${value}T00:00:00`).toISOString();
}

function isoDay(date) {
  const pad = (n) => String(n).padStart(2, '0');
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
}

const reportForm = document.getElementById('report-form');
const fromInput = document.getElementById('s-from');
const toInput = document.getElementById('s-to');
const today = new Date();
toInput.value = isoDay(today);
fromInput.value = isoDay(new Date(today.getTime() - 6 * 86400000));

async function loadReport() {
  const end = new Date(`${toInput.value}T00:00:00`);
  end.setDate(end.getDate() + 1);
  const query = { from: dayStart(fromInput.value), to: end.toISOString(), groupBy: document.getElementById('s-group').value };
  const { data } = await api('/api/reports/speed-to-lead', { query });
  const tbody = clear(document.querySelector('#report tbody'));
  const tfoot = clear(document.querySelector('#report tfoot'));
  if (!data.rows.length) tbody.appendChild(h('tr', { class: 'empty-row' }, h('td', { colspan: 8, text: '这段时间没有分配记录' })));
  for (const row of data.rows) tbody.appendChild(reportRow(row, data.groupBy));
  if (data.rows.length > 1) tfoot.appendChild(reportRow(data.total, 'person', 'th'));
}

reportForm.addEventListener('submit', (event) => {
  event.preventDefault();
  loadReport().catch(sayError);
});

function minutes(value) {
  return value ? `${value} 分钟` : '—';
}

function ruleRow(rule) {
  const toggle = h('button', { type: 'button', text: rule.enabled ? '停用' : '启用', 'aria-label': `${rule.enabled ? '停用' : '启用'}规则：${rule.name}` });
  toggle.addEventListener('click', async () => {
    try {
      const r = await api(`/api/sla-rules/${rule.id}`, { method: 'PATCH', body: { enabled: !rule.enabled } });
      say(`${r.message}：${rule.name}（${r.data.enabled ? '已启用' : '已停用'}）`);
      await loadRules();
    } catch (error) {
      sayError(error);
    }
  });
  const remove = deleteButton(`删除规则：${rule.name}`, async () => {
    try {
      const r = await api(`/api/sla-rules/${rule.id}`, { method: 'DELETE' });
      say(`${r.message}：${rule.name}`);
      await loadRules();
    } catch (error) {
      sayError(error);
    }
  });
  const reassign = rule.reassignAfterMinutes
    ? `${rule.reassignAfterMinutes} 分钟${rule.reassignAction === 'pool' ? '，退回线索池' : '，改派下一位'}`
    : '—';
  return h('tr', { dataset: { ruleId: rule.id } },
    h('td', { text: rule.name }),
    h('td', { text: rule.team ? `${rule.team} 组` : '全公司' }),
    h('td', { text: rule.sources.join('、') || '全部' }),
    h('td', { text: minutes(rule.remindAfterMinutes) }),
    h('td', { text: minutes(rule.managerAfterMinutes) }),
    h('td', { text: reassign }),
    h('td', {}, pill('', rule.enabled ? 'on' : 'off', rule.enabled ? '启用' : '停用')),
    h('td', { class: 'actions' }, toggle, remove),
  );
}

async function loadRules() {
  const { data } = await api('/api/sla-rules');
  const tbody = clear(document.querySelector('#rules tbody'));
  for (const rule of data) tbody.appendChild(ruleRow(rule));
  document.getElementById('rules-empty').hidden = data.length > 0;
}

const teamSelect = document.getElementById('r-team');
const teamOf = () => (me.role === 'manager' ? me.team ?? '' : teamSelect.value);
const ruleForm = document.getElementById('rule-form');

function optionalMinutes(id) {
  const value = document.getElementById(id).value;
  return value === '' ? null : Number(value);
}

if (isStaff) {
  ruleTeamField(me, teamSelect);
  ruleForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    const body = {
      name: document.getElementById('r-name').value.trim(),
      team: teamOf() || null,
      sources: document.getElementById('r-sources').value.split(/[,，、]/).map((s) => s.trim()).filter(Boolean),
      remindAfterMinutes: optionalMinutes('r-remind'),
      managerAfterMinutes: optionalMinutes('r-manager'),
      reassignAfterMinutes: optionalMinutes('r-reassign'),
      reassignAction: document.getElementById('r-action').value,
    };
    try {
      const r = await api('/api/sla-rules', { method: 'POST', body });
      say(`${r.message}：${r.data.name}`);
      ruleForm.reset();
      document.getElementById('new-rule').open = false;
      await loadRules();
    } catch (error) {
      sayError(error);
    }
  });
}
try {
  await Promise.all([loadReport(), isStaff ? loadRules() : null]);
} catch (error) {
  sayError(error);
}
document.body.dataset.ready = 'true';
