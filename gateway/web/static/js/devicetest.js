// The device test: camera preview, microphone level, speaker tone and an
// automatic compatibility check (RTCPeerConnection, codecs, getUserMedia).
// Without a camera, or when the camera is refused, it falls back to audio
// only and says so. Used on /test and in the citizen's flow.

import { t } from './common.js';
import { runEchoTest } from './echotest.js';

const LOW_KBPS = 300; // below this, video will suffer: suggest data saving

const WANTED_CODECS = [['audio', 'audio/opus', 'Opus'], ['video', 'video/VP8', 'VP8'],
  ['video', 'video/H264', 'H.264']];

function setCheck(root, id, ok, text) {
  const item = root.querySelector(`#${id}`);
  if (!item) return;
  item.dataset.state = ok ? 'ok' : 'fail';
  item.querySelector('.check-result').textContent = text;
}

/** What this browser supports: {webrtc, codecs: [names], getUserMedia}. */
export function compatibility() {
  const webrtc = typeof window.RTCPeerConnection === 'function';
  const codecs = [];
  if (webrtc && window.RTCRtpSender && RTCRtpSender.getCapabilities) {
    for (const [kind, mime, name] of WANTED_CODECS) {
      const caps = RTCRtpSender.getCapabilities(kind);
      if (caps && caps.codecs.some((c) => c.mimeType.toLowerCase() === mime.toLowerCase())) {
        codecs.push(name);
      }
    }
  }
  const getUserMedia = Boolean(navigator.mediaDevices && navigator.mediaDevices.getUserMedia);
  return { webrtc, codecs, getUserMedia };
}

/** Camera and microphone, else the microphone alone: {stream, audioOnly, denied}. */
export async function openMedia(cameraId = '', micId = '') {
  const audio = micId ? { deviceId: { exact: micId } } : true;
  const video = cameraId ? { deviceId: { exact: cameraId } } : { width: { ideal: 1280 }, height: { ideal: 720 } };
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio, video });
    return { stream, audioOnly: stream.getVideoTracks().length === 0, denied: false };
  } catch (error) {
    const denied = error && (error.name === 'NotAllowedError' || error.name === 'SecurityError');
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ audio, video: false });
      return { stream, audioOnly: true, denied };
    } catch {
      return { stream: null, audioOnly: true, denied: true };
    }
  }
}

export class DeviceTest extends EventTarget {
  constructor(root) {
    super();
    this.root = root;
    this.stream = null;
    this.audioOnly = false;
    this.audioContext = null;
    this.meterFrame = null;
    this.tone = null;
    this.echo = null;
    this.frames = 0;
    this.level = 0;
    this.el = (id) => root.querySelector(`#${id}`);
  }

  async start() {
    const compat = compatibility();
    setCheck(this.root, 'dt-check-webrtc', compat.webrtc, compat.webrtc ? t('check_ok') : t('check_missing'));
    const codecsOk = compat.codecs.includes('Opus') && compat.codecs.length >= 2;
    setCheck(this.root, 'dt-check-codecs', codecsOk,
      compat.codecs.length ? compat.codecs.join(', ') : t('check_missing'));
    this.el('dt-tone').addEventListener('click', () => this.toggleTone());
    this.el('dt-camera').addEventListener('change', () => this.reopen());
    this.el('dt-mic').addEventListener('change', () => this.reopen());
    if (!compat.getUserMedia) {
      setCheck(this.root, 'dt-check-media', false, t('check_missing'));
      this.finish(false);
      return this.result();
    }
    await this.open();
    await this.listDevices();
    const reachable = compat.webrtc ? await this.testConnection() : false;
    this.finish(compat.webrtc && codecsOk, reachable);
    return this.result();
  }

  /** A real call to the gateway's echo: ICE, DTLS, round trip, bandwidth. */
  async testConnection() {
    const echo = await runEchoTest(this.stream);
    this.echo = echo;
    setCheck(this.root, 'dt-check-connection', echo.connected,
      echo.connected ? t('connection_ok', { rtt: echo.rtt_ms }) : t('connection_failed'));
    const measured = echo.connected && echo.kbps > 0;
    const item = this.root.querySelector('#dt-check-bandwidth');
    setCheck(this.root, 'dt-check-bandwidth', measured,
      measured ? t(echo.kbps < LOW_KBPS ? 'bandwidth_low' : 'bandwidth_ok', { kbps: echo.kbps })
        : t('bandwidth_unknown'));
    if (item) item.dataset.kbps = String(echo.kbps);
    const video = this.el('dt-echo');
    if (video && echo.echoed && echo.remote && echo.remote.getVideoTracks().length) {
      video.srcObject = echo.remote;
      video.hidden = false;
    }
    return echo.connected;
  }

  result() {
    return { stream: this.stream, audioOnly: this.audioOnly };
  }

