// One RTCPeerConnection with the gateway, driven by the signaling protocol
// (docs/signaling.md): the browser offers after "admitted" (citizen) or
// "welcome" (agent), trickles candidates both ways, answers the gateway's
// offers, obeys "limits", restarts ICE after a network blip.
//
// Three m-lines from the start, in this order: audio, camera video, screen
// video. Sharing the screen puts a track on the screen sender
// (replaceTrack): no renegotiation, so the other side sees it at once.
//
// Events: "remotestream" (detail: MediaStream of the camera and audio),
// "remotescreen" (detail: MediaStream of the other side's screen), "state"
// (detail: connection state), "screen" (detail: {on} of the other side),
// "mute" (detail: frame), "chat" (detail: frame), "ended" (detail: frame),
// "limits" (detail: frame).

const SLOTS = ['audio', 'video', 'screen'];
const RESTART_AFTER_MS = 2000; // "disconnected" this long: restart ICE

export class Call extends EventTarget {
  constructor(signaling, localStream) {
    super();
    this.signaling = signaling;
    this.localStream = localStream;
    this.pc = null;
    this.pendingCandidates = [];
    this.transceivers = {};
    this.remoteStream = null;
    this.screenStream = null;
    this.restartTimer = null;
    this.audioMuted = false;
    this.videoMuted = false;
    this.limits = null;
    this.lastBytes = null;
    this.handlers = [];
    this.listen('answer', (frame) => this.onAnswer(frame.sdp));
    this.listen('offer', (frame) => this.onOffer(frame.sdp));
    this.listen('candidate', (frame) => this.onCandidate(frame.candidate));
    this.listen('limits', (frame) => this.applyLimits(frame));
    this.listen('renegotiate', (frame) => this.preferCodecs(frame.prefer || {}));
    this.listen('screen', (frame) => this.emit('screen', { on: Boolean(frame.on) }));
    this.listen('mute', (frame) => this.emit('mute', frame));
    this.listen('chat', (frame) => this.emit('chat', frame));
    this.listen('ended', (frame) => { this.close(); this.emit('ended', frame); });
  }

