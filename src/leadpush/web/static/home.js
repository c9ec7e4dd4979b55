// /console: send each user to their start page.
import { boot } from './common.js';

const me = await boot();
location.replace(me.role === 'sales' ? '/console/inbox' : '/console/customers');
