// /console/pools (线索池管理): admins and managers create and edit pools (their rules), add members and pool
// admins, delete pools (their leads go to the company pool). Everything from the API goes in as text.
import { api, boot, clear, deleteButton, h, label, say, sayError } from './common.js';

const me = await boot({ roles: ['admin', 'manager'] });
const tbody = document.querySelector('#pools tbody');
const form = document.getElementById('pool-form');
const teamSelect = document.getElementById('p-team');
const submit = document.getElementById('p-submit');
const cancel = document.getElementById('p-cancel');
const membersCard = document.getElementById('members');
const memberBody = document.querySelector('#member-table tbody');
const memberForm = document.getElementById('member-form');
const memberUser = document.getElementById('m-user');
let editing = null; // the pool being edited, or null (creating)
let membersOf = null; // the pool whose members are shown
let users = [];

// Admins may create a company-wide pool or one for any team; a manager only for their own team.
async function fillTeams() {
  clear(teamSelect);
  if (me.role === 'admin') {
    teamSelect.appendChild(h('option', { value: '', text: '全公司（无团队）' }));
    const teams = (await api('/api/teams')).data;
    for (const t of teams) teamSelect.appendChild(h('option', { value: t.name, text: t.name }));
  } else {
    teamSelect.appendChild(h('option', { value: me.team || '', text: me.team || '—' }));
  }
}

async function fillUsers() {
  users = (await api('/api/users')).data.filter((u) => u.active);
  for (const u of users) {
    memberUser.appendChild(h('option', { value: u.id, text: `${u.name}（${label('role', u.role)}${u.team ? ' · ' + u.team + ' 组' : ''}）` }));
  }
}

const orSetting = (value, unit) => (value === null ? '部署设置' : `${value}${unit}`);

function poolRow(p) {
  const actions = h('td', { class: 'action-cell' });
  if (p.canManage) {
    const edit = h('button', { type: 'button', text: '编辑', 'aria-label': `编辑线索池：${p.name}` });
    edit.addEventListener('click', () => startEdit(p));
    const members = h('button', { type: 'button', text: '成员', 'aria-label': `管理成员：${p.name}` });
    members.addEventListener('click', () => showMembers(p));
    const del = deleteButton(`删除线索池：${p.name}`, async () => {
      try {
        const r = await api(`/api/pools/${p.id}`, { method: 'DELETE' });
        say(r.message);
        if (membersOf && membersOf.id === p.id) membersCard.hidden = true;
        await load();
      } catch (error) {
        sayError(error);
      }
    });
    actions.append(edit, ' ', members, ' ', del);
  }
  return h(
    'tr',
    { dataset: { poolId: p.id } },
    h('td', { class: 'name', dataset: { label: '名称' }, text: p.name }),
    h('td', { dataset: { label: '团队' }, text: p.team || '全公司' }),
    h('td', { dataset: { label: '每日领取上限' }, text: p.claimDailyLimit === 0 ? '不限' : orSetting(p.claimDailyLimit, ' 条') }),
    h('td', { dataset: { label: '冷却' }, text: orSetting(p.cooldownHours, ' 小时') }),
    h('td', { dataset: { label: '保护期' }, text: p.embargoMinutes ? `${p.embargoMinutes} 分钟` : '无' }),
    h('td', { dataset: { label: '隐藏电话' }, text: p.hidePhone ? '是' : '否' }),
    h('td', { dataset: { label: '池中线索' }, text: String(p.leadCount) }),
    h('td', { dataset: { label: '成员' }, text: p.members.length ? p.members.map((m) => m.name + (m.role === 'admin' ? '（管理员）' : '')).join('、') : '—' }),
    actions,
  );
}

