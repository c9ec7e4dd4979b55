// /console/users: people and teams. Admins create people, change role, team, lead capacity and the bound
// WeChat / WeCom ids, deactivate and reactivate accounts, issue API tokens (shown once) and manage teams;
// managers see their own team, read-only. Every confirmation happens in the page (no native dialogs).
import { api, boot, clear, deleteButton, fmtTime, h, label, LABELS, pill, say, sayError } from './common.js';
import { teamQuietEditor } from './notifyprefs.js';

const me = await boot({ roles: ['admin', 'manager'] });
const isAdmin = me.role === 'admin';

const usersBody = document.querySelector('#users tbody');
const teamsBody = document.querySelector('#teams tbody');
const editor = document.getElementById('editor');
const editForm = document.getElementById('edit-form');
const createForm = document.getElementById('create-form');
const showInactive = document.getElementById('show-inactive');

let users = [];
let teams = [];
let editing = null; // the user open in the editor

for (const node of document.querySelectorAll('.admin-only')) node.hidden = !isAdmin;
document.getElementById('scope-note').textContent = isAdmin
  ? '管理员可以新建用户，修改角色、团队、线索上限，绑定微信与企业微信，停用账号和签发令牌。'
  : me.team
    ? `您是「${me.team}」团队的经理：下面是本团队的成员（只读，如需修改请联系管理员）。`
    : '您还没有分配团队：请联系管理员。';
for (const select of [document.getElementById('c-role'), document.getElementById('e-role')]) {
  for (const [value, text] of Object.entries(LABELS.role)) select.appendChild(h('option', { value, text }));
}
document.getElementById('c-role').value = 'sales';

// --- the one-time token --------------------------------------------------------------------------------

function showToken(user, token) {
  const box = document.getElementById('token-box');
  document.getElementById('token-for').textContent = `${user.name}（${label('role', user.role)}）的新令牌：`;
  document.getElementById('token-value').textContent = token;
  box.hidden = false;
  box.scrollIntoView({ block: 'nearest' });
  box.focus();
}

document.getElementById('token-close').addEventListener('click', () => {
  document.getElementById('token-value').textContent = '';
  document.getElementById('token-box').hidden = true;
});

// --- in-page confirmation --------------------------------------------------------------------------------

const confirmBox = document.getElementById('confirm');
let confirmAction = null;

function askConfirm(text, yesText, action) {
  document.getElementById('confirm-text').textContent = text;
  const yes = document.getElementById('confirm-yes');
  yes.textContent = yesText;
  confirmAction = action;
  confirmBox.hidden = false;
  yes.focus();
}

function closeConfirm() {
  confirmBox.hidden = true;
  confirmAction = null;
}

document.getElementById('confirm-no').addEventListener('click', closeConfirm);
document.getElementById('confirm-yes').addEventListener('click', async () => {
  const action = confirmAction;
  closeConfirm();
  if (action) await action();
});

// --- teams ------------------------------------------------------------------------------------------------

function fillTeamSelects() {
  for (const select of document.querySelectorAll('.team-select')) {
    const current = select.value;
    clear(select);
    select.appendChild(h('option', { value: '', text: '无团队' }));
    for (const t of teams) select.appendChild(h('option', { value: t.name, text: t.name }));
    select.value = teams.some((t) => t.name === current) ? current : '';
  }
}

function teamRow(team) {
  const nameCell = h('td', { 'data-label': '团队' }, h('span', { class: 'team-name', text: team.name }));
  const managers = (team.managers || []).map((m) => m.name + (m.active ? '' : '（已停用）')).join('、') || '—';
  const members = team.memberCount === null || team.memberCount === undefined
    ? '—'
    : `${team.memberCount} 人` + (team.activeMemberCount !== team.memberCount ? `（在职 ${team.activeMemberCount}）` : '');
  const row = h('tr', { dataset: { teamId: team.id } },
    nameCell,
    h('td', { 'data-label': '经理', text: managers }),
    h('td', { 'data-label': '成员', text: members }),
    h('td', { 'data-label': '流转规则', text: team.ruleCount ?? '—' }),
  );
  if (!isAdmin) return row;

  const rename = h('button', { type: 'button', text: '改名', 'aria-label': `改名团队：${team.name}` });
  rename.addEventListener('click', () => {
    const input = h('input', { type: 'text', value: team.name, maxlength: 64, 'aria-label': `团队「${team.name}」的新名称` });
    const save = h('button', { type: 'button', class: 'primary', text: '保存' });
    const cancel = h('button', { type: 'button', text: '取消', onclick: () => loadTeams().catch(sayError) });
    const submit = async () => {
      try {
        const r = await api(`/api/teams/${team.id}`, { method: 'PATCH', body: { name: input.value.trim() } });
        await Promise.all([loadTeams(), loadUsers()]);
        say(r.message);
      } catch (error) {
        sayError(error);
        input.focus();
      }
    };
    save.addEventListener('click', submit);
    input.addEventListener('keydown', (event) => {
      if (event.key === 'Enter') submit();
      if (event.key === 'Escape') cancel.click();
    });
    clear(nameCell).appendChild(h('span', { class: 'inline-edit' }, input, save, cancel));
    input.focus();
    input.select();
  });

  // Deleting asks twice, in the page; a team with people or rules is refused by the server (shown as is).
  const remove = deleteButton(`删除团队：${team.name}`, async () => {
    try {
      const r = await api(`/api/teams/${team.id}`, { method: 'DELETE' });
      await loadTeams();
      say(r.message);
    } catch (error) {
      sayError(error);
    }
  });
  row.appendChild(h('td', { class: 'action-cell', 'data-label': '操作' }, h('div', { class: 'actions' }, rename, remove)));
  return row;
}

