// The device test's test call: the browser's camera and microphone go to
// the gateway and come back (an echo, never decoded there), which proves a
// real ICE and DTLS connection to the gateway and measures the round trip
// and the bandwidth the browser's encoder settles on.
//
// runEchoTest(stream, {seconds}) -> {connected, rtt_ms, kbps, echoed,
// remote: MediaStream | null, stop()}: the measures after `seconds`; the
// echo goes on (the page shows it) until stop() or the gateway's time limit.

import { Signaling } from './signaling.js';

const CONNECT_TIMEOUT_MS = 10000;

function once(target, type, timeoutMs) {
  return new Promise((resolve) => {
    const timer = window.setTimeout(() => resolve(null), timeoutMs);
    target.addEventListener(type, (event) => { window.clearTimeout(timer); resolve(event.detail); }, { once: true });
  });
}

async function sample(pc) {
  const out = { rtt_ms: 0, available_kbps: 0, bytes: 0, frames: 0, at: performance.now() };
  (await pc.getStats()).forEach((report) => {
    if (report.type === 'candidate-pair' && report.nominated && report.state === 'succeeded') {
      if (report.currentRoundTripTime !== undefined) out.rtt_ms = Math.round(report.currentRoundTripTime * 1000);
      if (report.availableOutgoingBitrate) out.available_kbps = Math.round(report.availableOutgoingBitrate / 1000);
    }
    if (report.type === 'inbound-rtp') {
      out.bytes += report.bytesReceived || 0;
      out.frames += report.framesDecoded || 0;
    }
  });
  return out;
}

function connected(pc, timeoutMs) {
  return new Promise((resolve) => {
    const timer = window.setTimeout(() => resolve(false), timeoutMs);
    const check = () => {
      if (pc.connectionState === 'connected') { window.clearTimeout(timer); resolve(true); }
      if (pc.connectionState === 'failed') { window.clearTimeout(timer); resolve(false); }
    };
    pc.addEventListener('connectionstatechange', check);
    check();
  });
}

export async function runEchoTest(stream, { seconds = 4 } = {}) {
  const signaling = new Signaling({ type: 'hello', role: 'test' });
  let pc = null;
  const stop = () => {
    if (pc && pc.signalingState !== 'closed') signaling.hangup();
    if (pc) pc.close();
    signaling.close();
  };
  const result = { connected: false, rtt_ms: 0, kbps: 0, echoed: false, remote: null, stop };
  signaling.addEventListener('ended', () => { if (pc) pc.close(); signaling.close(); });
  const welcome = once(signaling, 'welcome', CONNECT_TIMEOUT_MS);
  signaling.connect();
  const hello = await welcome;
  if (!hello) { stop(); return result; }
  pc = new RTCPeerConnection({ iceServers: hello.ice_servers || [], bundlePolicy: 'max-bundle' });
  const remote = new MediaStream();
  pc.addEventListener('track', (event) => remote.addTrack(event.track));
  pc.addEventListener('icecandidate', (event) => signaling.candidate(event.candidate));
  signaling.addEventListener('answer', (event) => pc.setRemoteDescription({ type: 'answer', sdp: event.detail.sdp }).catch(() => {}));
  signaling.addEventListener('candidate', (event) => {
    const candidate = event.detail.candidate;
    if (pc.remoteDescription) pc.addIceCandidate(candidate || undefined).catch(() => {});
  });
  for (const kind of ['audio', 'video']) {
    const track = stream ? stream.getTracks().find((tr) => tr.kind === kind) : undefined;
    pc.addTransceiver(track || kind, { direction: track ? 'sendrecv' : 'recvonly' });
  }
  await pc.setLocalDescription(await pc.createOffer());
  signaling.offer(pc.localDescription.sdp);
  result.connected = await connected(pc, CONNECT_TIMEOUT_MS);
  if (!result.connected) {
    stop();
    return result;
  }
  result.remote = remote;
  const first = await sample(pc);
  await new Promise((resolve) => { window.setTimeout(resolve, seconds * 1000); });
  const last = await sample(pc);
  result.rtt_ms = last.rtt_ms;
  const received = ((last.bytes - first.bytes) * 8) / (last.at - first.at);
  result.kbps = Math.round(last.available_kbps || received);
  result.echoed = last.frames > 0 || last.bytes > first.bytes;
  return result;
}
