// /console/transfer: automatic-transfer rules, "run now" behind a dry-run preview, and run history.
import {
  api, assignees, boot, clear, deleteButton, fillOptions, fillUserSelect, fmtTime, h, label, LABELS, pill, ruleTeamField, say, sayError,
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
ruleTeamField(me, teamSelect);
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
    const body = { enabled: !rule.enabled };
    const save = async (extra) => {
      const r = await api(`/api/auto-transfer/rules/${rule.id}`, { method: 'PATCH', body: { ...body, ...extra } });
      say(`${r.message}：${rule.name}（${r.data.enabled ? '已启用' : '已停用'}）`);
      await loadRules();
    };
    try {
      // Switching a rule on may move leads at once: ask first, as for a new rule.
      if (body.enabled) await saveAfterPreview({ id: rule.id, ...body }, save);
      else await save({});
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

// A failure is listed once: its retries (backing off up to a day) are not listed again.
function failureText(f) {
  const retry = f.retryAt ? `（${fmtTime(f.retryAt)} 重试，期间不再重复记录）` : '';
  return [f.customerName ?? '线索', ruleText(f), f.reason].filter(Boolean).join('：') + retry;
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
  const save = async (extra) => {
    const r = await api('/api/auto-transfer/rules', { method: 'POST', body: { ...body, ...extra } });
    say(`${r.message}：${r.data.name}${r.data.graceUntil ? `（宽限至 ${fmtTime(r.data.graceUntil)}）` : ''}`);
    form.reset();
    targetField.hidden = true;
    document.getElementById('new-rule').open = false;
    await loadRules();
  };
  try {
    await saveAfterPreview(body, save);
  } catch (error) {
    sayError(error);
  }
});

// Saving a rule that would move leads at once asks first (in the page): 立即生效, a grace period, or 取消.
const confirmBox = document.getElementById('rule-confirm');
const graceHours = document.getElementById('rule-grace-hours');
const graceButton = document.getElementById('rule-grace');
let pendingSave = null;

function graceValue() {
  const value = Number(graceHours.value);
  return Number.isFinite(value) && value > 0 && value <= 720 ? value : null;
}

graceHours.addEventListener('input', () => {
  const value = graceValue();
  graceButton.textContent = value ? `宽限 ${value} 小时` : '宽限';
  graceButton.disabled = !value;
});

function closeConfirm() {
  confirmBox.hidden = true;
  pendingSave = null;
}

async function decide(extra) {
  const save = pendingSave;
  if (!save) return;
  for (const b of confirmBox.querySelectorAll('button')) b.disabled = true;
  try {
    await save(extra);
    closeConfirm();
  } catch (error) {
    sayError(error);
  } finally {
    for (const b of confirmBox.querySelectorAll('button')) b.disabled = false;
    graceButton.disabled = !graceValue();
  }
}

// 立即生效 keeps a grace period the rule already has: the preview counted with it.
document.getElementById('rule-now').addEventListener('click', () => decide({}));
graceButton.addEventListener('click', () => { const value = graceValue(); if (value) decide({ graceHours: value }); });
document.getElementById('rule-cancel').addEventListener('click', () => {
  closeConfirm();
  say('已取消，规则未保存');
});

function teamText(teams) {
  return Object.entries(teams)
    .filter(([, c]) => c.moved > 0)
    .map(([team, c]) => `${team ? `${team} 组` : '未分组'} ${c.moved} 条`)
    .join('、');
}

// Preview first; save at once when nothing would move, else show what would and let the person choose.
async function saveAfterPreview(previewBody, save) {
  const { data } = await api('/api/auto-transfer/rules/preview', { method: 'POST', body: previewBody });
  if (data.moved === 0) {
    await save({});
    return;
  }
  pendingSave = save;
  document.getElementById('rule-confirm-text').textContent = `保存后将立即流转 ${data.moved} 条线索`;
  const notes = [`按团队：${teamText(data.teams)}`];
  if (data.warned) notes.push(`另有 ${data.warned} 条将立即收到流转预警`);
  if (data.failed) notes.push(`${data.failed} 条到期但无法流转（稍后重试）`);
  document.getElementById('rule-confirm-detail').textContent = notes.join('；');
  const sample = clear(document.getElementById('rule-confirm-sample'));
  for (const item of data.items.filter((i) => i.outcome === 'move').slice(0, 5)) {
    sample.appendChild(h('li', { text: `${item.customerName}（${item.fromUserName ?? '—'}）→ ${item.toUserName ?? '公海'}` }));
  }
  confirmBox.hidden = false;
  document.getElementById('rule-now').focus();
}

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
