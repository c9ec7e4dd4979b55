// /console/routing: distribution rules in evaluation order (enable, edit, move, delete), the dry run
// "谁会收到这条线索" with why each candidate was passed over, and people's working hours and leave.
import {
  api, assignees, boot, clear, deleteButton, fillUserSelect, h, label, pill, say, sayError,
} from './common.js';
import { availabilityEditor } from './availability.js';

const ACTIONS = {
  round_robin: '轮流分配', weighted: '按权重轮流', least_loaded: '给线索最少的人', user: '指定接收人', pool: '放入线索池',
};
const APPLIES = { new: '新线索', released: '被释放的线索', recycled: '被自动流转收回的线索' };
const STATUS = { chosen: '会收到', skipped: '跳过', available: '可接收（未轮到）' };

const me = await boot({ roles: ['admin', 'manager'] });
const rulesBody = document.querySelector('#rules tbody');
const form = document.getElementById('rule-form');
const editor = document.getElementById('rule-editor');
const actionSelect = document.getElementById('r-action');
const fallbackSelect = document.getElementById('r-fallback');
const teamSelect = document.getElementById('r-team');
const membersBox = document.getElementById('r-members');
let rules = [];
let editing = null; // the rule being edited, or null for a new one
let people = [];

for (const [value, text] of Object.entries(ACTIONS)) actionSelect.appendChild(h('option', { value, text }));
for (const [value, text] of Object.entries(APPLIES)) {
  const id = `r-applies-${value}`;
  document.getElementById('r-applies').appendChild(h('label', { for: id },
    h('input', { type: 'checkbox', id, name: 'appliesOn', value, checked: value === 'new' }), text));
  document.getElementById('d-applies').appendChild(h('option', { value, text }));
}

const teamOf = () => (me.role === 'manager' ? me.team ?? '' : teamSelect.value);
if (me.role === 'manager') {
  document.getElementById('r-team-field').hidden = true;
  document.getElementById('r-team-fixed').hidden = false;
  document.getElementById('r-team-text').textContent = me.team ? `${me.team} 组（经理的规则只适用于本团队）` : '未分配团队（无法创建规则）';
  document.getElementById('d-team-field').hidden = true;
} else {
  api('/api/teams').then(({ data }) => {
    for (const t of data) {
      teamSelect.appendChild(h('option', { value: t.name, text: `${t.name} 组` }));
      document.getElementById('d-team').appendChild(h('option', { value: t.name, text: `${t.name} 组` }));
    }
  }).catch(sayError);
}

// The pools a rule may put leads into: the ones this person may see (the company pool is the empty choice).
api('/api/pools').then(({ data }) => {
  for (const pool of data.filter((p) => p.id !== null)) {
    for (const id of ['r-pool', 'r-fallback-pool']) {
      document.getElementById(id).appendChild(h('option', { value: String(pool.id), text: pool.name }));
    }
  }
  if (editing) fillPools(editing);
}).catch(sayError);

function fillPools(rule) {
  document.getElementById('r-pool').value = rule.targetPoolId ?? '';
  document.getElementById('r-fallback-pool').value = rule.fallbackPoolId ?? '';
}

function showFields() {
  const action = actionSelect.value;
  document.getElementById('r-target-field').hidden = action !== 'user';
  document.getElementById('r-pool-field').hidden = action !== 'pool';
  document.getElementById('r-members-field').hidden = !['round_robin', 'weighted', 'least_loaded'].includes(action);
  const toUser = fallbackSelect.value === 'user';
  document.getElementById('r-fallback-user-field').hidden = !toUser;
  document.getElementById('r-fallback-pool-field').hidden = toUser;
}
actionSelect.addEventListener('change', showFields);
fallbackSelect.addEventListener('change', showFields);

// Members: the salespeople the rule may rotate among (those of its team once a team is chosen), each with a weight.
function fillMembers(chosen = new Map()) {
  clear(membersBox);
  const team = teamOf();
  const sales = people.filter((u) => u.role === 'sales' && (!team || u.team === team));
  if (!sales.length) membersBox.appendChild(h('p', { class: 'muted', text: '没有可选的销售' }));
  for (const u of sales) {
    const id = `r-member-${u.id}`;
    membersBox.appendChild(h('div', { class: 'field inline' },
      h('input', { type: 'checkbox', id, name: 'member', value: u.id, checked: chosen.has(u.id) }),
      h('label', { for: id, text: `${u.name}${u.team ? '（' + u.team + ' 组）' : ''}` }),
      h('label', { for: `${id}-weight`, text: '权重' }),
      h('input', { type: 'number', id: `${id}-weight`, name: 'weight', min: 1, max: 100, step: 1, value: chosen.get(u.id) ?? 1, class: 'weight' }),
    ));
  }
}
teamSelect.addEventListener('change', () => fillMembers());

