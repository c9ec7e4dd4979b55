// /console/transfer: automatic-transfer rules, "run now" behind a dry-run preview, and run history.
import {
  api, assignees, boot, clear, deleteButton, fillOptions, fillUserSelect, fmtTime, h, label, LABELS, pill, say, sayError,
} from './common.js';

const me = await boot({ roles: ['admin', 'manager'] });
const rulesBody = document.querySelector('#rules tbody');
const form = document.getElementById('rule-form');
const actionSelect = document.getElementById('r-action');
const targetField = document.getElementById('r-target-field');
const teamSelect = document.getElementById('r-team');

fillOptions(document.getElementById('r-condition'), 'condition');
fillOptions(actionSelect, 'action');
for (const [value, text] of Object.entries(LABELS.status)) {
  const id = `r-exempt-${value}`;
  document.getElementById('r-exempt').appendChild(h('label', { for: id },
    h('input', { type: 'checkbox', id, name: 'exempt', value, checked: value === 'won' }), text));
}
// The team a rule applies to. An admin picks one of the real teams (or the whole company); a manager's rules
// are always their own team's, so they read it as text rather than a field they cannot change.
const teamOf = () => (me.role === 'manager' ? me.team ?? '' : teamSelect.value);
if (me.role === 'manager') {
  document.getElementById('r-team-field').hidden = true;
  document.getElementById('r-team-fixed').hidden = false;
  document.getElementById('r-team-text').textContent = me.team ? `${me.team} 组（经理的规则只适用于本团队）` : '未分配团队（无法创建规则）';
} else {
  api('/api/teams').then(({ data }) => {
    for (const t of data) teamSelect.appendChild(h('option', { value: t.name, text: `${t.name} 组` }));
  }).catch(sayError);
}
assignees(me).then((users) => fillUserSelect(document.getElementById('r-target'), users.filter((u) => u.role === 'sales')))
  .catch(sayError);
actionSelect.addEventListener('change', () => { targetField.hidden = actionSelect.value !== 'user'; });

function hours(value) {
  if (value === null || value === undefined) return '—';
  return value >= 24 && value % 24 === 0 ? `${value / 24} 天` : `${Math.round(value * 100) / 100} 小时`;
}

function ruleRow(rule) {
  const toggle = h('button', { type: 'button', text: rule.enabled ? '停用' : '启用', 'aria-label': `${rule.enabled ? '停用' : '启用'}规则：${rule.name}` });
  toggle.addEventListener('click', async () => {
    try {
      const r = await api(`/api/auto-transfer/rules/${rule.id}`, { method: 'PATCH', body: { enabled: !rule.enabled } });
      say(`${r.message}：${rule.name}（${r.data.enabled ? '已启用' : '已停用'}）`);
      await loadRules();
    } catch (error) {
      sayError(error);
    }
  });
  // Deleting asks twice, in the page (no native dialog).
  const remove = deleteButton(`删除规则：${rule.name}`, async () => {
    try {
      const r = await api(`/api/auto-transfer/rules/${rule.id}`, { method: 'DELETE' });
      say(`${r.message}：${rule.name}`);
      await loadRules();
    } catch (error) {
      sayError(error);
    }
  });
  const action = rule.action === 'user' ? `${label('action', rule.action)}：${rule.targetUserName ?? '—'}` : label('action', rule.action);
  return h('tr', { dataset: { ruleId: rule.id } },
    h('td', { text: rule.name }),
    h('td', { text: rule.team ? `${rule.team} 组` : '全公司' }),
    h('td', { text: label('condition', rule.condition) }),
    h('td', { text: hours(rule.thresholdHours) }),
    h('td', { text: rule.warnBeforeHours ? `提前 ${hours(rule.warnBeforeHours)}` : '—' }),
    h('td', { text: rule.exemptStatuses.map((s) => label('status', s)).join('、') || '—' }),
    h('td', { text: action }),
    h('td', {}, pill('', rule.enabled ? 'on' : 'off', rule.enabled ? '启用' : '停用')),
    h('td', { class: 'actions' }, toggle, remove),
  );
}

async function loadRules() {
  const { data } = await api('/api/auto-transfer/rules');
  clear(rulesBody);
  for (const rule of data) rulesBody.appendChild(ruleRow(rule));
  document.getElementById('rules-empty').hidden = data.length > 0;
}

// A rule by its name; one deleted since says so with the number it had.
function ruleText(item) {
  if (item.ruleName) return `规则「${item.ruleName}」`;
  return item.ruleId ? `已删除的规则 #${item.ruleId}` : '';
}

function failureText(f) {
  return [f.customerName ?? '线索', ruleText(f), f.reason].filter(Boolean).join('：');
}

