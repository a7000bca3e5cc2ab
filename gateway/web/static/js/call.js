// One RTCPeerConnection with the gateway, driven by the signaling protocol
// (docs/signaling.md): the browser offers after "admitted" (citizen) or
// "welcome" (agent), trickles candidates both ways, answers the gateway's
// offers, renegotiates for screen sharing, obeys "limits".
//
// Events: "remotestream" (detail: MediaStream), "state" (detail: connection
// state), "screen" (detail: {on} of the other side), "mute" (detail: frame),
// "chat" (detail: frame), "ended" (detail: frame), "limits" (detail: frame).

export class Call extends EventTarget {
  constructor(signaling, localStream) {
    super();
    this.signaling = signaling;
    this.localStream = localStream;
    this.pc = null;
    this.pendingCandidates = [];
    this.screenSender = null;
    this.screenStream = null;
    this.audioMuted = false;
    this.videoMuted = false;
    this.limits = null;
    this.lastBytes = null;
    this.handlers = [];
    this.listen('answer', (frame) => this.onAnswer(frame.sdp));
    this.listen('offer', (frame) => this.onOffer(frame.sdp));
    this.listen('candidate', (frame) => this.onCandidate(frame.candidate));
    this.listen('limits', (frame) => this.applyLimits(frame));
    this.listen('screen', (frame) => this.emit('screen', { on: Boolean(frame.on) }));
    this.listen('mute', (frame) => this.emit('mute', frame));
    this.listen('chat', (frame) => this.emit('chat', frame));
    this.listen('ended', (frame) => { this.close(); this.emit('ended', frame); });
  }

  listen(type, handler) {
    const wrapped = (event) => {
      Promise.resolve(handler(event.detail)).catch((error) => this.emit('failure', { error }));
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
    if (this.localStream) {
      for (const track of this.localStream.getTracks()) pc.addTrack(track, this.localStream);
    }
    if (!this.localStream || this.localStream.getVideoTracks().length === 0) {
      pc.addTransceiver('video', { direction: 'recvonly' });
    }
    if (!this.localStream || this.localStream.getAudioTracks().length === 0) {
      pc.addTransceiver('audio', { direction: 'recvonly' });
    }
    pc.addEventListener('icecandidate', (event) => this.signaling.candidate(event.candidate));
    pc.addEventListener('track', (event) => {
      const stream = event.streams[0] || new MediaStream([event.track]);
      this.emit('remotestream', stream);
    });
    pc.addEventListener('connectionstatechange', () => this.emit('state', pc.connectionState));
    await this.negotiate();
  }

  /** A (re)negotiation always starts with an offer from the browser. */
  async negotiate({ iceRestart = false } = {}) {
    if (!this.pc) return;
    const offer = await this.pc.createOffer({ iceRestart });
    await this.pc.setLocalDescription(offer);
    this.signaling.offer(this.pc.localDescription.sdp);
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

  /** Add the screen as a second video track, tell the other side, renegotiate. */
  async startScreenShare() {
    if (!this.pc || this.screenSender) return false;
    const stream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    const [track] = stream.getVideoTracks();
    this.screenStream = stream;
    this.screenSender = this.pc.addTrack(track, stream);
    track.addEventListener('ended', () => { this.stopScreenShare(); });
    this.signaling.screen(true);
    await this.negotiate();
    return true;
  }

  async stopScreenShare() {
    if (!this.screenSender) return;
    if (this.pc && this.pc.signalingState !== 'closed') this.pc.removeTrack(this.screenSender);
    for (const track of this.screenStream.getTracks()) track.stop();
    this.screenSender = null;
    this.screenStream = null;
    this.signaling.screen(false);
    if (this.pc && this.pc.signalingState !== 'closed') await this.negotiate();
  }

  setQuality(mode) {
    this.signaling.quality(mode);
  }

  /** Cap what this browser sends: {max_kbps, max_width, max_height, max_fps}. */
  async applyLimits(limits) {
    this.limits = limits;
    this.emit('limits', limits);
    if (!this.pc) return;
    for (const sender of this.pc.getSenders()) {
      if (!sender.track || sender.track.kind !== 'video') continue;
      const params = sender.getParameters();
      if (!params.encodings || params.encodings.length === 0) continue;
      const settings = sender.track.getSettings();
      const scale = Math.max(
        1,
        settings.width && limits.max_width ? settings.width / limits.max_width : 1,
        settings.height && limits.max_height ? settings.height / limits.max_height : 1,
      );
      for (const encoding of params.encodings) {
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
    if (this.screenStream) for (const track of this.screenStream.getTracks()) track.stop();
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
