// /console/pool: the pools (公司公海 and the team pools the user may see). Salespeople claim a lead (or see why
// not yet: the embargo, today's limit, the cooldown); managers assign selected ones. Hidden phones come masked.
import {
  api, assignees, boot, clear, customerLink, fillUserSelect, fmtTime, formValues, fromUrl, h, pill, say, sayError,
  toUrl,
} from './common.js';
import { assignSelected, emptyRow, PAGE_SIZE, Pager, Selection } from './leadtable.js';

const me = await boot();
const staff = me.role !== 'sales';
// A salesperson who is the admin of a pool hands that pool's leads out (to the pool's users) as well as claiming.
let handOutPools = new Set();
const form = document.getElementById('filters');
const tbody = document.querySelector('#leads tbody');
const assignTo = document.getElementById('assign-to');
const FILTERS = ['poolId', 'source', 'keyword'];
const poolSelect = document.getElementById('f-pool');
const rulesLine = document.getElementById('pool-rules');
let pools = [];

if (staff) {
  try {
    fillUserSelect(assignTo, await assignees(me));
  } catch (error) {
    sayError(error);
  }
}
// The pool switcher: 公司公海 is "company" in the query (its id is null), a team pool its id.
const poolKey = (p) => (p.id === null ? 'company' : String(p.id));
async function loadPools() {
  try {
    pools = (await api('/api/pools')).data;
  } catch (error) {
    sayError(error);
    return;
  }
  const chosen = poolSelect.value || new URLSearchParams(location.search).get('poolId') || '';
  clear(poolSelect);
  poolSelect.appendChild(h('option', { value: '', text: '全部线索池' }));
  for (const p of pools) poolSelect.appendChild(h('option', { value: poolKey(p), text: p.name }));
  poolSelect.value = pools.some((p) => poolKey(p) === chosen) ? chosen : '';
  showRules();
}

function rulesText(p) {
  const parts = [p.name];
  parts.push(p.claimsLeftToday === null ? '今日领取不限' : `今日还可领取 ${p.claimsLeftToday} 条（上限 ${p.effectiveClaimDailyLimit}）`);
  if (p.effectiveCooldownHours > 0) parts.push(`原负责人 ${p.effectiveCooldownHours} 小时内不能领回`);
  if (p.embargoMinutes > 0) parts.push(`新入池 ${p.embargoMinutes} 分钟后可领取`);
  if (p.hidePhone) parts.push('领取前隐藏电话');
  return parts.join('，');
}

function showRules() {
  const shown = poolSelect.value ? pools.filter((p) => poolKey(p) === poolSelect.value) : pools;
  rulesLine.textContent = shown.map(rulesText).join('；');
}

await loadPools();
handOutPools = new Set(pools.filter((p) => p.id !== null && p.canHandOut).map((p) => p.id));
const poolAdmin = !staff && handOutPools.size > 0;
if (poolAdmin) {
  for (const node of document.querySelectorAll('#assign-form, #leads .select-col')) node.hidden = false;
  try {
    const seen = new Set();
    for (const id of handOutPools) {
      for (const u of (await api(`/api/pools/${id}/assignees`)).data) {
        if (!seen.has(u.id)) fillUserSelect(assignTo, [u]);
        seen.add(u.id);
      }
    }
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
    await loadPools();
    await load();
  } catch (error) {
    sayError(error);
    button.disabled = false;
  }
}

// On a phone a salesperson's pool rows become cards (console.css, table.cards): the 领取 button sits next to
// the name instead of off-screen at the end of a wide row; data-label names each value on the card.
if (!staff) document.getElementById('leads').classList.add('cards');

// Why the caller cannot claim a lead right now, in words (null: they can).
function blockText(c) {
  if (c.claimBlock === 'embargo') return `${c.embargoMinutesLeft ?? 1} 分钟后可领取`;
  if (c.claimBlock === 'claim_limit') return '今日领取已达上限';
  if (c.claimBlock === 'cooldown') return '冷却期内不能领回';
  return null;
}

function row(c) {
  const tr = h('tr', { dataset: { customerId: c.id } });
  if (staff || (poolAdmin && handOutPools.has(c.poolId))) tr.appendChild(selection.cell(c, tr));
  else if (poolAdmin) tr.appendChild(h('td', { class: 'select-col' }));
  const embargoed = c.embargoMinutesLeft ? `（${c.embargoMinutesLeft} 分钟后可领取）` : '';
  tr.append(
    h('td', { class: 'name' }, customerLink(c.id, c.name)),
    h('td', { class: 'phone', dataset: { label: '电话' }, text: c.phone, title: c.phoneHidden ? '领取后可见完整号码' : null }),
    h('td', { class: 'pool', dataset: { label: '线索池' }, text: `${c.poolName || '公司公海'}${staff ? embargoed : ''}` }),
    h('td', { dataset: { label: '来源' }, text: c.source || '—' }),
    h('td', { dataset: { label: '状态' } }, pill('status', c.status)),
    h('td', { dataset: { label: '创建时间' }, text: fmtTime(c.createdAt) }),
  );
  if (!staff) {
    const blocked = blockText(c);
    const button = h('button', {
      type: 'button', class: blocked ? '' : 'primary', text: blocked || '领取', 'aria-label': `领取线索：${c.name}`,
      disabled: Boolean(blocked), title: blocked,
    });
    button.addEventListener('click', () => claim(c, button));
    tr.appendChild(h('td', { class: 'row-action' }, button));
  }
  return tr;
}

// Only the answer to the latest listing request is shown: a reload after a claim must not land on top of the
// pool someone switched to meanwhile.
let listings = 0;

async function load(p = page) {
  page = p;
  const mine = ++listings;
  const values = formValues(form);
  toUrl({ poolId: values.poolId, source: values.source, keyword: values.keyword, page: page > 1 ? page : '' });
  showRules();
  try {
    const { data } = await api('/api/customers/public-pool', {
      query: { poolId: values.poolId, source: values.source, keyword: values.keyword, page, pageSize: PAGE_SIZE },
    });
    if (mine !== listings) return;
    selection.reset();
    clear(tbody);
    if (!data.items.length) tbody.appendChild(emptyRow(poolAdmin ? 8 : 7, '线索池里没有符合条件的线索'));
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
poolSelect.addEventListener('change', () => load(1));
document.getElementById('assign-form').addEventListener('submit', async (event) => {
  event.preventDefault();
  const done = await assignSelected({
    customers: selection.selected(),
    assignedTo: Number(assignTo.value) || null,
    batchPath: '/api/customers/public-pool/assign',
  });
  if (done) {
    await loadPools();
    await load();
  }
});

await load();
document.body.dataset.ready = 'true';