  async open(cameraId = '', micId = '') {
    const opened = await openMedia(cameraId, micId);
    this.stream = opened.stream;
    this.audioOnly = opened.audioOnly;
    const preview = this.el('dt-preview');
    const cameraState = this.el('dt-camera-state');
    this.el('dt-denied').hidden = !(opened.denied && !opened.stream);
    this.el('dt-audio-only').hidden = !(opened.stream && opened.audioOnly);
    if (opened.stream && !opened.audioOnly) {
      preview.srcObject = opened.stream;
      preview.hidden = false;
      cameraState.textContent = t('camera_ok');
      this.countFrames(preview);
    } else {
      preview.srcObject = null;
      preview.hidden = true;
      cameraState.textContent = opened.denied ? t('camera_denied') : t('camera_none');
    }
    const hasMic = Boolean(opened.stream && opened.stream.getAudioTracks().length);
    setCheck(this.root, 'dt-check-media', hasMic,
      hasMic ? (opened.audioOnly ? t('media_audio_only') : t('media_ok')) : t('media_none'));
    if (hasMic) this.startMeter(opened.stream);
    this.dispatchEvent(new CustomEvent('stream', { detail: this.result() }));
  }

  async reopen() {
    this.stopMedia();
    await this.open(this.el('dt-camera').value, this.el('dt-mic').value);
  }

  countFrames(video) {
    if (!video.requestVideoFrameCallback) return;
    const tick = () => {
      this.frames += 1;
      video.dataset.frames = String(this.frames);
      if (video.srcObject) video.requestVideoFrameCallback(tick);
    };
    video.requestVideoFrameCallback(tick);
  }

  async listDevices() {
    const devices = await navigator.mediaDevices.enumerateDevices();
    const fill = (select, kind, fallbackKey) => {
      select.replaceChildren();
      const current = this.stream && this.stream.getTracks().find((tr) => tr.kind === kind.replace('input', ''));
      const currentId = current ? current.getSettings().deviceId : '';
      let n = 0;
      for (const device of devices.filter((d) => d.kind === kind)) {
        n += 1;
        const option = document.createElement('option');
        option.value = device.deviceId;
        option.textContent = device.label || t(fallbackKey, { n });
        option.selected = device.deviceId === currentId;
        select.append(option);
      }
      select.disabled = n === 0;
      if (n === 0) {
        const option = document.createElement('option');
        option.textContent = t('device_none');
        select.append(option);
      }
    };
    fill(this.el('dt-camera'), 'videoinput', 'camera_n');
    fill(this.el('dt-mic'), 'audioinput', 'microphone_n');
  }

  startMeter(stream) {
    const Context = window.AudioContext || window.webkitAudioContext;
    if (!Context) return;
    this.audioContext = this.audioContext || new Context();
    const source = this.audioContext.createMediaStreamSource(stream);
    const analyser = this.audioContext.createAnalyser();
    analyser.fftSize = 1024;
    source.connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    const meter = this.el('dt-meter');
    const loop = () => {
      analyser.getFloatTimeDomainData(samples);
      let sum = 0;
      for (const s of samples) sum += s * s;
      const rms = Math.sqrt(sum / samples.length);
      this.level = Math.min(1, rms * 4);
      meter.value = this.level;
      meter.dataset.peak = String(Math.max(Number(meter.dataset.peak || 0), this.level));
      this.meterFrame = window.requestAnimationFrame(loop);
    };
    if (this.audioContext.state === 'suspended') this.audioContext.resume().catch(() => {});
    loop();
  }

  toggleTone() {
    const button = this.el('dt-tone');
    if (this.tone) {
      this.tone.stop();
      this.tone = null;
      button.setAttribute('aria-pressed', 'false');
      return;
    }
    const Context = window.AudioContext || window.webkitAudioContext;
    this.audioContext = this.audioContext || new Context();
    this.audioContext.resume().catch(() => {});
    const oscillator = this.audioContext.createOscillator();
    const gain = this.audioContext.createGain();
    oscillator.frequency.value = 440;
    gain.gain.value = 0.2;
    oscillator.connect(gain).connect(this.audioContext.destination);
    oscillator.start();
    oscillator.stop(this.audioContext.currentTime + 2);
    oscillator.addEventListener('ended', () => {
      if (this.tone === oscillator) this.tone = null;
      button.setAttribute('aria-pressed', 'false');
    });
    this.tone = oscillator;
    button.setAttribute('aria-pressed', 'true');
  }

  finish(compatible, reachable = false) {
    const summary = this.el('dt-summary');
    const hasMic = Boolean(this.stream && this.stream.getAudioTracks().length);
    if (!compatible) summary.textContent = t('summary_incompatible');
    else if (!reachable) summary.textContent = t('summary_no_connection');
    else if (!hasMic) summary.textContent = t('summary_no_media');
    else if (this.audioOnly) summary.textContent = t('summary_audio_only');
    else summary.textContent = t('summary_ok');
    summary.dataset.state = compatible && reachable && hasMic ? 'ok' : 'fail';
  }

  stopEcho() {
    if (this.echo) this.echo.stop();
    this.echo = null;
    const video = this.el('dt-echo');
    if (video) { video.srcObject = null; video.hidden = true; }
  }

  stopMedia() {
    this.stopEcho();
    if (this.meterFrame !== null) window.cancelAnimationFrame(this.meterFrame);
    this.meterFrame = null;
    if (this.stream) for (const track of this.stream.getTracks()) track.stop();
    this.stream = null;
  }

  /** Stop the meter but hand the stream on (the call uses it). */
  release() {
    this.stopEcho();
    if (this.meterFrame !== null) window.cancelAnimationFrame(this.meterFrame);
    this.meterFrame = null;
    const stream = this.stream;
    this.stream = null;
    return stream;
  }
}
