// The agent's call page: lobby with admit/reject, then the call.
import { announce, t } from './common.js';
import { Signaling, agentHello } from './signaling.js';
import { Call } from './call.js';
import { CallUi } from './callui.js';
import { DialOut, roleName } from './dialout.js';

const KINDS = { sip: 'kind_sip', whip: 'kind_whip', whep: 'kind_whep' };

const root = document.getElementById('agent-call');
const state = document.getElementById('connection-state');
const lobby = document.getElementById('lobby');
const empty = document.getElementById('lobby-empty');
const signaling = new Signaling(agentHello(root.dataset.appointment, root.dataset.csrf));
let call = null;
let ui = null;
new DialOut(document.getElementById('dial-out'), signaling); // eslint-disable-line no-new

function describe(status) {
  if (!status) return t('status_unknown');
  const parts = [
    status.camera ? t('status_camera_on') : t('status_camera_off'),
    status.mic ? (status.muted ? t('status_mic_muted') : t('status_mic_on')) : t('status_mic_off'),
  ];
  if (status.quality === 'low') parts.push(t('status_quality_low'));
  if (status.quality === 'audio') parts.push(t('status_quality_audio'));
  if (status.browser) parts.push(t('status_browser', { browser: status.browser, os: status.os || '' }));
  if (status.network) {
    parts.push(t('status_network', { rtt: status.network.rtt_ms ?? 0,
      loss: Math.round((status.network.loss ?? 0) * 100), kbps: status.network.kbps ?? 0 }));
  }
  return parts.join(' · ');
}

function renderLobby(participants) {
  lobby.replaceChildren();
  empty.hidden = participants.length > 0;
  participants.forEach((participant, index) => {
    const item = document.createElement('li');
    const kind = participant.kind || 'browser';
    const name = kind === 'browser' ? t('lobby_entry', { n: index + 1 })
      : t('lobby_entry_kind', { n: index + 1, kind: KINDS[kind] ? t(KINDS[kind]) : kind, role: roleName(participant.role) });
    const title = document.createElement('p');
    title.className = 'who';
    title.textContent = name;
    const since = document.createElement('p');
    const moment = new Date(Date.now() - (participant.waiting_s || 0) * 1000);
    since.textContent = t('lobby_since', { time: Number.isNaN(moment.getTime()) ? '' :
      moment.toLocaleTimeString(document.documentElement.lang, { hour: '2-digit', minute: '2-digit' }) });
    const status = document.createElement('p');
    status.className = 'device-status';
    status.textContent = describe(participant.status);
    const admit = document.createElement('button');
    admit.type = 'button';
    admit.className = 'primary';
    admit.textContent = t('admit');
    admit.setAttribute('aria-label', t('admit_label', { name }));
    admit.addEventListener('click', () => { signaling.admit(participant.id); announce(t('admitting')); });
    const reject = document.createElement('button');
    reject.type = 'button';
    reject.className = 'secondary';
    reject.textContent = t('reject');
    reject.setAttribute('aria-label', t('reject_label', { name }));
    reject.addEventListener('click', () => signaling.reject(participant.id));
    const actions = document.createElement('div');
    actions.className = 'actions';
    actions.append(admit, reject);
    item.append(title, since, status, actions);
    lobby.append(item);
  });
  announce(t('lobby_count', { count: participants.length }));
}

async function localMedia() {
  try {
    return await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
  } catch {
    try {
      return await navigator.mediaDevices.getUserMedia({ audio: true, video: false });
    } catch {
      return null;
    }
  }
}

signaling.addEventListener('welcome', async (e) => {
  state.textContent = t('agent_ready');
  if (call) return;
  call = new Call(signaling, await localMedia());
  ui = new CallUi(document.getElementById('call'), call, { self: 'agent' });
  call.addEventListener('ended', () => {
    ui.stop();
    state.textContent = t('ended_remote');
  });
  call.start(e.detail.ice_servers || []);
});
function renderInCall(participants) {
  const list = document.getElementById('in-call');
  list.replaceChildren(...participants.map((participant) => {
    const item = document.createElement('li');
    const kind = participant.kind || 'browser';
    const who = `${roleName(participant.role)} (${t(KINDS[kind] || 'kind_browser')})`;
    item.className = 'device-status';
    item.dataset.participant = participant.id;
    item.textContent = t('in_call_entry', { who,
      status: kind === 'browser' ? describe(participant.status) : t(KINDS[kind] || 'kind_browser') });
    return item;
  }));
}

signaling.addEventListener('lobby', (e) => {
  renderLobby(e.detail.participants || []);
  renderInCall(e.detail.in_call || []);
});
signaling.addEventListener('reconnecting', () => { state.textContent = t('reconnecting'); });
signaling.addEventListener('error', (e) => {
  if (e.detail.code === 'not_found') state.textContent = t('link_not_found');
});
root.addEventListener('hangup', () => { state.textContent = t('ended_self'); });
signaling.connect();
