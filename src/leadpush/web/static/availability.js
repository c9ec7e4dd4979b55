// The working hours and leave editor (#avail-form and its fields), shared by /console/routing (staff set their
// people's) and /console/account (everyone sets their own). Times are typed as "09:00-12:00, 13:30-18:00" per
// weekday; leave as the browser's local date and time.
import { api, h, say, sayError } from './common.js';

const WEEKDAYS = ['周一', '周二', '周三', '周四', '周五', '周六', '周日'];
const list = (text) => text.split(/[,，、]/).map((s) => s.trim()).filter(Boolean);

// An ISO instant as the value of a datetime-local input (the browser's local time), and back.
function toLocalInput(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  const pad = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
}
const fromLocalInput = (value) => (value ? new Date(value).toISOString() : null);

// Wires the editor; userId() says whose availability it shows. Returns load(), to (re)read it.
export function availabilityEditor(userId, status = document.getElementById('page-status')) {
  const always = document.getElementById('a-always');
  const daysBox = document.getElementById('a-days');
  document.getElementById('avail-tz').textContent = document.body.dataset.timezone || 'Asia/Shanghai';
  WEEKDAYS.forEach((name, i) => {
    const id = `a-day-${i + 1}`;
    daysBox.appendChild(h('div', { class: 'field inline' },
      h('label', { for: id, text: name }),
      h('input', { type: 'text', id, name: 'day', maxlength: 100, placeholder: '如 09:00-18:00；空 = 休息', dataset: { day: i + 1 } })));
  });
  always.addEventListener('change', () => {
    for (const input of daysBox.querySelectorAll('input')) input.disabled = always.checked;
  });

  function show(a) {
    always.checked = a.workingHours === null;
    for (const input of daysBox.querySelectorAll('input')) {
      const ranges = a.workingHours?.[input.dataset.day] ?? [];
      input.value = ranges.map(([s, e]) => `${s}-${e}`).join(', ');
      input.disabled = always.checked;
    }
    document.getElementById('a-leave-from').value = toLocalInput(a.leaveFrom);
    document.getElementById('a-leave-until').value = toLocalInput(a.leaveUntil);
    document.getElementById('a-now').textContent = a.availableNow
      ? `${a.userName} 现在可以接收分配`
      : `${a.userName} 现在不接收分配：${a.reasonText}`;
  }

  document.getElementById('avail-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    let workingHours = null;
    if (!always.checked) {
      workingHours = {};
      for (const input of daysBox.querySelectorAll('input')) {
        const ranges = list(input.value).map((r) => r.split(/\s*[-~～至]\s*/));
        if (ranges.length) workingHours[input.dataset.day] = ranges;
      }
    }
    const body = {
      workingHours,
      leaveFrom: fromLocalInput(document.getElementById('a-leave-from').value),
      leaveUntil: fromLocalInput(document.getElementById('a-leave-until').value),
    };
    try {
      const r = await api(`/api/users/${userId()}/availability`, { method: 'PUT', body });
      show(r.data);
      say(`${r.message}：${r.data.userName}`, false, status);
    } catch (error) {
      sayError(error, status);
    }
  });

  // While a person's hours load, the fields (not the person picker) wait disabled: nothing typed meanwhile is
  // overwritten by the answer, and only the answer for the person picked last is shown.
  const form = document.getElementById('avail-form');
  const editable = () => [...form.querySelectorAll('input, button, textarea')];
  let asked = 0;
  return async function load() {
    const id = userId();
    if (!id) return;
    const mine = ++asked;
    form.setAttribute('aria-busy', 'true');
    for (const field of editable()) field.disabled = true;
    try {
      const { data } = await api(`/api/users/${id}/availability`);
      if (mine === asked) show(data);
    } finally {
      if (mine === asked) {
        for (const field of editable()) field.disabled = field.dataset.day !== undefined && always.checked;
        form.removeAttribute('aria-busy');
      }
    }
  };
}
