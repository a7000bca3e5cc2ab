// The call controls of both pages: videos, mute, camera, screen, quality,
// hang-up, duration and chat, bound to a Call (call.js).

import { announce, t } from './common.js';

function toggle(button, pressed) {
  button.setAttribute('aria-pressed', pressed ? 'true' : 'false');
}

export class CallUi {
  constructor(root, call, { self }) {
    this.root = root;
    this.call = call;
    this.self = self;
    this.started = null;
    this.timer = null;
    this.el = (id) => root.querySelector(`#${id}`);
    const local = this.el('local-video');
    if (call.localStream && call.localStream.getVideoTracks().length) local.srcObject = call.localStream;
    else local.hidden = true;
    this.bind();
  }

  bind() {
    const { call } = this;
    this.el('btn-mute').addEventListener('click', (e) => {
      const muted = e.currentTarget.getAttribute('aria-pressed') !== 'true';
      call.setAudioMuted(muted);
      toggle(e.currentTarget, muted);
      announce(muted ? t('mic_muted') : t('mic_unmuted'));
    });
    const camera = this.el('btn-camera');
    if (!call.localStream || call.localStream.getVideoTracks().length === 0) camera.disabled = true;
    camera.addEventListener('click', (e) => {
      const off = e.currentTarget.getAttribute('aria-pressed') !== 'true';
      call.setVideoMuted(off);
      toggle(e.currentTarget, off);
      announce(off ? t('camera_off') : t('camera_on'));
    });
    const screen = this.el('btn-screen');
    if (!navigator.mediaDevices || !navigator.mediaDevices.getDisplayMedia) screen.disabled = true;
    screen.addEventListener('click', async (e) => {
      const button = e.currentTarget;
      try {
        if (button.getAttribute('aria-pressed') === 'true') {
          await call.stopScreenShare();
          toggle(button, false);
          announce(t('screen_stopped'));
        } else if (await call.startScreenShare()) {
          toggle(button, true);
          announce(t('screen_started'));
        }
      } catch {
        announce(t('screen_failed'));
      }
    });
    this.el('btn-quality').addEventListener('click', (e) => {
      const low = e.currentTarget.getAttribute('aria-pressed') !== 'true';
      call.setQuality(low ? 'low' : 'high');
      toggle(e.currentTarget, low);
      announce(low ? t('quality_low') : t('quality_high'));
    });
    this.el('btn-hangup').addEventListener('click', () => {
      call.hangup();
      this.stop();
      this.root.dispatchEvent(new CustomEvent('hangup', { bubbles: true }));
    });
    this.el('chat-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const input = this.el('chat-text');
      const text = input.value;
      if (!text.trim()) return;
      if (call.signaling.chat(text)) {
        this.addChat(this.self, text, new Date().toISOString(), true);
        input.value = '';
      } else {
        announce(t('chat_failed'));
      }
    });
    call.addEventListener('remotestream', (e) => { this.el('remote-video').srcObject = e.detail; });
    call.addEventListener('remotescreen', (e) => { this.el('remote-screen').srcObject = e.detail; });
    call.addEventListener('state', (e) => this.onState(e.detail));
    call.addEventListener('chat', (e) => {
      const frame = e.detail;
      if (frame.from !== this.self) this.addChat(frame.from, frame.text, frame.at, false);
    });
    call.addEventListener('mute', (e) => {
      announce(e.detail.audio ? t('remote_muted') : t('remote_unmuted'));
    });
    call.addEventListener('screen', (e) => {
      this.root.classList.toggle('remote-screen', e.detail.on);
      this.el('remote-screen').hidden = !e.detail.on;
      announce(e.detail.on ? t('remote_screen_on') : t('remote_screen_off'));
    });
    call.addEventListener('limits', (e) => {
      const mode = e.detail.mode;
      const text = { low: t('limits', { kbps: e.detail.max_kbps }), audio: t('quality_audio_only') };
      this.el('call-quality').textContent = text[mode] || '';
      if (mode === 'audio') announce(t('quality_audio_only'));
    });
  }

  onState(state) {
    const labels = { connecting: 'state_connecting', connected: 'state_connected',
      disconnected: 'state_disconnected', failed: 'state_failed', closed: 'state_closed' };
    if (labels[state]) this.el('call-state').textContent = t(labels[state]);
    if (state === 'connected' && this.started === null) this.startClock();
  }

  startClock() {
    this.started = Date.now();
    const out = this.el('call-duration');
    const tick = () => {
      const seconds = Math.floor((Date.now() - this.started) / 1000);
      const h = Math.floor(seconds / 3600);
      const m = Math.floor((seconds % 3600) / 60);
      const s = String(seconds % 60).padStart(2, '0');
      out.textContent = h ? `${h}:${String(m).padStart(2, '0')}:${s}` : `${m}:${s}`;
      out.setAttribute('datetime', `PT${seconds}S`);
    };
    tick();
    this.timer = window.setInterval(tick, 1000);
  }

  stop() {
    if (this.timer !== null) window.clearInterval(this.timer);
    this.timer = null;
  }

  addChat(from, text, at, mine) {
    const item = document.createElement('li');
    item.className = mine ? 'mine' : 'theirs';
    const who = document.createElement('span');
    who.className = 'who';
    who.textContent = mine ? t('chat_me') : t(from === 'agent' ? 'chat_agent' : 'chat_citizen');
    const when = document.createElement('time');
    const moment = new Date(at);
    if (!Number.isNaN(moment.getTime())) {
      when.dateTime = moment.toISOString();
      when.textContent = moment.toLocaleTimeString(document.documentElement.lang, { hour: '2-digit', minute: '2-digit' });
    }
    const body = document.createElement('p');
    body.textContent = text;
    item.append(who, ' ', when, body);
    this.el('chat-log').append(item);
    item.scrollIntoView({ block: 'nearest' });
  }
}
