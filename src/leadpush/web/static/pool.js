// /console/pool: the public pool (公海). Salespeople claim a lead; managers assign selected ones.
import {
  api, assignees, boot, clear, customerLink, fillUserSelect, fmtTime, formValues, fromUrl, h, pill, say, sayError,
  toUrl,
} from './common.js';
import { assignSelected, emptyRow, PAGE_SIZE, Pager, Selection } from './leadtable.js';

const me = await boot();
const staff = me.role !== 'sales';
const form = document.getElementById('filters');
const tbody = document.querySelector('#leads tbody');
const assignTo = document.getElementById('assign-to');
const FILTERS = ['source', 'keyword'];

if (staff) {
  try {
    fillUserSelect(assignTo, await assignees(me));
  } catch (error) {
    sayError(error);
  }
}
const params = fromUrl(form, FILTERS);
let page = Math.max(1, Number(params.get('page')) || 1);
const selection = new Selection({
  selectAll: document.getElementById('select-all'),
  counter: document.getElementById('selected-count'),
});
const pager = new Pager((p) => load(p));

async function claim(c, button) {
  button.disabled = true;
  try {
    const r = await api(`/api/customers/${c.id}/claim`, { method: 'POST' });
    say(`${r.message}：${c.name}`);
    await load();
  } catch (error) {
    sayError(error);
    button.disabled = false;
  }
}

// On a phone a salesperson's pool rows become cards (console.css, table.cards): the 领取 button sits next to
// the name instead of off-screen at the end of a wide row; data-label names each value on the card.
if (!staff) document.getElementById('leads').classList.add('cards');

function row(c) {
  const tr = h('tr', { dataset: { customerId: c.id } });
  if (staff) tr.appendChild(selection.cell(c, tr));
  tr.append(
    h('td', { class: 'name' }, customerLink(c.id, c.name)),
    h('td', { dataset: { label: '电话' }, text: c.phone }),
    h('td', { dataset: { label: '来源' }, text: c.source || '—' }),
    h('td', { dataset: { label: '状态' } }, pill('status', c.status)),
    h('td', { dataset: { label: '创建时间' }, text: fmtTime(c.createdAt) }),
  );
  if (!staff) {
    const button = h('button', { type: 'button', class: 'primary', text: '领取', 'aria-label': `领取线索：${c.name}` });
    button.addEventListener('click', () => claim(c, button));
    tr.appendChild(h('td', { class: 'row-action' }, button));
  }
  return tr;
}

async function load(p = page) {
  page = p;
  const values = formValues(form);
  toUrl({ source: values.source, keyword: values.keyword, page: page > 1 ? page : '' });
  try {
    const { data } = await api('/api/customers/public-pool', {
      query: { source: values.source, keyword: values.keyword, page, pageSize: PAGE_SIZE },
    });
    selection.reset();
    clear(tbody);
    if (!data.items.length) tbody.appendChild(emptyRow(6, '公海里没有符合条件的线索'));
    for (const c of data.items) tbody.appendChild(row(c));
    pager.show(data.total, data.page, data.pageSize);
  } catch (error) {
    sayError(error);
  }
}

form.addEventListener('submit', (event) => {
  event.preventDefault();
  load(1);
});
document.getElementById('assign-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const done = await assignSelected({
    customers: selection.selected(),
    assignedTo: Number(assignTo.value) || null,
    batchPath: '/api/customers/public-pool/assign',
  });
  if (done) await load();
});

await load();
document.body.dataset.ready = 'true';