  listen(type, handler) {
    const wrapped = (event) => {
      Promise.resolve(handler(event.detail)).catch((error) => {
        console.warn(`call: ${type} failed`, error); // eslint-disable-line no-console
        this.emit('failure', { error });
      });
    };
    this.signaling.addEventListener(type, wrapped);
    this.handlers.push([type, wrapped]);
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /** Create the peer connection with the welcome's ICE servers and send the offer. */
  async start(iceServers = []) {
    if (this.pc) return;
    const pc = new RTCPeerConnection({ iceServers, bundlePolicy: 'max-bundle' });
    this.pc = pc;
    const local = this.localStream;
    const audio = local ? local.getAudioTracks()[0] : undefined;
    const camera = local ? local.getVideoTracks()[0] : undefined;
    const streams = local ? [local] : [];
    this.transceivers.audio = pc.addTransceiver(audio || 'audio', { direction: 'sendrecv', streams });
    this.transceivers.video = pc.addTransceiver(camera || 'video', { direction: 'sendrecv', streams });
    this.transceivers.screen = pc.addTransceiver('video', { direction: 'sendrecv' });
    this.remoteStream = new MediaStream();
    this.remoteScreen = new MediaStream();
    pc.addEventListener('icecandidate', (event) => this.signaling.candidate(event.candidate));
    pc.addEventListener('track', (event) => this.onTrack(event.transceiver, event.track));
    pc.addEventListener('connectionstatechange', () => this.onConnectionState(pc));
    await this.negotiate();
  }

  onTrack(transceiver, track) {
    const slot = SLOTS.find((name) => this.transceivers[name] === transceiver);
    if (slot === 'screen') {
      this.remoteScreen.getTracks().forEach((old) => this.remoteScreen.removeTrack(old));
      this.remoteScreen.addTrack(track);
      this.emit('remotescreen', this.remoteScreen);
      return;
    }
    this.remoteStream.getTracks().filter((old) => old.kind === track.kind)
      .forEach((old) => this.remoteStream.removeTrack(old));
    this.remoteStream.addTrack(track);
    this.emit('remotestream', this.remoteStream);
  }

  /** Connection lost for a moment (network change): restart ICE on our own. */
  onConnectionState(pc) {
    if (pc !== this.pc) return;
    const state = pc.connectionState;
    this.emit('state', state);
    if (this.restartTimer !== null) window.clearTimeout(this.restartTimer);
    this.restartTimer = null;
    if (state === 'failed') this.restart();
    else if (state === 'disconnected') {
      this.restartTimer = window.setTimeout(() => this.restart(), RESTART_AFTER_MS);
    }
  }

  async restart() {
    this.restartTimer = null;
    if (!this.pc || this.pc.signalingState !== 'stable') return;
    await this.negotiate({ iceRestart: true });
  }

  /** A (re)negotiation always starts with an offer from the browser. */
  async negotiate({ iceRestart = false } = {}) {
    if (!this.pc) return;
    const offer = await this.pc.createOffer({ iceRestart });
    await this.pc.setLocalDescription(offer);
    this.signaling.offer(this.pc.localDescription.sdp);
  }

  /** The gateway asks for codecs first ({audio: 'PCMU'}: the other side speaks only
   * G.711, so audio can pass through): offer again with them first (ICE restart). */
  async preferCodecs(prefer) {
    if (!this.pc || !RTCRtpReceiver.getCapabilities) return;
    for (const [kind, name] of Object.entries(prefer)) {
      const transceiver = this.transceivers[kind === 'audio' ? 'audio' : 'video'];
      const caps = RTCRtpReceiver.getCapabilities(kind);
      if (!transceiver || !caps || !transceiver.setCodecPreferences) continue;
      const wanted = `${kind}/${String(name)}`.toLowerCase();
      const first = caps.codecs.filter((c) => c.mimeType.toLowerCase() === wanted);
      if (first.length === 0) continue;
      transceiver.setCodecPreferences([...first, ...caps.codecs.filter((c) => !first.includes(c))]);
    }
    if (this.pc.signalingState === 'stable') await this.negotiate({ iceRestart: true });
  }

  async onAnswer(sdp) {
    if (!this.pc || this.pc.signalingState !== 'have-local-offer') return;
    await this.pc.setRemoteDescription({ type: 'answer', sdp });
    await this.flushCandidates();
  }

  /** The gateway offers (a new remote track): the browser answers. On glare
   * the browser yields (setRemoteDescription rolls its own offer back). */
  async onOffer(sdp) {
    if (!this.pc) await this.start();
    await this.pc.setRemoteDescription({ type: 'offer', sdp });
    await this.flushCandidates();
    const answer = await this.pc.createAnswer();
    await this.pc.setLocalDescription(answer);
    this.signaling.answer(this.pc.localDescription.sdp);
  }

  async onCandidate(candidate) {
    if (!this.pc || !this.pc.remoteDescription) {
      this.pendingCandidates.push(candidate);
      return;
    }
    await this.addCandidate(candidate);
  }

  async addCandidate(candidate) {
    if (candidate === null || candidate === undefined) {
      await this.pc.addIceCandidate();
    } else {
      await this.pc.addIceCandidate(candidate);
    }
  }

  async flushCandidates() {
    const queued = this.pendingCandidates.splice(0);
    for (const candidate of queued) await this.addCandidate(candidate);
  }

  setAudioMuted(muted) {
    this.audioMuted = muted;
    for (const track of this.localStream ? this.localStream.getAudioTracks() : []) {
      track.enabled = !muted;
    }
    this.signaling.mute(this.audioMuted, this.videoMuted);
  }

  setVideoMuted(muted) {
    this.videoMuted = muted;
    for (const track of this.localStream ? this.localStream.getVideoTracks() : []) {
      track.enabled = !muted;
    }
    this.signaling.mute(this.audioMuted, this.videoMuted);
  }

  /** Put the screen on the screen slot and tell the other side (no renegotiation). */
  async startScreenShare() {
    if (!this.pc || this.screenStream) return false;
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    const [track] = stream.getVideoTracks();
    this.screenStream = stream;
    track.addEventListener('ended', () => { this.stopScreenShare(); });
    await this.transceivers.screen.sender.replaceTrack(track);
    if (this.limits) await this.applyLimits(this.limits);
    this.signaling.screen(true);
    return true;
  }

  async stopScreenShare() {
    if (!this.screenStream) return;
    const stream = this.screenStream;
    this.screenStream = null;
    if (this.pc) await this.transceivers.screen.sender.replaceTrack(null);
    for (const track of stream.getTracks()) track.stop();
    this.signaling.screen(false);
  }

  setQuality(mode) {
    this.signaling.quality(mode);
  }

  /** Cap what this browser sends: {max_kbps, max_width, max_height, max_fps}. */
  async applyLimits(limits) {
    this.limits = limits;
    this.emit('limits', limits);
    if (!this.pc) return;
    for (const slot of ['video', 'screen']) {
      const { sender } = this.transceivers[slot];
      if (!sender.track) continue;
      const params = sender.getParameters();
      if (!params.encodings || params.encodings.length === 0) continue;
      const settings = sender.track.getSettings();
      // A shared screen keeps its resolution (text must stay legible) and
      // gives up frame rate and bit rate instead.
      const scale = slot === 'screen' ? 1 : Math.max(
        1,
        settings.width && limits.max_width ? settings.width / limits.max_width : 1,
        settings.height && limits.max_height ? settings.height / limits.max_height : 1,
      );
      for (const encoding of params.encodings) {
        // audio only (a link too poor for video): the encoder stops, the track stays
        encoding.active = limits.mode !== 'audio';
        if (limits.max_kbps) encoding.maxBitrate = limits.max_kbps * 1000;
        if (limits.max_fps) encoding.maxFramerate = limits.max_fps;
        encoding.scaleResolutionDownBy = scale;
      }
      await sender.setParameters(params);
    }
  }

  /** {rtt_ms, loss, kbps} of the connection now (for the device status). */
  async network() {
    const result = { rtt_ms: 0, loss: 0, kbps: 0 };
    if (!this.pc) return result;
    const stats = await this.pc.getStats();
    let bytes = 0;
    let lost = 0;
    let received = 0;
    stats.forEach((report) => {
      if (report.type === 'candidate-pair' && report.nominated && report.currentRoundTripTime) {
        result.rtt_ms = Math.round(report.currentRoundTripTime * 1000);
      }
      if (report.type === 'outbound-rtp') bytes += report.bytesSent || 0;
      if (report.type === 'inbound-rtp') {
        lost += Math.max(0, report.packetsLost || 0);
        received += report.packetsReceived || 0;
      }
    });
    const now = performance.now();
    if (this.lastBytes) {
      const seconds = (now - this.lastBytes.at) / 1000;
      if (seconds > 0) result.kbps = Math.round(((bytes - this.lastBytes.bytes) * 8) / 1000 / seconds);
    }
    this.lastBytes = { at: now, bytes };
    result.loss = received + lost > 0 ? Number((lost / (received + lost)).toFixed(3)) : 0;
    return result;
  }

  hangup() {
    this.signaling.hangup();
    this.close();
  }

  close() {
    if (this.restartTimer !== null) window.clearTimeout(this.restartTimer);
    this.restartTimer = null;
    if (this.screenStream) for (const track of this.screenStream.getTracks()) track.stop();
    this.screenStream = null;
    if (this.pc) this.pc.close();
    this.pc = null;
  }

  dispose() {
    this.close();
    for (const [type, handler] of this.handlers) this.signaling.removeEventListener(type, handler);
    this.handlers = [];
  }
}

/** The browser and operating system, coarsely (for the agent's device status). */
export function browserInfo(ua = navigator.userAgent) {
  const browsers = [['Edg/', 'Edge'], ['OPR/', 'Opera'], ['Firefox/', 'Firefox'],
    ['Chrome/', 'Chrome'], ['Safari/', 'Safari']];
  const systems = [['Android', 'Android'], ['iPhone', 'iOS'], ['iPad', 'iOS'],
    ['Windows', 'Windows'], ['Mac OS X', 'macOS'], ['CrOS', 'ChromeOS'], ['Linux', 'Linux']];
  const browser = (browsers.find(([needle]) => ua.includes(needle)) || [null, 'other'])[1];
  const os = (systems.find(([needle]) => ua.includes(needle)) || [null, 'other'])[1];
  return { browser, os };
}
