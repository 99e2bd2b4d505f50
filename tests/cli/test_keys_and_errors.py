"""Keys, and the one-line failures of client commands when there is no node to talk to."""

from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from statechannel.core.crypto import PrivateKey
from statechannel.core.types import to_checksum
from statechannel.node.keys import load_keystore
from tests.cli.helpers import PASSWORD, cli, make_keystore, node_command, one_line_error


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_keys_new_then_import(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")  # the first line is the password: a trailing newline is not part of it

    created = cli("keys", "new", "--keystore", str(tmp_path / "new.json"), "--password-file", str(pw), "--json")
    assert created.exit_code == 0, created.output
    address = json.loads(created.stdout)["address"]
    assert load_keystore(tmp_path / "new.json", PASSWORD).address.hex() == address[2:].lower()
    assert address == to_checksum(bytes.fromhex(address[2:]))
    assert _mode(tmp_path / "new.json") == 0o600

    secret = secrets.token_bytes(32)
    key = PrivateKey(secret)
    imported = cli(
        "keys",
        "import",
        "--keystore",
        str(tmp_path / "imp.json"),
        "--password-file",
        str(pw),
        stdin="0x" + secret.hex(),
    )
    assert imported.exit_code == 0, imported.output
    assert to_checksum(key.address) in imported.stdout
    assert secret.hex() not in imported.output and PASSWORD not in imported.output
    assert load_keystore(tmp_path / "imp.json", PASSWORD).address == key.address
    assert _mode(tmp_path / "imp.json") == 0o600
    assert secret.hex() not in (tmp_path / "imp.json").read_text()

    # the environment variable works as well as the file
    env_import = cli(
        "keys",
        "import",
        "--keystore",
        str(tmp_path / "env.json"),
        stdin=secret.hex(),
        env={"STATECHANNEL_PASSWORD": "another"},
    )
    assert env_import.exit_code == 0, env_import.output
    assert load_keystore(tmp_path / "env.json", "another").address == key.address


def test_keys_refuse_clearly(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD)
    make_keystore(tmp_path / "k.json", "existing")
    before = (tmp_path / "k.json").read_bytes()
    line = one_line_error(cli("keys", "new", "--keystore", str(tmp_path / "k.json"), "--password-file", str(pw)))
    assert "never overwritten" in line
    assert (tmp_path / "k.json").read_bytes() == before

    line = one_line_error(
        cli("keys", "import", "--keystore", str(tmp_path / "x.json"), "--password-file", str(pw), stdin="0x1234")
    )
    assert "not a private key" in line and "1234" not in line
    assert not (tmp_path / "x.json").exists()

    env = {"STATECHANNEL_PASSWORD": ""}
    line = one_line_error(cli("keys", "new", "--keystore", str(tmp_path / "y.json"), stdin="", env=env))
    assert "empty password" in line
    # no password source and no terminal to prompt on: say so rather than read the password from a pipe
    unset: dict[str, str | None] = {"STATECHANNEL_PASSWORD": None}
    line = one_line_error(cli("keys", "new", "--keystore", str(tmp_path / "z.json"), stdin="", env=unset))
    assert "no password" in line


def test_client_commands_without_a_node(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    for args in (
        ("node", "info"),
        ("channel", "list"),
        ("payments",),
        ("events",),
        ("peer", "connect", "0x" + "ab" * 20, "127.0.0.1:9"),
        ("channel", "pay", "0x" + "11" * 32, "5"),
    ):
        line = one_line_error(cli(*args, "--data-dir", str(empty)))
        assert line.startswith("Error: node not running: no node.json in"), line

    # a node.json left behind by a node that was killed
    stale = tmp_path / "stale"
    stale.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(10)
    info = {"pid": dead.pid, "address": "0x" + "00" * 20, "api": "http://127.0.0.1:9", "listen": "127.0.0.1:9"}
    (stale / "node.json").write_text(json.dumps({**info, "chain_id": 1, "adjudicator": "0x" + "00" * 20}))
    line = one_line_error(cli("channel", "list", "--data-dir", str(stale)))
    assert "node not running" in line and "gone" in line

    # a live process, but nothing answers at the advertised url
    (stale / "node.json").write_text(json.dumps({**info, "pid": os.getpid(), "chain_id": 1, "adjudicator": "0x"}))
    token = stale / "api-token"
    token.write_text("ab" * 32)
    token.chmod(0o600)
    line = one_line_error(cli("node", "info", "--data-dir", str(stale)))
    assert "node not running: nothing answers at http://127.0.0.1:9" in line

    token.chmod(0o644)  # a token others can read is refused, not used
    line = one_line_error(cli("node", "info", "--data-dir", str(stale)))
    assert "chmod 600" in line

    # input checked before anything is sent
    line = one_line_error(cli("channel", "pay", "0x" + "11" * 32, "1.5", "--data-dir", str(stale)))
    assert "whole number" in line


def test_node_start_with_the_wrong_password(tmp_path: Path) -> None:
    keystore = tmp_path / "k.json"
    make_keystore(keystore, "wrong password")
    pw = tmp_path / "pw"
    pw.write_text("not the password\n")
    proc = subprocess.run(
        node_command(keystore, tmp_path / "data", "embedded", "--password-file", str(pw)),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    err = proc.stderr.decode().strip().splitlines()
    assert err == [f"Error: wrong password for keystore {keystore}"]
    assert not (tmp_path / "data" / "node.json").exists()


def test_a_closed_channel_lists_what_the_chain_paid(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from statechannel.cli.channel import _channels_table

    monkeypatch.setenv("COLUMNS", "200")
    paid = [{"asset": "eth", "my_balance": "1000", "peer_balance": "0"}]
    row = {
        "channel_id": "0xabc",
        "peer": "0xB",
        "peer_connected": False,
        "phase": "closed",
        "version": 9,
        "balances": [{"asset": "eth", "my_balance": "400", "peer_balance": "600"}],
        "outcome": {"version": 1, "challenged": False, "loss": True, "paid": paid},
    }
    _channels_table([row])
    shown = capsys.readouterr().out
    assert "closed at v1" in shown and "LOSS" in shown and "1000" in shown and "400" not in shown
