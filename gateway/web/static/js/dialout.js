// The agent's "add participant" panel: dial a SIP address or number through
// one of the node's bridges, follow the call live (trying, ringing,
// connected, busy, ...), cancel it while it rings or hang it up.

import { announce, t } from './common.js';

const FINAL = new Set(['busy', 'no_answer', 'cancelled', 'failed', 'ended']);
const STATES = { trying: 'dial_state_trying', ringing: 'dial_state_ringing',
  answered: 'dial_state_answered', busy: 'dial_state_busy', no_answer: 'dial_state_no_answer',
  cancelled: 'dial_state_cancelled', failed: 'dial_state_failed', ended: 'dial_state_ended' };
export const ROLES = { citizen: 'role_citizen', interpreter: 'role_interpreter',
  guardian: 'role_guardian', counsel: 'role_counsel', guest: 'role_guest' };

/** The translated name of a role (the role itself when unknown). */
export function roleName(role) {
  return ROLES[role] ? t(ROLES[role]) : String(role);
}

export class DialOut {
  constructor(root, signaling) {
    this.root = root;
    this.signaling = signaling;
    this.entries = new Map();
    this.el = (id) => root.querySelector(`#${id}`);
    this.el('dial-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const uri = this.el('dial-uri').value.trim();
      if (!uri) return;
      this.signaling.send('dial', { bridge: this.el('dial-bridge').value, uri, role: this.el('dial-role').value });
      this.el('dial-uri').value = '';
    });
    signaling.addEventListener('bridges', (e) => this.offer(e.detail));
    signaling.addEventListener('dial', (e) => this.update(e.detail));
  }

  /** The bridges and roles this agent may use; no bridges: no panel. */
  offer({ bridges = [], roles = [] }) {
    this.root.hidden = bridges.length === 0;
    const bridge = this.el('dial-bridge');
    bridge.replaceChildren(...bridges.map((name) => new Option(name, name)));
    const role = this.el('dial-role');
    role.replaceChildren(...roles.filter((r) => r !== 'citizen')
      .map((r) => new Option(roleName(r), r, r === 'guest', r === 'guest')));
  }

  update(frame) {
    let entry = this.entries.get(frame.id);
    if (!entry) {
      entry = { item: document.createElement('li'), text: document.createElement('span'),
        button: document.createElement('button'), target: frame.uri || frame.bridge, role: frame.role };
      entry.item.dataset.dial = frame.id;
      entry.button.type = 'button';
      entry.button.className = 'secondary';
      entry.button.addEventListener('click', () => this.signaling.send('dial-cancel', { id: frame.id }));
      entry.item.append(entry.text, ' ', entry.button);
      this.el('dial-list').append(entry.item);
      this.entries.set(frame.id, entry);
    }
    if (frame.uri) entry.target = frame.uri;
    const state = STATES[frame.state] ? t(STATES[frame.state], { status: frame.status ?? '' }) : frame.state;
    entry.item.dataset.state = frame.state;
    entry.text.textContent = t('dial_entry', { target: entry.target, role: roleName(entry.role), state });
    entry.button.textContent = frame.state === 'answered' ? t('dial_hangup') : t('dial_cancel');
    entry.button.hidden = FINAL.has(frame.state);
    announce(entry.text.textContent);
  }
}
