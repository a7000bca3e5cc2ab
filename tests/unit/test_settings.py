"""Settings: every broken file names the right key path and line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

import gatewayd
from gateway.errors import ConfigError
from gateway.settings import Settings, load_settings, load_settings_file, restart_only_changes

REPO = Path(__file__).resolve().parents[2]

# (name, YAML, expected problem lines as regular expressions)
BROKEN = [
    ("wrong type", "drain_timeout: soon\n", [r"^drain_timeout: .*number.* \(line 1\)$"]),
    (
        "unknown top key",
        "node_id: a\ndrian_timeout: 3\n",
        [r"^drian_timeout: unknown key.*\(line 2\)$"],
    ),
    (
        "unknown nested key",
        "web:\n  host: 127.0.0.1\n  prot: 8080\n",
        [r"^web\.prot: unknown key.*\(line 3\)$"],
    ),
    ("port too big", "sip:\n  port: 70000\n", [r"^sip\.port: .*65535.*\(line 2\)$"]),
    ("port zero", "web:\n  port: 0\n", [r"^web\.port: .*greater than or equal to 1.*\(line 2\)$"]),
    ("port as string", "web:\n  port: '8080'\n", [r"^web\.port: .*integer.*\(line 2\)$"]),
    (
        "missing required",
        "web:\n  tls:\n    cert_file: /etc/hostname\n",
        [r"^web\.tls\.key_file: required key is missing \(line 2\)$"],
    ),
    (
        "unreadable secret file",
        "web:\n  metrics_token: ${file:/nonexistent/secret}\n",
        [
            r"^web\.metrics_token: cannot read secret file /nonexistent/secret: No such file or directory \(line 2\)$"
        ],
    ),
    (
        "unset env var",
        "web:\n  metrics_token: ${env:GATEWAYD_TEST_UNSET_VAR}\n",
        [
            r"^web\.metrics_token: environment variable GATEWAYD_TEST_UNSET_VAR is not set \(line 2\)$"
        ],
    ),
    (
        "relative secret path",
        "web:\n  metrics_token: ${file:secret.txt}\n",
        [r"^web\.metrics_token: secret file path must be absolute.*\(line 2\)$"],
    ),
    (
        "yaml syntax",
        "web:\n  port: 8080\n   host: x\n",
        [r"^\(yaml\): syntax error: .*\(line 3\)$"],
    ),
    ("yaml tab indent", "web:\n\tport: 8080\n", [r"^\(yaml\): syntax error: .*\(line 2\)$"]),
    (
        "bad enum in list",
        "sip:\n  transports:\n    - udp\n    - sctp\n",
        [r"^sip\.transports\[1\]: input should be 'udp'.*\(line 4\)$"],
    ),
    (
        "duplicate key",
        "web:\n  port: 8080\n  port: 8081\n",
        [r"^web\.port: duplicate key, first given on line 2 \(line 3\)$"],
    ),
    ("section not a mapping", "log: debug\n", [r"^log: must be a mapping of keys \(line 1\)$"]),
    ("root is a list", "- web\n", [r"^\(root\): the file must be a mapping.*\(line 1\)$"]),
    (
        "bad log level",
        "log:\n  level: verbose\n",
        [r"^log\.level: input should be 'debug'.*\(line 2\)$"],
    ),
    (
        "host is a url",
        "web:\n  host: http://0.0.0.0\n",
        [r"^web\.host: must be an IP address or host name.*\(line 2\)$"],
    ),
    (
        "short metrics token",
        "web:\n  metrics_token: abc\n",
        [r"^web\.metrics_token: must be at least 16 characters.*\(line 2\)$"],
    ),
    ("negative drain", "drain_timeout: -5\n", [r"^drain_timeout: .*greater than 0 \(line 1\)$"]),
    (
        "duplicate transports",
        "sip:\n  transports: [udp, udp]\n",
        [r"^sip\.transports: each transport may be listed once \(line 2\)$"],
    ),
    (
        "bad node id",
        "node_id: 'node one'\n",
        [r"^node_id: string should match pattern.*\(line 1\)$"],
    ),
    (
        "two errors at once",
        "web:\n  port: -1\nsip:\n  colour: blue\n",
        [r"^web\.port: .*\(line 2\)$", r"^sip\.colour: unknown key.*\(line 4\)$"],
    ),
]


@pytest.mark.parametrize(("name", "text", "expected"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_config_names_key_and_line(
    name: str, text: str, expected: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / f"{name.replace(' ', '_')}.yaml"
    path.write_text(text)
    env_before = dict(os.environ)
    assert gatewayd.main(["check-config", str(path)]) == 2
    assert os.environ == env_before
    problems = [ln for ln in capsys.readouterr().err.splitlines() if not ln.startswith(str(path))]
    assert len(problems) == len(expected), problems
    for pattern, line in zip(expected, problems, strict=True):
        assert re.search(pattern, line), f"{line!r} does not match {pattern!r}"


def test_valid_files_pass(capsys: pytest.CaptureFixture[str]) -> None:
    for path in (REPO / "config" / "gatewayd.yaml", REPO / "config" / "gatewayd.example.yaml"):
        assert gatewayd.main(["check-config", str(path)]) == 0, capsys.readouterr().err


def test_empty_file_means_defaults() -> None:
    assert load_settings("") == Settings()
    assert load_settings("# only a comment\n") == Settings()


def test_embedded_default_is_the_one_node_loopback_setup() -> None:
    settings = load_settings_file(REPO / "config" / "gatewayd.yaml")
    assert (settings.web.host, settings.web.port) == ("127.0.0.1", 8080)
    assert (settings.sip.host, settings.sip.port) == ("127.0.0.1", 5060)
    assert settings.sip.transports == ["udp", "tcp"]
    assert settings.data_dir == Path("./var")


def test_overrides_are_typed_and_reported_as_set() -> None:
    settings = load_settings(
        "web:\n  port: 8080\n", overrides=["web.port=8081", "sip.port=5070", "data_dir=/tmp/x"]
    )
    assert settings.web.port == 8081
    assert settings.sip.port == 5070
    assert settings.data_dir == Path("/tmp/x")
    with pytest.raises(ConfigError) as info:
        load_settings("", overrides=["web.port=99999", "web.nope=1", "noequals"])
    problems = info.value.problems
    assert any(p.startswith("web.port:") and p.endswith("(--set)") for p in problems)
    assert any(p.startswith("web.nope: unknown key") for p in problems)
    assert any("noequals" in p and "key.path=value" in p for p in problems)


def test_secret_references_resolve_and_never_print(tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cr3t-token-0123456789\n")
    settings = load_settings(f"web:\n  metrics_token: ${{file:{secret}}}\n")
    assert settings.web.metrics_token is not None
    assert settings.web.metrics_token.get_secret_value() == "s3cr3t-token-0123456789"
    assert "s3cr3t" not in repr(settings)
    env = {"TOK": "abcdefghijklmnopqrstuvwxyz"}
    settings = load_settings("web:\n  metrics_token: ${env:TOK}\n", environ=env)
    assert settings.web.metrics_token is not None
    assert settings.web.metrics_token.get_secret_value() == env["TOK"]
    settings = load_settings("node_id: ${env:NODE_NAME_UNSET:-fallback}\n", environ={})
    assert settings.node_id == "fallback"
    with pytest.raises(ConfigError) as info:
        load_settings("web:\n  metrics_token: short-${env:TOK}\n", environ={"TOK": "x"})
    assert "short-x" not in str(info.value)


def test_settings_are_frozen() -> None:
    settings = Settings()
    with pytest.raises(ValueError, match="frozen"):
        settings.web.port = 1  # type: ignore[misc]


def _field_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    paths = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        paths.append(path)
        annotation = info.annotation
        for candidate in getattr(annotation, "__args__", (annotation,)):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                paths.extend(_field_paths(candidate, path + "."))
    return paths


def test_example_file_documents_every_key() -> None:
    text = (REPO / "config" / "gatewayd.example.yaml").read_text()
    uncommented = yaml.safe_load(text)
    # Every key appears, set or commented out, and each documented key is real.
    missing = [
        p
        for p in _field_paths(Settings)
        if not re.search(rf"^\s*#?\s*(?:-\s*)?{re.escape(p.rsplit('.', 1)[-1])}:", text, re.M)
    ]
    assert not missing, f"keys not documented in gatewayd.example.yaml: {missing}"
    load_settings(yaml.safe_dump(uncommented))


def test_restart_only_changes_are_named() -> None:
    old = load_settings("")
    new = load_settings("web:\n  port: 9090\nlog:\n  level: debug\n")
    assert restart_only_changes(old, new) == ["web.port"]


def test_check_config_runs_as_a_program(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("web:\n  port: 80800\n")
    result = subprocess.run(
        [sys.executable, str(REPO / "gatewayd.py"), "check-config", str(bad)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "web.port:" in result.stderr and "(line 2)" in result.stderr
    version = subprocess.run(
        [sys.executable, str(REPO / "gatewayd.py"), "version"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert version.stdout.startswith("gatewayd ")
