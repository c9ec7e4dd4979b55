// /console/account (every role): one's own profile, password, notification settings and API tokens.
// A new token is shown once, here only; revoking asks for confirmation in the page (no native dialog).
import { availabilityEditor } from './availability.js';
import { api, boot, clear, fmtTime, h, label, pill, say, sayError } from './common.js';
import { preferencesEditor } from './notifyprefs.js';

let me = await boot();

// --- profile ---------------------------------------------------------------------------------------------

function renderProfile() {
  const rows = [
    ['姓名', me.name],
    ['角色', label('role', me.role)],
    ['团队', me.team ? `${me.team} 组` : '—'],
    ['登录名', me.loginName || '未设置'],
    ['密码', me.hasPassword ? '已设置' : '未设置'],
  ];
  clear(document.getElementById('profile')).append(...rows.flatMap(([k, v]) => [h('dt', { text: k }), h('dd', { text: v })]));
}

// --- password --------------------------------------------------------------------------------------------

const passwordForm = document.getElementById('password-form');
const current = document.getElementById('current-password');
const fresh = document.getElementById('new-password');
const again = document.getElementById('new-password-again');
const passwordStatus = document.getElementById('password-status');

function renderPasswordForm() {
  // Setting a first password needs no current one; a password needs a login name to sign in with.
  const title = me.hasPassword ? '修改密码' : '设置密码';
  document.getElementById('password-title').textContent = title;
  document.getElementById('password-submit').textContent = title;
  document.getElementById('current-password-field').hidden = !me.hasPassword;
  document.getElementById('no-login-name').hidden = Boolean(me.loginName);
  passwordForm.hidden = !me.loginName;
}

passwordForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  if (me.hasPassword && !current.value) {
    say('请输入当前密码', true, passwordStatus);
    current.focus();
    return;
  }
  if (!fresh.value) {
    say('请输入新密码', true, passwordStatus);
    fresh.focus();
    return;
  }
  if (fresh.value !== again.value) {
    say('两次输入的新密码不一致', true, passwordStatus);
    again.focus();
    return;
  }
  const button = document.getElementById('password-submit');
  button.disabled = true;
  try {
    const body = { currentPassword: me.hasPassword ? current.value : null, newPassword: fresh.value };
    const r = await api('/api/me/password', { method: 'POST', body });
    me = r.data;
    passwordForm.reset();
    renderProfile();
    renderPasswordForm();
    say(r.message || '密码已修改', false, passwordStatus);
  } catch (error) {
    // The server's words: 当前密码不正确, or what the password policy wants changed.
    sayError(error, passwordStatus);
    (error.code === 'wrong_password' ? current : fresh).focus();
  } finally {
    button.disabled = false;
  }
});

// --- API tokens ------------------------------------------------------------------------------------------

const tokensBody = document.querySelector('#tokens tbody');
const tokensStatus = document.getElementById('tokens-status');
const tokenForm = document.getElementById('token-form');
const tokenName = document.getElementById('token-name');
const newToken = document.getElementById('new-token');
const newTokenValue = document.getElementById('new-token-value');

function tokenRow(token) {
  const name = token.name || `未命名令牌 #${token.id}`;
  const actions = h('td', { class: 'actions' });
  const revoked = Boolean(token.revokedAt);

  function idle() {
    clear(actions);
    if (revoked) return;
    actions.append(h('button', {
      type: 'button', class: 'danger', text: '吊销', 'aria-label': `吊销令牌：${name}`, onclick: confirm,
    }));
  }

  // Revoking cannot be undone and cuts off whatever system uses the token: ask first, in the row.
  function confirm() {
    clear(actions);
    const yes = h('button', { type: 'button', class: 'danger', text: '确认吊销', 'aria-label': `确认吊销令牌：${name}` });
    const no = h('button', { type: 'button', text: '取消', 'aria-label': `取消吊销令牌：${name}`, onclick: () => {
      idle();
      actions.querySelector('button')?.focus();
    } });
    yes.addEventListener('click', async () => {
      yes.disabled = true;
      no.disabled = true;
      try {
        const r = await api(`/api/tokens/${encodeURIComponent(token.id)}`, { method: 'DELETE' });
        say(`${r.message}：${name}`, false, tokensStatus);
        await loadTokens();
      } catch (error) {
        sayError(error, tokensStatus);
        idle();
      }
    });
    actions.append(h('span', { class: 'confirm-text', text: '吊销后使用它的系统将立即无法访问，确定吗？' }), yes, no);
    yes.focus();
  }

  idle();
  return h('tr', { dataset: { tokenId: token.id, state: revoked ? 'revoked' : 'active' } },
    h('td', { text: name }),
    h('td', {}, h('code', { text: `${token.prefix}…` })),
    h('td', { text: fmtTime(token.createdAt) }),
    h('td', { text: token.lastUsedAt ? fmtTime(token.lastUsedAt) : '从未使用' }),
    h('td', {}, revoked ? pill('', 'off', `已吊销 ${fmtTime(token.revokedAt)}`) : pill('', 'on', '有效')),
    actions,
  );
}

async function loadTokens() {
  const { data } = await api('/api/tokens');
  clear(tokensBody);
  if (!data.length) tokensBody.appendChild(h('tr', { class: 'empty-row' }, h('td', { colspan: 6, text: '还没有 API 令牌' })));
  // Active ones first, each group newest first.
  const sorted = [...data].sort((a, b) => Number(Boolean(a.revokedAt)) - Number(Boolean(b.revokedAt)) || b.id - a.id);
  for (const token of sorted) tokensBody.appendChild(tokenRow(token));
}

tokenForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const name = tokenName.value.trim();
  if (!name) {
    say('请输入令牌名称，说明它给哪个系统使用', true, tokensStatus);
    tokenName.focus();
    return;
  }
  const button = tokenForm.querySelector('button[type="submit"]');
  button.disabled = true;
  try {
    const r = await api('/api/tokens', { method: 'POST', body: { name } });
    tokenForm.reset();
    document.getElementById('new-token-title').textContent = `新令牌「${r.data.name ?? name}」只显示这一次，请立即复制并保存到对接系统中：`;
    newTokenValue.value = r.data.token;
    newToken.hidden = false;
    say(r.message, false, tokensStatus);
    await loadTokens();
    newTokenValue.focus();
    newTokenValue.select();
  } catch (error) {
    sayError(error, tokensStatus);
  } finally {
    button.disabled = false;
  }
});

document.getElementById('copy-token').addEventListener('click', async () => {
  try {
    await navigator.clipboard.writeText(newTokenValue.value);
    say('已复制到剪贴板', false, tokensStatus);
  } catch {
    // No clipboard access (permission, an old browser): leave it selected for Ctrl+C.
    newTokenValue.focus();
    newTokenValue.select();
    say('无法自动复制，令牌已选中，请按 Ctrl+C（手机上长按）复制', true, tokensStatus);
  }
});

document.getElementById('hide-token').addEventListener('click', () => {
  newTokenValue.value = '';
  newToken.hidden = true;
  say('', false, tokensStatus);
  tokenName.focus();
});

renderProfile();
renderPasswordForm();
const loadPreferences = preferencesEditor();
try {
  await loadPreferences();
} catch (error) {
  sayError(error, document.getElementById('notify-status'));
}
const availStatus = document.getElementById('avail-status');
const loadAvailability = availabilityEditor(() => me.id, availStatus);
try {
  await loadTokens();
} catch (error) {
  sayError(error, tokensStatus);
}
try {
  await loadAvailability();
} catch (error) {
  sayError(error, availStatus);
}
document.body.dataset.ready = 'true';
