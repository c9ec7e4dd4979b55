// Sign-in: the server checks the API token (POST /console/api/session); the page keeps it in localStorage.
import { api, ApiError, clearToken, setToken } from './common.js';
import './wecomlogin.js'; // WeCom sign-in: its button, and the hand-over of a session from WeCom

const form = document.getElementById('login-form');
const input = document.getElementById('token');
const error = document.getElementById('login-error');
const params = new URLSearchParams(location.search);

function showError(text) {
  error.textContent = text;
  error.hidden = !text;
}

if (params.has('signedOut')) {
  clearToken();
  document.getElementById('login-info').textContent = '您已退出登录。';
}
input.focus();

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  const token = input.value.trim();
  if (!token) {
    showError('请输入 API 令牌');
    input.focus();
    return;
  }
  const button = form.querySelector('button[type="submit"]');
  button.disabled = true;
  showError('');
  try {
    await api('/console/api/session', { method: 'POST', body: { token }, token: null });
    setToken(token);
    const next = params.get('next') || '';
    // Only ever go back into the console (no open redirect).
    location.assign(/^\/console(\/|\?|$)/.test(next) && !next.startsWith('//') ? next : '/console');
  } catch (e) {
    showError(e instanceof ApiError && e.status === 401 ? '登录失败：令牌无效、已吊销或账号已停用' : `登录失败：${e.message}`);
    input.select();
    input.focus();
  } finally {
    button.disabled = false;
  }
});
