"""gatewayd: the command line.

    gatewayd run [--config PATH] [--set key.path=value ...]
    gatewayd check-config PATH [--set key.path=value ...]
    gatewayd version

Exit codes: 0 success; 1 start-up failed (port taken, data dir not
writable); 2 invalid configuration or usage.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from gateway import __version__

EXIT_OK = 0
EXIT_STARTUP = 1
EXIT_CONFIG = 2

#: The embedded default: one node, SQLite under ./var, loopback only.
DEFAULT_CONFIG = Path(__file__).resolve().parent / "config" / "gatewayd.yaml"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gatewayd", description="Open media gateway daemon")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the daemon in the foreground")
    run.add_argument("--config", type=Path, help="YAML file (default: the embedded default)")
    run.add_argument(
        "--demo",
        action="store_true",
        help="on a loopback web host: create a demo agent and appointment, print their URLs",
    )
    check = sub.add_parser("check-config", help="validate a YAML file and exit")
    check.add_argument("path", type=Path)
    for p in (run, check):
        p.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY.PATH=VALUE",
            help="override one setting (repeatable), e.g. --set web.port=8081",
        )
    sub.add_parser("version", help="print the version")
    return parser


def _default_config_text() -> str:
    if DEFAULT_CONFIG.is_file():
        return DEFAULT_CONFIG.read_text(encoding="utf-8")
    # Installed without the source tree: the model defaults are the same setup.
    return ""


def cmd_check_config(path: Path, overrides: list[str]) -> int:
    """Validate a file; print every problem as ``key.path: reason (line N)``."""
    from gateway.errors import ConfigError
    from gateway.settings import load_settings_file

    try:
        load_settings_file(path, overrides=overrides)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{path}: {len(exc.problems)} error(s)", file=sys.stderr)
        return EXIT_CONFIG
    print(f"{path}: ok")
    return EXIT_OK


def cmd_run(config: Path | None, overrides: list[str], *, demo: bool = False) -> int:
    """Start the daemon and block until it has drained."""
    from gateway.app import Gateway, StartupError
    from gateway.errors import ConfigError
    from gateway.log import configure_logging, get_logger
    from gateway.settings import load_settings, load_settings_file
    from gateway.wiring import add_services

    try:
        if config is None:
            settings = load_settings(_default_config_text(), overrides=overrides)
        else:
            settings = load_settings_file(config, overrides=overrides)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(
            f"{config or 'embedded default'}: not started, configuration invalid", file=sys.stderr
        )
        return EXIT_CONFIG
    configure_logging(
        settings.log.level,
        settings.log.format,
        redact_ip=settings.log.redact_ip,
        node_id=settings.node_id,
    )
    log = get_logger("gatewayd")

    async def main() -> int:
        gateway = Gateway(settings, config_path=config, overrides=overrides)
        add_services(gateway, demo=demo)
        try:
            await gateway.start()
        except StartupError as exc:
            log.error("start-up failed", error=exc.message)
            return EXIT_STARTUP
        gateway.install_signal_handlers()
        return await gateway.serve()

    return asyncio.run(main())


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    args = _parser().parse_args(argv)
    if args.command == "version":
        print(f"gatewayd {__version__}")
        return EXIT_OK
    if args.command == "check-config":
        return cmd_check_config(args.path, args.overrides)
    return cmd_run(args.config, args.overrides, demo=args.demo)


if __name__ == "__main__":
    sys.exit(main())
