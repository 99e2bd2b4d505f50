"""`node start --tower/--tower-policy`: bad values end in one line, and a node pointed at a dead tower still
starts, pays and stops within its flush bound."""

from __future__ import annotations

import time
from pathlib import Path

from tests.anvil import free_port
from tests.cli.helpers import cli, cli_json, make_keystore, one_line_error, start_daemon


def test_bad_tower_options_fail_in_one_line(tmp_path: Path) -> None:
    make_keystore(tmp_path / "k.json", "towers cli")
    base = ("node", "start", "--rpc", "embedded", "--keystore", str(tmp_path / "k.json"))
    env = {"STATECHANNEL_PASSWORD": "unused"}
    policy = one_line_error(cli(*base, "--data-dir", str(tmp_path / "d1"), "--tower-policy", "often", env=env))
    assert "tower policy" in policy
    url = one_line_error(cli(*base, "--data-dir", str(tmp_path / "d2"), "--tower", "ftp://tower", env=env))
    assert "http(s) URL" in url
    lone = one_line_error(cli(*base, "--data-dir", str(tmp_path / "d3"), "--tower-budget", "5", env=env))
    assert "--tower-budget needs at least one --tower" in lone
    negative = cli(*base, "--data-dir", str(tmp_path / "d4"), "--tower", "http://t", "--tower-budget", "-1", env=env)
    assert negative.exit_code != 0 and "tower-budget" in negative.output
    consent = cli(*base, "--data-dir", str(tmp_path / "d5"), "--tower", "http://t", "--tower-accept-terms", env=env)
    assert "--tower-accept-terms needs --tower-budget" in one_line_error(consent)


def test_a_dead_tower_does_not_stop_the_node_from_working_or_stopping(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    make_keystore(tmp_path / "k.json", "towers cli dead")
    node = start_daemon(tmp_path / "k.json", tmp_path / "d", "embedded", "--tower", dead)
    try:
        info = cli_json("node", "info", "--data-dir", str(node.data_dir))
        assert info["address"]
        assert cli_json("channel", "list", "--data-dir", str(node.data_dir)) == []
    finally:
        started = time.monotonic()
        assert node.stop() == 0
        assert time.monotonic() - started < 15
    log = node.log()
    assert f"watchtowers {dead}, pushing every update" in log
