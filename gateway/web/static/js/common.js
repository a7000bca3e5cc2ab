// Shared by every page: translated messages, live-region announcements,
// <time data-local> shown in the browser's own time zone.

const messages = (() => {
  const node = document.getElementById('messages');
  try {
    return node ? JSON.parse(node.textContent) : {};
  } catch {
    return {};
  }
})();

/** The message `key` of the page's language, `{name}` fields filled from `params`. */
export function t(key, params = {}) {
  const text = Object.prototype.hasOwnProperty.call(messages, key) ? messages[key] : key;
  return text.replace(/\{([a-z_]+)\}/g, (whole, name) =>
    Object.prototype.hasOwnProperty.call(params, name) ? String(params[name]) : whole);
}

/** Say `text` through the page's polite live region. */
export function announce(text) {
  const region = document.getElementById('announcer');
  if (!region) return;
  region.textContent = '';
  window.setTimeout(() => { region.textContent = text; }, 50);
}

/** Show one step section, hide its siblings, move focus to its heading. */
export function showStep(id) {
  const target = document.getElementById(id);
  if (!target) return;
  for (const section of target.parentElement.querySelectorAll(':scope > section.step')) {
    section.hidden = section !== target;
  }
  const heading = target.querySelector('h1, h2');
  if (heading) {
    heading.setAttribute('tabindex', '-1');
    heading.focus();
  }
}

function localTimes() {
  const lang = document.documentElement.lang || 'de';
  const format = new Intl.DateTimeFormat(lang, { dateStyle: 'medium', timeStyle: 'short' });
  for (const node of document.querySelectorAll('time[data-local]')) {
    const moment = new Date(node.getAttribute('datetime'));
    if (!Number.isNaN(moment.getTime())) node.textContent = format.format(moment);
  }
}

localTimes();
