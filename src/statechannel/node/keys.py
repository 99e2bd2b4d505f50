"""Encrypted keystore files (the Ethereum v3 format, through eth-account).

The password comes from a file, an environment variable or a prompt; it is
never logged and never stored beside the key."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from eth_account import Account

from statechannel.core.crypto import PrivateKey
from statechannel.core.errors import LocalError, Reason


class WrongPassword(LocalError):
    def __init__(self, path: Path) -> None:
        super().__init__(Reason.BAD_PARAMS, f"wrong password for keystore {path}")


def read_password(password_file: str | None, env_var: str | None, prompt: bool = True) -> str:
    """The first of: the file's first line, the environment variable, an interactive prompt."""
    if password_file:
        text = Path(password_file).read_text()
        return text.splitlines()[0] if text else ""
    if env_var and env_var in os.environ:
        return os.environ[env_var]
    if prompt:
        import getpass

        return getpass.getpass("keystore password: ")
    raise LocalError(Reason.BAD_PARAMS, "no password given (use a password file or an environment variable)")


def write_keystore(path: Path, key: PrivateKey, password: str, scrypt_n: int = 2**18) -> None:
    """Write `key` encrypted; refuses to overwrite. The file is created 0600."""
    document = Account.encrypt(key.secret, password, kdf="scrypt", iterations=scrypt_n)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(document, f)


def new_keystore(path: Path, password: str, scrypt_n: int = 2**18) -> PrivateKey:
    key = PrivateKey(bytes(Account.create().key))
    write_keystore(path, key, password, scrypt_n)
    return key


def load_keystore(path: Path, password: str) -> PrivateKey:
    try:
        document: dict[str, Any] = json.loads(Path(path).read_text())
    except FileNotFoundError as exc:
        raise LocalError(Reason.BAD_PARAMS, f"no keystore at {path}") from exc
    except json.JSONDecodeError as exc:
        raise LocalError(Reason.BAD_PARAMS, f"{path} is not a keystore file") from exc
    try:
        secret = Account.decrypt(document, password)
    except ValueError as exc:
        raise WrongPassword(Path(path)) from exc
    return PrivateKey(bytes(secret))


def keystore_address(path: Path) -> str:
    """The address a keystore claims (readable without the password)."""
    document = json.loads(Path(path).read_text())
    return "0x" + str(document.get("address", "")).removeprefix("0x")
