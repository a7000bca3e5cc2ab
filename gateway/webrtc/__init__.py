"""The browser leg on aiortc; any use of aiortc's internals lives in ``aiortc_internals``."""

from gateway.webrtc.leg import EncodedPayload, LegState, LegStateError, WebRtcLeg
from gateway.webrtc.passthrough import Passthrough

__all__ = ["EncodedPayload", "LegState", "LegStateError", "Passthrough", "WebRtcLeg"]
