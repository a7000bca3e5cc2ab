"""gatewayd: an open media gateway for browser video appointments, bridged into SIP."""

__version__ = "0.1.0"
