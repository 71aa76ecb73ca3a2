"""Start-up check of the configured key files: each must exist and be readable by this process.

A key file the worker cannot read (a copied ``authorized_keys`` is normally mode 0600 and owned by
its user; the container runs as uid 10001) would only be logged once, and then every key login
would be "SSH Key Not Mapped" and raise an alert. ``run`` and ``parse`` refuse to start instead,
naming the file, the reason and the user that has to be able to read it. Files that disappear
later are handled by the enricher as before (a warning, keys not mapped).
"""

from __future__ import annotations

import os
from pathlib import Path

from ingest.enrich.keys import KeyOwnerConfig
from ingest.errors import ConfigError


def unreadable(path: Path) -> str | None:
    """Why ``path`` cannot be read as a key file by this process, or None if it can."""
    try:
        with open(path, "rb") as f:
            f.read(1)
    except IsADirectoryError:
        return "is a directory, not a file"
    except FileNotFoundError:
        return "does not exist"
    except PermissionError:
        try:
            st = os.stat(path)
            owner = f" (owner uid {st.st_uid}, mode {st.st_mode & 0o777:04o})"
        except OSError:
            owner = ""
        return f"cannot be read by uid {os.geteuid()}{owner}"
    except OSError as e:
        return f"cannot be read: {e.strerror or e}"
    return None


def check_key_files(cfg: KeyOwnerConfig) -> None:
    """ConfigError naming every configured key file this process cannot read."""
    problems = []
    for key, paths in (("keys.authorized_keys", cfg.authorized_keys), ("keys.users_files", cfg.users_files)):
        for path in paths:
            reason = unreadable(Path(path))
            if reason is not None:
                problems.append(f"{key} {path} {reason}")
    if problems:
        raise ConfigError("key file(s) not readable, every key login would be 'SSH Key Not Mapped': "
                          + "; ".join(problems) + " (make them readable by this user, e.g. "
                          "install -o 10001 -g 10001 -m 0400 for the container)", key="keys")
