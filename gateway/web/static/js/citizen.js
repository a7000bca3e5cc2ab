// The citizen's link: consent -> (device test) -> waiting room -> call.

import { announce, showStep, t } from './common.js';
import { DeviceTest, openMedia } from './devicetest.js';
import { Signaling, citizenHello } from './signaling.js';
import { Call, browserInfo } from './call.js';
import { CallUi } from './callui.js';

const root = document.getElementById('citizen');
const token = root.dataset.token;
let deviceTest = null;
let media = { stream: null, audioOnly: true };
let signaling = null;
let call = null;
let statusTimer = null;

function deviceStatus(network) {
  const stream = media.stream;
  const mic = Boolean(stream && stream.getAudioTracks().some((tr) => tr.readyState === 'live'));
  const camera = Boolean(stream && stream.getVideoTracks().some((tr) => tr.readyState === 'live'));
  const quality = (call && call.limits && call.limits.mode) || 'high';
  return { camera, mic, muted: call ? call.audioMuted : false, quality, ...browserInfo(),
    network: network || { rtt_ms: 0, loss: 0, kbps: 0 } };
}

async function reportDevice() {
  if (!signaling) return;
  const network = call ? await call.network() : null;
  signaling.device(deviceStatus(network));
}

function setWaitState(text) {
  document.getElementById('wait-state').textContent = text;
}

function enterCall(iceServers) {
  showStep('step-call');
  announce(t('admitted'));
  call = new Call(signaling, media.stream);
  const ui = new CallUi(document.getElementById('call'), call, { self: 'citizen' });
  root.addEventListener('hangup', () => finish(t('ended_self')), { once: true });
  call.addEventListener('ended', () => { ui.stop(); finish(t('ended_remote')); });
  call.start(iceServers);
}

function finish(text) {
  if (statusTimer !== null) window.clearInterval(statusTimer);
  if (signaling) signaling.close();
  if (media.stream) for (const track of media.stream.getTracks()) track.stop();
  document.getElementById('ended-text').textContent = text;
  showStep('step-ended');
}

async function enterWaitingRoom() {
  if (deviceTest) {
    media = { stream: deviceTest.release(), audioOnly: deviceTest.audioOnly };
  } else if (navigator.mediaDevices && navigator.mediaDevices.getUserMedia) {
    media = await openMedia();
  }
  document.getElementById('wait-audio-only').hidden = !(media.stream && media.audioOnly);
  showStep('step-wait');
  let iceServers = [];
  signaling = new Signaling(citizenHello(token));
  signaling.addEventListener('welcome', (e) => {
    iceServers = e.detail.ice_servers || [];
    reportDevice();
    statusTimer = window.setInterval(reportDevice, 10000);
  });
  signaling.addEventListener('waiting', () => setWaitState(t('waiting')));
  signaling.addEventListener('admitted', () => enterCall(iceServers));
  signaling.addEventListener('rejected', () => finish(t('rejected')));
  signaling.addEventListener('reconnecting', () => setWaitState(t('reconnecting')));
  signaling.addEventListener('error', (e) => {
    if (e.detail.code === 'expired') finish(t('link_expired'));
    else if (e.detail.code === 'not_found') finish(t('link_not_found'));
  });
  signaling.addEventListener('ended', () => { if (!call) finish(t('ended_remote')); });
  signaling.connect();
}

document.getElementById('consent-form').addEventListener('submit', (event) => {
  event.preventDefault();
  const box = document.getElementById('consent');
  const error = document.getElementById('consent-error');
  if (!box.checked) {
    error.hidden = false;
    box.setAttribute('aria-invalid', 'true');
    box.focus();
    return;
  }
  error.hidden = true;
  box.removeAttribute('aria-invalid');
  const wantsTest = event.submitter ? event.submitter.value === 'test' : true;
  if (wantsTest) {
    showStep('step-test');
    deviceTest = new DeviceTest(document.getElementById('device-test'));
    deviceTest.start();
  } else {
    enterWaitingRoom();
  }
});

document.getElementById('test-done').addEventListener('click', () => enterWaitingRoom());
document.getElementById('wait-leave').addEventListener('click', () => finish(t('left')));