const list = (text) => text.split(/[,，、]/).map((s) => s.trim()).filter(Boolean);
const number = (id) => Number(document.getElementById(id).value) || null;

function conditionText(rule) {
  const parts = [];
  if (rule.sources.length) parts.push(`来源：${rule.sources.join('、')}`);
  if (rule.regions.length) parts.push(`地区：${rule.regions.join('、')}`);
  if (rule.tags.length) parts.push(`标签：${rule.tags.join('、')}`);
  return parts.join('；') || '任意线索';
}

function actionText(rule) {
  if (rule.action === 'user') return `${ACTIONS.user}：${rule.targetUserName ?? '—'}`;
  if (rule.action === 'pool') return `${ACTIONS.pool}：${rule.targetPoolName ?? '全公司公海'}`;
  const who = rule.members.length
    ? rule.members.map((m) => (rule.action === 'weighted' ? `${m.name}×${m.weight}` : m.name)).join('、')
    : `${rule.team ?? ''} 组全部销售`;
  return `${ACTIONS[rule.action]}：${who}`;
}

function fallbackText(rule) {
  if (rule.fallback === 'user') return `交给 ${rule.fallbackUserName ?? '—'}`;
  return `放入${rule.fallbackPoolName ?? '全公司公海'}`;
}

const mayManage = (rule) => me.role === 'admin' || (rule.team !== null && rule.team === me.team);

async function act(promise, what) {
  try {
    const r = await promise;
    await loadRules(); // the table first, then the message: what the message says is on the page
    say(`${r.message}${what ? '：' + what : ''}`);
    return r;
  } catch (error) {
    sayError(error);
    return null;
  }
}

function move(rule, step) {
  const ids = rules.filter(mayManage).map((r) => r.id);
  const at = ids.indexOf(rule.id);
  const to = at + step;
  if (at < 0 || to < 0 || to >= ids.length) return;
  [ids[at], ids[to]] = [ids[to], ids[at]];
  act(api('/api/distribution-rules/reorder', { method: 'POST', body: { ruleIds: ids } }), rule.name);
}

function ruleRow(rule, index) {
  const cells = [
    h('td', { text: index + 1 }),
    h('td', { text: rule.name }),
    h('td', { text: rule.team ? `${rule.team} 组` : '全公司' }),
    h('td', { class: 'wrap', text: conditionText(rule) }),
    h('td', { text: rule.appliesOn.map((a) => APPLIES[a]).join('、') }),
    h('td', { class: 'wrap', text: actionText(rule) }),
    h('td', { text: fallbackText(rule) }),
    h('td', {}, pill('', rule.enabled ? 'on' : 'off', rule.enabled ? '启用' : '停用')),
  ];
  const actions = h('td', { class: 'actions' });
  if (mayManage(rule)) {
    const verb = rule.enabled ? '停用' : '启用';
    actions.append(
      h('button', { type: 'button', text: verb, 'aria-label': `${verb}规则：${rule.name}`,
        onClick: () => act(api(`/api/distribution-rules/${rule.id}`, { method: 'PATCH', body: { enabled: !rule.enabled } }), rule.name) }),
      h('button', { type: 'button', text: '编辑', 'aria-label': `编辑规则：${rule.name}`, onClick: () => edit(rule) }),
      h('button', { type: 'button', text: '上移', 'aria-label': `上移规则：${rule.name}`, onClick: () => move(rule, -1) }),
      h('button', { type: 'button', text: '下移', 'aria-label': `下移规则：${rule.name}`, onClick: () => move(rule, 1) }),
      deleteButton(`删除规则：${rule.name}`, () => act(api(`/api/distribution-rules/${rule.id}`, { method: 'DELETE' }), rule.name)),
    );
  } else {
    actions.append(h('span', { class: 'muted', text: '仅管理员可修改' }));
  }
  return h('tr', { dataset: { ruleId: rule.id } }, ...cells, actions);
}

async function loadRules() {
  rules = (await api('/api/distribution-rules')).data;
  clear(rulesBody);
  rules.forEach((rule, i) => rulesBody.appendChild(ruleRow(rule, i)));
  document.getElementById('rules-empty').hidden = rules.length > 0;
}

function resetForm() {
  editing = null;
  form.reset();
  document.getElementById('editor-summary').textContent = '新建规则';
  document.getElementById('r-submit').textContent = '创建规则';
  document.getElementById('r-cancel').hidden = true;
  fillMembers();
  showFields();
}

