// /console/inbox: the user's notifications, newest first; new ones arrive live (see live.js).
import { boot, fmtTime, h, label, sayError } from './common.js';
import { markRead, recent, targetOf } from './live.js';

await boot();
const list = document.getElementById('inbox');
const empty = document.getElementById('inbox-empty');
const summary = document.getElementById('inbox-summary');
const items = new Map(); // id -> <li>

function render(n) {
  const unread = !n.readAt;
  const target = targetOf(n);
  const data = n.data || {};
  const leads = Array.isArray(data.customers) && data.customers.length
    ? h('ul', { class: 'leads' }, data.customers.map((c) => h('li', {},
      h('a', { href: `/console/customers/${encodeURIComponent(c.customerId)}`, text: c.customerName ?? `#${c.customerId}` }),
      c.source ? ` · ${c.source}` : null)))
    : null;
  const li = h('li', { class: unread ? 'unread' : '', dataset: { notificationId: n.id } },
    h('p', { class: 'title', text: n.title || label('kind', n.type) }),
    n.body ? h('p', { class: 'body', text: n.body }) : null,
    leads,
    h('div', { class: 'meta' },
      h('span', { text: label('kind', n.type) }),
      h('time', { datetime: n.createdAt, text: fmtTime(n.createdAt) }),
      h('a', { href: target.href, text: target.text }),
      unread ? h('button', { type: 'button', class: 'mark-read', text: '标为已读', 'aria-label': `标为已读：${n.title}` }) : null,
    ),
  );
  li.querySelector('.mark-read')?.addEventListener('click', async () => {
    try {
      await markRead([n.id]);
      li.classList.remove('unread');
      li.querySelector('.mark-read')?.remove();
    } catch (error) {
      sayError(error);
    }
  });
  return li;
}

function add(n, { prepend }) {
  if (items.has(n.id)) return;
  const li = render(n);
  items.set(n.id, li);
  if (prepend) {
    // Keep newest first even if a replay arrives out of order.
    const after = [...list.children].find((node) => Number(node.dataset.notificationId) < n.id);
    list.insertBefore(li, after ?? null);
  } else {
    list.appendChild(li);
  }
  empty.hidden = true;
}

window.addEventListener('leadpush:notification', (event) => add(event.detail, { prepend: true }));
window.addEventListener('leadpush:unread', (event) => {
  summary.textContent = event.detail > 0 ? `${event.detail} 条未读` : '全部已读';
});

const first = await recent;
for (const n of first.items) add(n, { prepend: false });
empty.hidden = items.size > 0;
summary.textContent = first.unread > 0 ? `${first.unread} 条未读` : '全部已读';

document.getElementById('mark-all-read').addEventListener('click', async () => {
  try {
    await markRead(null);
    for (const li of items.values()) {
      li.classList.remove('unread');
      li.querySelector('.mark-read')?.remove();
    }
  } catch (error) {
    sayError(error);
  }
});
document.body.dataset.ready = 'true';