async function loadRuns() {
  const tbody = clear(document.querySelector('#runs tbody'));
  const { data } = await api('/api/auto-transfer/runs', { query: { pageSize: 20 } });
  if (!data.items.length) tbody.appendChild(h('tr', { class: 'empty-row' }, h('td', { colspan: 9, text: '还没有执行记录' })));
  for (const run of data.items) {
    tbody.appendChild(h('tr', {},
      h('td', { text: `#${run.id}` }),
      h('td', { text: label('trigger', run.trigger) + (run.dryRun ? '（预览）' : '') }),
      h('td', { text: fmtTime(run.startedAt) }),
      h('td', { text: fmtTime(run.finishedAt) }),
      h('td', { text: run.examined }),
      h('td', { text: run.moved }),
      h('td', { text: run.warned }),
      h('td', { text: run.failed }),
      h('td', { class: 'wrap' }, run.failures.length
        ? h('ul', { class: 'plain' }, run.failures.map((f) => h('li', { text: failureText(f) })))
        : '—'),
    ));
  }
}

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  const value = Number(document.getElementById('r-threshold').value);
  const unit = document.getElementById('r-unit').value;
  const warn = document.getElementById('r-warn').value;
  const body = {
    name: document.getElementById('r-name').value.trim(),
    team: teamOf() || null,
    condition: document.getElementById('r-condition').value,
    action: actionSelect.value,
    exemptStatuses: [...form.querySelectorAll('input[name="exempt"]:checked')].map((c) => c.value),
    [unit === 'days' ? 'thresholdDays' : 'thresholdHours']: value,
  };
  if (warn !== '') body.warnBeforeHours = Number(warn);
  if (body.action === 'user') body.targetUserId = Number(document.getElementById('r-target').value) || null;
  try {
    const r = await api('/api/auto-transfer/rules', { method: 'POST', body });
    say(`${r.message}：${r.data.name}`);
    form.reset();
    targetField.hidden = true;
    document.getElementById('new-rule').open = false;
    await loadRules();
  } catch (error) {
    sayError(error);
  }
});

const dryRun = document.getElementById('dry-run');
const confirmRun = document.getElementById('run-confirm');
const cancelRun = document.getElementById('run-cancel');
const preview = document.getElementById('preview');

function showPreview(report, title) {
  const tbody = clear(document.querySelector('#preview-table tbody'));
  document.getElementById('preview-summary').textContent = title;
  const rows = [
    ...report.items.map((i) => ({ ...i, note: report.dryRun ? '将流转' : '已流转' })),
    ...report.failures.map((f) => ({ ...f, note: `无法流转：${f.reason}` })),
  ];
  if (!rows.length) tbody.appendChild(h('tr', { class: 'empty-row' }, h('td', { colspan: 6, text: '没有需要流转的线索' })));
  for (const i of rows) {
    tbody.appendChild(h('tr', {},
      h('td', {}, h('a', { href: `/console/customers/${encodeURIComponent(i.customerId)}`, text: i.customerName ?? `#${i.customerId}` })),
      h('td', { text: i.fromUserName ?? (i.fromUserId ? `#${i.fromUserId}` : '—') }),
      h('td', { text: i.toUserName ?? (i.action === 'public_pool' ? '公海' : '—') }), // a failure has no receiver
      h('td', { text: i.ruleName ?? (i.ruleId ? `已删除的规则 #${i.ruleId}` : '—') }),
      h('td', { text: fmtTime(i.dueAt) }),
      h('td', { class: 'wrap', text: i.note }),
    ));
  }
  preview.hidden = false;
}

dryRun.addEventListener('click', async () => {
  dryRun.disabled = true;
  try {
    const r = await api('/api/auto-transfer/run', { method: 'POST', body: { dryRun: true } });
    showPreview(r.data, r.message);
    say(r.message);
    confirmRun.hidden = false;
    cancelRun.hidden = false;
    confirmRun.disabled = r.data.moved === 0;
    confirmRun.focus();
    await loadRuns();
  } catch (error) {
    sayError(error);
  } finally {
    dryRun.disabled = false;
  }
});

cancelRun.addEventListener('click', () => {
  preview.hidden = true;
  confirmRun.hidden = true;
  cancelRun.hidden = true;
  dryRun.focus();
});

confirmRun.addEventListener('click', async () => {
  confirmRun.disabled = true;
  try {
    const r = await api('/api/auto-transfer/run', { method: 'POST', body: { dryRun: false } });
    showPreview(r.data, r.message);
    say(r.message);
    confirmRun.hidden = true;
    cancelRun.hidden = true;
    dryRun.focus();
    await loadRuns();
  } catch (error) {
    sayError(error);
    confirmRun.disabled = false;
  }
});

try {
  await Promise.all([loadRules(), loadRuns()]);
} catch (error) {
  sayError(error);
}
document.body.dataset.ready = 'true';
