"""``python -m bench NAME [args]``: run one benchmark (or ``all``)."""

from __future__ import annotations

import importlib
import sys

BENCHMARKS = {
    "startup": "bench.startup",
    "sip": "bench.sip",
    "rtp": "bench.rtp",
    "media_codecs": "bench.media_codecs",
    "media": "bench.media",
    "webrtc": "bench.webrtc",
    "webrtc_setup": "bench.webrtc_setup",
    "media_router": "bench.media_router",
    "bridge": "bench.bridge",
    "bridge_media": "bench.bridge_media",
    "compositor": "bench.compositor",
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m bench NAME [args]   names: " + ", ".join([*BENCHMARKS, "all"]))
        return 0 if argv else 2
    names = list(BENCHMARKS) if argv[0] == "all" else [argv[0]]
    for name in names:
        if name not in BENCHMARKS:
            print(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)}", file=sys.stderr)
            return 2
        module = importlib.import_module(BENCHMARKS[name])
        module.main(argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
