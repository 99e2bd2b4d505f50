"""How a client finds the node: the running daemon advertises itself in `<data-dir>/node.json`, and the
API token sits beside it, so a data directory is all a client needs to know."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from statechannel.api.auth import read_token
from statechannel.api.client import ApiClient

NODE_FILE = "node.json"


class NodeNotRunning(Exception):
    """No live node advertises itself in the data directory."""


@dataclass(frozen=True, slots=True)
class NodeFile:
    """Where the running node is and who it is. Holds nothing secret."""

    pid: int
    address: str
    api: str
    listen: str
    chain_id: int
    adjudicator: str

    def write(self, data_dir: Path) -> None:
        tmp = data_dir / (NODE_FILE + ".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(data_dir / NODE_FILE)  # atomic: a client never reads half a file

    @classmethod
    def read(cls, data_dir: Path) -> NodeFile:
        """The advertisement of a live node; a file left by a killed node counts as none."""
        path = data_dir / NODE_FILE
        try:
            raw: dict[str, Any] = json.loads(path.read_text())
            found = cls(**raw)
        except FileNotFoundError:
            raise NodeNotRunning(f"no node.json in {data_dir}") from None
        except (ValueError, TypeError) as exc:
            raise NodeNotRunning(f"{path} is unreadable ({exc})") from None
        if not _alive(found.pid):
            raise NodeNotRunning(f"stale {path}: process {found.pid} is gone")
        return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


def connect(data_dir: str | Path) -> tuple[NodeFile, ApiClient]:
    """A client of the node running in `data_dir`. Raises NodeNotRunning or TokenFileError."""
    directory = Path(data_dir).expanduser()
    info = NodeFile.read(directory)
    return info, ApiClient(info.api, read_token(directory))
