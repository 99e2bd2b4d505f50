"""`statechannel backup`: an encrypted export of a node's channels, and a restore from it."""

from __future__ import annotations

from pathlib import Path

import click

from statechannel.cli.common import PASSWORD_ENV, data_dir_option, fail, out, unlock_key


@click.group()
def backup() -> None:
    """Keep your channels safe from a lost disk: export them (encrypted to your key), restore them."""


@backup.command("export")
@data_dir_option
@click.option("--keystore", required=True, type=click.Path(dir_okay=False), help="the node's key (encrypts)")
@click.option("--password-file", type=click.Path(dir_okay=False), help=f"else ${PASSWORD_ENV}, else a prompt")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="the file to write (0600)")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def backup_export(data_dir: str, keystore: str, password_file: str | None, out_path: str, as_json: bool) -> None:
    """Write every channel of the node (and its peer book) to one file only this key can read.

    Example: statechannel backup export --data-dir ./a --keystore a.json --out a.backup"""
    from statechannel.backup import BackupError, export

    key = unlock_key(keystore, password_file)
    try:
        count = export(Path(data_dir).expanduser(), key, Path(out_path).expanduser())
    except BackupError as exc:
        raise fail(exc.detail) from None
    result = {"file": out_path, "channels": count}
    out(as_json, result, lambda: click.echo(f"{count} channel(s) written to {out_path}"))


@backup.command("restore")
@click.option("--in", "in_path", required=True, type=click.Path(dir_okay=False, exists=True), help="the backup file")
@click.option("--keystore", required=True, type=click.Path(dir_okay=False), help="the node's key (decrypts)")
@click.option("--password-file", type=click.Path(dir_okay=False), help=f"else ${PASSWORD_ENV}, else a prompt")
@click.option("--data-dir", required=True, help="a new, empty data directory to restore into")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def backup_restore(in_path: str, keystore: str, password_file: str | None, data_dir: str, as_json: bool) -> None:
    """Restore the channels into a new data directory. The backup may be older than what the node last
    signed, so every live channel recovers: once started, the node takes the newest state the peer can
    prove (both signatures checked), signs nothing more on it, and closes with it.

    Example: statechannel backup restore --in a.backup --keystore a.json --data-dir ./a-restored"""
    from statechannel.backup import BackupError, restore

    key = unlock_key(keystore, password_file)
    try:
        restored = restore(Path(in_path).expanduser(), key, Path(data_dir).expanduser())
    except BackupError as exc:
        raise fail(exc.detail) from None
    rows = [{"channel_id": "0x" + r.channel_id.hex(), "phase": r.phase, "version": r.version} for r in restored]

    def human() -> None:
        for r in rows:
            click.echo(f"{r['channel_id']}  {r['phase']}  version {r['version']} (as the backup holds it)")
        click.echo(f"{len(rows)} channel(s) restored into {data_dir}: start the node to recover them")

    out(as_json, rows, human)
