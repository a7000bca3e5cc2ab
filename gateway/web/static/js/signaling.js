// The browser side of the signaling protocol, version 1 (docs/signaling.md).
//
// One WebSocket per page at /ws (same origin), JSON text frames, each an
// object with "v": 1 and a "type". Every frame received is dispatched as an
// event named by its type (event.detail is the frame) and as "message".
// Connection events: "open", "close" (detail: {code, reason}), "reconnecting"
// (detail: {delay}). After an error with code "expired" or "not_found", an
// "ended" frame, a 1008 close or close(), the client does not reconnect.

export const VERSION = 1;
export const MAX_FRAME = 64 * 1024;
export const MAX_CHAT = 2000;
const FATAL_CODES = new Set(['expired', 'not_found']);

/** ws:// or wss:// on this page's own origin. */
export function signalingUrl(loc = window.location) {
  return `${loc.protocol === 'https:' ? 'wss:' : 'ws:'}//${loc.host}/ws`;
}

/** The citizen's hello: its link token. */
export function citizenHello(token) {
  return { type: 'hello', role: 'citizen', token };
}

/** The agent's hello: the appointment and the console page's CSRF token (the
 * session cookie goes with the upgrade request). */
export function agentHello(appointment, csrf) {
  return { type: 'hello', role: 'agent', appointment, csrf };
}

export class Signaling extends EventTarget {
  constructor(hello, { url = signalingUrl(), WebSocketImpl = window.WebSocket, maxDelay = 15000 } = {}) {
    super();
    this.hello = hello;
    this.url = url;
    this.WebSocketImpl = WebSocketImpl;
    this.maxDelay = maxDelay;
    this.ws = null;
    this.stopped = false;
    this.attempts = 0;
    this.timer = null;
  }

  connect() {
    if (this.stopped) return;
    const ws = new this.WebSocketImpl(this.url);
    this.ws = ws;
    ws.addEventListener('open', () => {
      this.attempts = 0;
      this.sendFrame(this.hello);
      this.emit('open', {});
    });
    ws.addEventListener('message', (event) => this.receive(event.data));
    ws.addEventListener('close', (event) => {
      if (this.ws === ws) this.ws = null;
      this.emit('close', { code: event.code, reason: event.reason });
      if (event.code === 1008) this.stopped = true;
      this.scheduleReconnect();
    });
  }

  scheduleReconnect() {
    if (this.stopped) return;
    const delay = Math.min(this.maxDelay, 1000 * 2 ** Math.min(this.attempts, 4));
    this.attempts += 1;
    this.emit('reconnecting', { delay });
    this.timer = window.setTimeout(() => this.connect(), delay);
  }

  receive(data) {
    if (typeof data !== 'string' || data.length > MAX_FRAME) return;
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (!frame || typeof frame !== 'object' || typeof frame.type !== 'string') return;
    if (frame.v !== undefined && frame.v !== VERSION) return;
    if (frame.type === 'error' && FATAL_CODES.has(frame.code)) this.stopped = true;
    if (frame.type === 'ended') this.stopped = true;
    this.emit(frame.type, frame);
    this.emit('message', frame);
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /** Send one frame ({v: 1, type, ...fields}); false when not connected. */
  sendFrame(frame) {
    const text = JSON.stringify({ v: VERSION, ...frame });
    if (text.length > MAX_FRAME) throw new RangeError('signaling frame over 64 KiB');
    if (!this.ws || this.ws.readyState !== 1) return false;
    this.ws.send(text);
    return true;
  }

  send(type, fields = {}) {
    return this.sendFrame({ type, ...fields });
  }

  offer(sdp) { return this.send('offer', { sdp }); }

  answer(sdp) { return this.send('answer', { sdp }); }

  /** A trickled candidate; null is the end of candidates. */
  candidate(candidate) {
    const value = candidate === null ? null : {
      candidate: candidate.candidate,
      sdpMid: candidate.sdpMid,
      sdpMLineIndex: candidate.sdpMLineIndex,
    };
    return this.send('candidate', { candidate: value });
  }

  /** Citizen: the device's status (camera, mic, muted, browser, os, network). */
  device(status) { return this.send('device', { status }); }

  admit(participant) { return this.send('admit', { participant }); }

  reject(participant) { return this.send('reject', { participant }); }

  chat(text) {
    const trimmed = String(text).slice(0, MAX_CHAT);
    return trimmed.trim() ? this.send('chat', { text: trimmed }) : false;
  }

  /** audio/video: true when that medium is muted (off). */
  mute(audio, video) { return this.send('mute', { audio: Boolean(audio), video: Boolean(video) }); }

  screen(on) { return this.send('screen', { on: Boolean(on) }); }

  quality(mode) {
    if (mode !== 'high' && mode !== 'low') throw new RangeError('quality is high or low');
    return this.send('quality', { mode });
  }

  hangup() { return this.send('hangup'); }

  close() {
    this.stopped = true;
    if (this.timer !== null) window.clearTimeout(this.timer);
    if (this.ws) this.ws.close(1000);
    this.ws = null;
  }
}
