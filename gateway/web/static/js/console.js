// The agent console: the browser's time zone for the start time, copy buttons.
import { announce, t } from './common.js';

const offset = document.getElementById('tz-offset');
if (offset) offset.value = String(new Date().getTimezoneOffset());

for (const button of document.querySelectorAll('button[data-copy]')) {
  button.addEventListener('click', async () => {
    const input = document.getElementById(button.dataset.copy);
    input.select();
    try {
      await navigator.clipboard.writeText(input.value);
      announce(t('copied'));
    } catch {
      announce(t('copy_failed'));
    }
  });
}

const created = document.getElementById('created-heading');
if (created) created.focus();