async function load() {
  try {
    const pools = (await api('/api/pools')).data.filter((p) => !p.company);
    clear(tbody);
    if (!pools.length) tbody.appendChild(h('tr', { class: 'empty-row' }, h('td', { colspan: 9, text: '还没有线索池。' })));
    for (const p of pools) tbody.appendChild(poolRow(p));
    if (membersOf) {
      const fresh = pools.find((p) => p.id === membersOf.id);
      if (fresh) showMembers(fresh);
    }
  } catch (error) {
    sayError(error);
  }
}

function startEdit(p) {
  editing = p;
  document.getElementById('form-title').textContent = `编辑线索池：${p.name}`;
  form.elements.name.value = p.name;
  if (![...teamSelect.options].some((o) => o.value === (p.team || ''))) {
    teamSelect.appendChild(h('option', { value: p.team || '', text: p.team || '全公司（无团队）' }));
  }
  teamSelect.value = p.team || '';
  form.elements.claimDailyLimit.value = p.claimDailyLimit ?? '';
  form.elements.cooldownHours.value = p.cooldownHours ?? '';
  form.elements.embargoMinutes.value = p.embargoMinutes;
  form.elements.hidePhone.checked = p.hidePhone;
  submit.textContent = '保存';
  cancel.hidden = false;
  form.elements.name.focus();
}

function stopEdit() {
  editing = null;
  document.getElementById('form-title').textContent = '新建线索池';
  form.reset();
  submit.textContent = '创建线索池';
  cancel.hidden = true;
}

const numberOrNull = (value) => (value.trim() === '' ? null : Number(value));

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  const body = {
    name: form.elements.name.value.trim(),
    team: teamSelect.value || null,
    claimDailyLimit: numberOrNull(form.elements.claimDailyLimit.value),
    cooldownHours: numberOrNull(form.elements.cooldownHours.value),
    embargoMinutes: Number(form.elements.embargoMinutes.value || 0),
    hidePhone: form.elements.hidePhone.checked,
  };
  submit.disabled = true;
  try {
    const r = editing
      ? await api(`/api/pools/${editing.id}`, { method: 'PATCH', body })
      : await api('/api/pools', { method: 'POST', body });
    say(r.message);
    stopEdit();
    await load();
  } catch (error) {
    sayError(error);
  } finally {
    submit.disabled = false;
  }
});
cancel.addEventListener('click', stopEdit);

function showMembers(p) {
  membersOf = p;
  membersCard.hidden = false;
  document.getElementById('members-title').textContent = `成员：${p.name}`;
  clear(memberBody);
  if (!p.members.length) {
    memberBody.appendChild(h('tr', { class: 'empty-row' }, h('td', { colspan: 4, text: p.team ? `还没有额外成员（${p.team} 组全员已可使用）。` : '还没有成员。' })));
  }
  for (const m of p.members) {
    const remove = h('button', { type: 'button', text: '移除', 'aria-label': `移除成员：${m.name}` });
    remove.addEventListener('click', async () => {
      try {
        const r = await api(`/api/pools/${p.id}/members/${m.userId}`, { method: 'DELETE' });
        say(r.message);
        await load();
      } catch (error) {
        sayError(error);
      }
    });
    memberBody.appendChild(
      h(
        'tr',
        { dataset: { userId: m.userId } },
        h('td', { class: 'name', dataset: { label: '姓名' }, text: m.name }),
        h('td', { dataset: { label: '团队' }, text: m.team || '—' }),
        h('td', { dataset: { label: '角色' }, text: m.role === 'admin' ? '线索池管理员' : '成员' }),
        h('td', { class: 'action-cell' }, remove),
      ),
    );
  }
}

memberForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  if (!membersOf) return;
  try {
    const r = await api(`/api/pools/${membersOf.id}/members`, {
      method: 'POST',
      body: { userId: Number(memberUser.value), role: memberForm.elements.role.value },
    });
    say(r.message);
    await load();
  } catch (error) {
    sayError(error);
  }
});

try {
  await fillTeams();
  await fillUsers();
} catch (error) {
  sayError(error);
}
await load();
document.body.dataset.ready = 'true';
