// Sign-in: a login name and password (POST /api/auth/login), or an API token exchanged for a session
// (POST /console/api/session). Either way the page keeps only the session token (lps_…) in localStorage.
import { api, ApiError, clearToken, setToken } from './common.js';
import './wecomlogin.js'; // WeCom sign-in: its button, and the hand-over of a session from WeCom

const params = new URLSearchParams(location.search);
const info = document.getElementById('login-info');
const passwordForm = document.getElementById('password-form');
const loginName = document.getElementById('login-name');
const password = document.getElementById('password');
const tokenForm = document.getElementById('token-form');
const tokenInput = document.getElementById('token');

function show(node, text) {
  node.textContent = text;
  node.hidden = !text;
}

if (params.has('signedOut')) {
  clearToken();
  info.textContent = '您已退出登录。';
} else if (params.has('expired')) {
  clearToken();
  info.textContent = '登录已失效，请重新登录';
  info.classList.add('warn');
}
loginName.focus();

// Where to go once signed in: back to the console page that sent the person here, never elsewhere
// (no open redirect); by default /console, which sends each role to its start page.
function destination() {
  const next = params.get('next') || '';
  return /^\/console(\/|\?|$)/.test(next) && !next.startsWith('//') && !next.startsWith('/console/login')
    ? next : '/console';
}

// One submit at a time; the button is disabled while the server answers.
async function submitting(form, work) {
  const button = form.querySelector('button[type="submit"]');
  button.disabled = true;
  try {
    await work();
  } finally {
    button.disabled = false;
  }
}

function signedIn(session) {
  setToken(session.token);
  location.assign(destination());
}

passwordForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const error = document.getElementById('login-error');
  const name = loginName.value.trim();
  if (!name || !password.value) {
    show(error, name ? '请输入密码' : '请输入登录名');
    (name ? password : loginName).focus();
    return;
  }
  show(error, '');
  return submitting(passwordForm, async () => {
    try {
      const r = await api('/api/auth/login', { method: 'POST', body: { loginName: name, password: password.value }, token: null });
      signedIn(r.data);
    } catch (e) {
      // The server's message says what happened: 登录名或密码错误, a lockout with its minutes, 账号已停用.
      show(error, e instanceof ApiError && e.status && e.status < 500 && e.code !== 'validation_error'
        ? e.message : `登录失败：${e.message}`);
      password.value = '';
      password.focus();
    }
  });
});

tokenForm.addEventListener('submit', (event) => {
  event.preventDefault();
  const error = document.getElementById('token-error');
  const token = tokenInput.value.trim();
  if (!token) {
    show(error, '请输入 API 令牌');
    tokenInput.focus();
    return;
  }
  show(error, '');
  return submitting(tokenForm, async () => {
    try {
      const r = await api('/console/api/session', { method: 'POST', body: { token }, token: null });
      signedIn(r.data);
    } catch (e) {
      show(error, e instanceof ApiError && e.status === 401 ? '登录失败：令牌无效、已吊销或账号已停用' : `登录失败：${e.message}`);
      tokenInput.select();
      tokenInput.focus();
    }
  });
});