function edit(rule) {
  editing = rule;
  document.getElementById('r-name').value = rule.name;
  if (me.role === 'admin') teamSelect.value = rule.team ?? '';
  document.getElementById('r-sources').value = rule.sources.join('，');
  document.getElementById('r-regions').value = rule.regions.join('，');
  document.getElementById('r-tags').value = rule.tags.join('，');
  for (const box of form.querySelectorAll('input[name="appliesOn"]')) box.checked = rule.appliesOn.includes(box.value);
  actionSelect.value = rule.action;
  document.getElementById('r-target').value = rule.targetUserId ?? '';
  fillPools(rule);
  fallbackSelect.value = rule.fallback;
  document.getElementById('r-fallback-user').value = rule.fallbackUserId ?? '';
  fillMembers(new Map(rule.members.map((m) => [m.userId, m.weight])));
  showFields();
  document.getElementById('editor-summary').textContent = `编辑规则：${rule.name}`;
  document.getElementById('r-submit').textContent = '保存修改';
  document.getElementById('r-cancel').hidden = false;
  editor.open = true;
  document.getElementById('r-name').focus();
}
document.getElementById('r-cancel').addEventListener('click', resetForm);

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  const action = actionSelect.value;
  const members = [...membersBox.querySelectorAll('input[name="member"]:checked')].map((box) => ({
    userId: Number(box.value),
    weight: Number(document.getElementById(`${box.id}-weight`).value) || 1,
  }));
  const body = {
    name: document.getElementById('r-name').value.trim(),
    team: teamOf() || null,
    sources: list(document.getElementById('r-sources').value),
    regions: list(document.getElementById('r-regions').value),
    tags: list(document.getElementById('r-tags').value),
    appliesOn: [...form.querySelectorAll('input[name="appliesOn"]:checked')].map((c) => c.value),
    action,
    targetUserId: action === 'user' ? number('r-target') : null,
    targetPoolId: action === 'pool' ? number('r-pool') : null,
    members: ['round_robin', 'weighted', 'least_loaded'].includes(action) ? members : [],
    fallback: fallbackSelect.value,
    fallbackUserId: fallbackSelect.value === 'user' ? number('r-fallback-user') : null,
    fallbackPoolId: fallbackSelect.value === 'pool' ? number('r-fallback-pool') : null,
  };
  const request = editing
    ? api(`/api/distribution-rules/${editing.id}`, { method: 'PATCH', body })
    : api('/api/distribution-rules', { method: 'POST', body });
  const r = await act(request, body.name);
  if (r) {
    resetForm();
    editor.open = false;
  }
});

// --- dry run ---------------------------------------------------------------------------------------------

document.getElementById('dry-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const body = {
    source: document.getElementById('d-source').value.trim(),
    region: document.getElementById('d-region').value.trim(),
    tags: list(document.getElementById('d-tags').value),
    appliesOn: document.getElementById('d-applies').value,
  };
  if (me.role === 'admin') body.team = document.getElementById('d-team').value || null;
  try {
    const { data } = await api('/api/distribution-rules/dry-run', { method: 'POST', body });
    document.getElementById('dry-summary').textContent = data.summary;
    const tbody = clear(document.querySelector('#dry-candidates tbody'));
    if (!data.candidates.length) tbody.appendChild(h('tr', { class: 'empty-row' }, h('td', { colspan: 3, text: '没有候选人' })));
    for (const c of data.candidates) {
      tbody.appendChild(h('tr', { dataset: { userId: c.userId } },
        h('td', { text: c.name }),
        h('td', {}, pill('', c.status === 'chosen' ? 'on' : c.status === 'skipped' ? 'off' : '', STATUS[c.status])),
        h('td', { text: c.reasonText ?? '—' }),
      ));
    }
    document.getElementById('dry-result').hidden = false;
  } catch (error) {
    sayError(error);
  }
});

// --- availability ----------------------------------------------------------------------------------------

const userSelect = document.getElementById('a-user');
const loadAvailability = availabilityEditor(() => userSelect.value);
userSelect.addEventListener('change', () => loadAvailability().catch(sayError));

try {
  people = await assignees(me);
  fillUserSelect(document.getElementById('r-target'), people);
  fillUserSelect(document.getElementById('r-fallback-user'), people);
  fillUserSelect(userSelect, people);
  resetForm();
  await Promise.all([loadRules(), loadAvailability()]);
} catch (error) {
  sayError(error);
}
document.body.dataset.ready = 'true';