async function loadTeams() {
  teams = (await api('/api/teams')).data;
  fillTeamSelects();
  const shown = isAdmin ? teams : teams.filter((t) => t.name === me.team);
  clear(teamsBody);
  if (!shown.length) {
    teamsBody.appendChild(h('tr', { class: 'empty-row' }, h('td', { colspan: 5, text: isAdmin ? '还没有团队' : '您还没有团队' })));
  }
  for (const team of shown) teamsBody.appendChild(teamRow(team));
  await loadTeamQuiet();
}

// A team's default quiet hours: admins any team's, a manager their own team's.
const loadTeamQuiet = teamQuietEditor(() => (isAdmin ? teams : teams.filter((t) => t.name === me.team)));

document.getElementById('team-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const input = document.getElementById('t-name');
  try {
    const r = await api('/api/teams', { method: 'POST', body: { name: input.value.trim() } });
    input.value = '';
    await loadTeams();
    say(`${r.message}：${r.data.name}`);
  } catch (error) {
    sayError(error);
  }
});

// --- users ------------------------------------------------------------------------------------------------

function bound(value) {
  return value ? pill('', 'on', '已绑定') : pill('', 'unbound', '未绑定');
}

function lockedText(user) {
  const until = user.lockedUntil ? new Date(user.lockedUntil) : null;
  return until && until > new Date() ? fmtTime(user.lockedUntil) : '—';
}

function userRow(user) {
  const row = h('tr', { dataset: { userId: user.id }, class: user.active ? null : 'inactive' },
    h('td', { 'data-label': '姓名' }, h('strong', { text: user.name })),
    h('td', { 'data-label': '登录名', text: user.loginName ? user.loginName + (user.hasPassword ? '' : '（未设密码）') : '—' }),
    h('td', { 'data-label': '角色', text: label('role', user.role) }),
    h('td', { 'data-label': '团队', text: user.team || '无团队' }),
    h('td', { 'data-label': '线索上限', text: user.capacity ?? '不限' }),
    h('td', { 'data-label': '微信' }, bound(user.wechatOpenid)),
    h('td', { 'data-label': '企业微信' }, bound(user.wecomUserid)),
    h('td', { 'data-label': '状态' }, pill('', user.active ? 'on' : 'off', user.active ? '在职' : '已停用')),
    h('td', { 'data-label': '锁定至', text: lockedText(user) }),
  );
  if (isAdmin) {
    row.appendChild(h('td', { class: 'action-cell', 'data-label': '操作' }, h('div', { class: 'actions' },
      h('button', { type: 'button', text: '编辑', 'aria-label': `编辑用户：${user.name}`, onclick: () => openEditor(user) }))));
  }
  return row;
}

function renderUsers() {
  const shown = showInactive.checked ? users : users.filter((u) => u.active);
  clear(usersBody);
  if (!shown.length) usersBody.appendChild(h('tr', { class: 'empty-row' }, h('td', { colspan: 10, text: '没有用户' })));
  for (const user of shown) usersBody.appendChild(userRow(user));
}

async function loadUsers() {
  users = (await api('/api/users')).data;
  renderUsers();
  if (editing) {
    const fresh = users.find((u) => u.id === editing.id);
    if (fresh) fillEditor(fresh);
  }
}

showInactive.addEventListener('change', renderUsers);

// --- the editor -------------------------------------------------------------------------------------------

function fillEditor(user) {
  editing = user;
  document.getElementById('editor-title').textContent = `编辑用户：${user.name}`;
  document.getElementById('e-name').value = user.name;
  document.getElementById('e-role').value = user.role;
  document.getElementById('e-team').value = user.team ?? '';
  document.getElementById('e-capacity').value = user.capacity ?? '';
  document.getElementById('e-openid').value = user.wechatOpenid ?? '';
  document.getElementById('e-wecom').value = user.wecomUserid ?? '';
  document.getElementById('e-login').value = user.loginName ?? '';
  const self = user.id === me.id;
  const deactivate = document.getElementById('deactivate');
  deactivate.hidden = !user.active;
  deactivate.disabled = self;
  deactivate.title = self ? '不能停用自己的账号' : '';
  document.getElementById('reactivate').hidden = user.active;
}

function openEditor(user) {
  closeConfirm();
  fillEditor(user);
  editor.hidden = false;
  editor.scrollIntoView({ block: 'start' });
  document.getElementById('editor-title').focus();
}

document.getElementById('edit-cancel').addEventListener('click', () => {
  const id = editing?.id;
  editing = null;
  closeConfirm();
  editor.hidden = true;
  document.querySelector(`#users tr[data-user-id="${id}"] button`)?.focus();
});

function text(id) {
  const value = document.getElementById(id).value.trim();
  return value === '' ? null : value;
}

editForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const wanted = {
    name: text('e-name'),
    role: document.getElementById('e-role').value,
    team: text('e-team'),
    capacity: text('e-capacity') === null ? null : Number(text('e-capacity')),
    wechatOpenid: text('e-openid'),
    wecomUserid: text('e-wecom'),
    loginName: text('e-login'),
  };
  const changes = {};
  for (const [key, value] of Object.entries(wanted)) if ((editing[key] ?? null) !== value) changes[key] = value;
  if (!Object.keys(changes).length) {
    say('没有需要保存的修改');
    return;
  }
  try {
    const r = await api(`/api/users/${editing.id}`, { method: 'PATCH', body: changes });
    editing = r.data;
    await Promise.all([loadUsers(), loadTeams()]);
    say(`${r.message}：${r.data.name}`);
  } catch (error) {
    sayError(error);
  }
});

async function setActive(active) {
  const user = editing;
  try {
    const r = await api(`/api/users/${user.id}`, { method: 'PATCH', body: { active } });
    editing = r.data;
    await Promise.all([loadUsers(), loadTeams()]);
    say(active ? `已启用：${r.data.name}` : `已停用：${r.data.name}，其登录与实时连接已断开`);
  } catch (error) {
    sayError(error);
  }
}

document.getElementById('deactivate').addEventListener('click', () => {
  askConfirm(
    `停用「${editing.name}」？其所有登录和实时连接会立即断开，令牌无法再使用（重新启用后恢复）。`,
    '确认停用',
    () => setActive(false),
  );
});
document.getElementById('reactivate').addEventListener('click', () => setActive(true));

document.getElementById('reissue').addEventListener('click', async () => {
  const user = editing;
  try {
    const r = await api(`/api/users/${user.id}/tokens`, { method: 'POST' });
    say(`${r.message}：${user.name}`);
    showToken(r.data.user, r.data.token);
  } catch (error) {
    sayError(error);
  }
});

document.getElementById('revoke').addEventListener('click', () => {
  const user = editing;
  askConfirm(`吊销「${user.name}」的全部令牌？其已登录的页面和实时连接会立即断开，需要重新签发令牌。`, '确认吊销', async () => {
    try {
      const r = await api(`/api/users/${user.id}/tokens/revoke`, { method: 'POST' });
      say(`${r.message}：${user.name}`);
    } catch (error) {
      sayError(error);
    }
  });
});

document.getElementById('password-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const input = document.getElementById('e-password');
  try {
    const r = await api(`/api/users/${editing.id}/password`, { method: 'POST', body: { newPassword: input.value } });
    input.value = '';
    await loadUsers();
    say(`${r.message}：${r.data.name}`);
  } catch (error) {
    sayError(error);
  }
});

// --- creating a user ----------------------------------------------------------------------------------------

createForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const body = { name: text('c-name') ?? '', role: document.getElementById('c-role').value };
  const optional = { team: 'c-team', wechatOpenid: 'c-openid', wecomUserid: 'c-wecom', loginName: 'c-login' };
  for (const [key, id] of Object.entries(optional)) if (text(id) !== null) body[key] = text(id);
  if (text('c-capacity') !== null) body.capacity = Number(text('c-capacity'));
  const password = document.getElementById('c-password').value;
  if (password) body.password = password;
  try {
    const r = await api('/api/users', { method: 'POST', body });
    createForm.reset();
    document.getElementById('c-role').value = 'sales';
    document.getElementById('new-user').open = false;
    await Promise.all([loadUsers(), loadTeams()]);
    say(`${r.message}：${r.data.user.name}`);
    showToken(r.data.user, r.data.token);
  } catch (error) {
    sayError(error);
  }
});

try {
  await Promise.all([loadTeams(), loadUsers()]);
} catch (error) {
  sayError(error);
}
document.body.dataset.ready = 'true';
