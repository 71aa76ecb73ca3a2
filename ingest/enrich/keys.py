"""Key owner: who owns the SSH key of a publickey login (seed 000).

A shared account (``civis-ec2``) has one key per person in its ``authorized_keys``; the key
comment names the person. sshd logs the key's fingerprint; this step maps the fingerprint back:

    system.auth.ssh.key.fingerprint  "SHA256:Ggi..." or "0c:b4:..." (also "MD5:0c:b4:...")
    system.auth.ssh.key.owner        "civis-pete"  or  "SSH Key Not Mapped"

Sources of keys (any number of each):

- ``authorized_keys`` files (OpenSSH format: comments, blank lines, options before the key type
  such as ``command="...",no-pty``). The owner is the whole key comment (``jane-civis@laptop``).
- users files in the Ansible form of seed 002 (``users: [{name: ..., key: "ssh-rsa AAAA..."}]``,
  ``key`` may hold several lines). The owner is ``name``.

Both fingerprints of every key -- MD5 (``aa:bb:...``) and SHA256 (``SHA256:`` + unpadded
base64) -- are computed from the key blob. A malformed line, a key without a comment, or a
fingerprint claimed by two owners is logged as a warning with file and line and skipped (the
first owner wins); a missing or unreadable file is a warning, not a crash.

Files are checked for change (inode, size, mtime) at most every ``reload_interval``, from
:meth:`KeyOwnerEnricher.enrich_batch`, and re-read when they changed.

A document with a fingerprint gets the owner or ``SSH Key Not Mapped``. A document without a
fingerprint (a password login, a publickey line with the fingerprint cut off) gets nothing. With
no key files configured at all the step does nothing (no document is marked "Not Mapped"); with
files configured but all missing, every fingerprint is "Not Mapped" (and the start-up warning
says why): that is what the alert on "Not Mapped" should catch.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import logging
import os
import re
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from ingest.enrich.base import Enricher, register

logger = logging.getLogger(__name__)

NOT_MAPPED = "SSH Key Not Mapped"

#: Public key types accepted in key lines (OpenSSH ``sshkey.c``; certificates are not login keys).
KEY_TYPES = frozenset(
    {
        "ssh-rsa",
        "ssh-dss",
        "ssh-ed25519",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)


class KeyOwnerConfig(BaseModel):
    """Configuration of the key-owner step."""

    model_config = ConfigDict(extra="forbid")

    authorized_keys: list[Path] = Field(
        default_factory=list,
        description="authorized_keys files; the owner of a key is its comment.",
    )
    users_files: list[Path] = Field(
        default_factory=list,
        description="YAML users files (users: [{name, key}], as in the Ansible playbook of "
        "seed 002); the owner of a key is the user's name.",
    )
    reload_interval: timedelta = Field(
        default=timedelta(seconds=30),
        description="How often, at most, the files are checked for change (inode, size, mtime) "
        "and re-read if they changed. 0: at every batch.",
    )
    fingerprint_field: str = Field(
        default="system.auth.ssh.key.fingerprint",
        description="Dotted field with the key fingerprint the parser extracted.",
    )
    owner_field: str = Field(
        default="system.auth.ssh.key.owner", description="Dotted field the owner is written to."
    )
    not_mapped: str = Field(
        default=NOT_MAPPED, description="Owner written for a fingerprint no configured key has."
    )


# --- fingerprints -------------------------------------------------------------------------------


def fingerprints(blob: bytes) -> tuple[str, str]:
    """(MD5 ``aa:bb:...``, ``SHA256:base64-unpadded``) of a decoded public key blob, as ssh-keygen
    prints them."""
    md5 = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    sha = base64.b64encode(hashlib.sha256(blob).digest()).decode("ascii").rstrip("=")
    return ":".join(md5[i : i + 2] for i in range(0, 32, 2)), "SHA256:" + sha


_HEX32 = re.compile(r"[0-9a-f]{32}")


@functools.lru_cache(maxsize=4096)  # brute force and repeated logins repeat the same few values
def normalize_fingerprint(value: str) -> str | None:
    """The lookup form of a logged fingerprint, or None if it is neither MD5 nor SHA256.

    ``SHA256:abc=`` -> ``SHA256:abc``; ``MD5:0C:B4:...``, ``0c:b4:...`` and ``0cb4...`` ->
    ``0c:b4:...``.
    """
    value = value.strip()
    if value[:7].upper() == "SHA256:":
        digest = value[7:].rstrip("=")
        return "SHA256:" + digest if digest else None
    if value[:4].upper() == "MD5:":
        value = value[4:]
    hexdigits = value.replace(":", "").lower()
    if not _HEX32.fullmatch(hexdigits):
        return None
    return ":".join(hexdigits[i : i + 2] for i in range(0, 32, 2))


# --- key lines ----------------------------------------------------------------------------------


class KeyLineError(ValueError):
    """A key line that cannot be read (the message says why)."""


@dataclass(frozen=True, slots=True)
class PublicKey:
    key_type: str
    md5: str
    sha256: str
    comment: str


def _split_options(line: str) -> tuple[str, str]:
    """(options, rest) of an authorized_keys line whose first word is not a key type.

    Options end at the first space or tab outside double quotes; ``\\"`` inside quotes is a quote.
    """
    in_quotes = False
    i = 0
    while i < len(line):
        ch = line[i]
        if ch == "\\" and in_quotes and i + 1 < len(line):
            i += 2
            continue
        if ch == '"':
            in_quotes = not in_quotes
        elif ch in " \t" and not in_quotes:
            return line[:i], line[i:].lstrip(" \t")
        i += 1
    if in_quotes:
        raise KeyLineError("unterminated quote in options")
    return line, ""


def parse_key_line(line: str) -> PublicKey | None:
    """The key of one ``authorized_keys`` line; None for a blank or comment line.

    Raises :class:`KeyLineError` for a line that is neither.
    """
    line = line.strip()
    if not line or line.startswith("#"):
        return None
    first = line.split(None, 1)[0]
    if first not in KEY_TYPES:
        _options, line = _split_options(line)
    parts = line.split(None, 2)
    if not parts or parts[0] not in KEY_TYPES:
        raise KeyLineError(f"no known key type (got {(parts[0] if parts else '')[:60]!r})")
    if len(parts) < 2:
        raise KeyLineError(f"{parts[0]} without key data")
    key_type, b64 = parts[0], parts[1]
    try:
        blob = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as e:
        raise KeyLineError(f"key data is not base64: {e}") from e
    if len(blob) < 4 or blob[4 : 4 + struct.unpack(">I", blob[:4])[0]] != key_type.encode():
        raise KeyLineError(f"key data is not a {key_type} key")
    md5, sha256 = fingerprints(blob)
    return PublicKey(key_type, md5, sha256, parts[2].strip() if len(parts) > 2 else "")


# --- files --------------------------------------------------------------------------------------

# (fingerprint -> owner) entries of one file, with "file:line" of each for warnings.
_Entry = tuple[str, str, str]  # (fingerprint, owner, where)


def _authorized_keys_entries(path: Path) -> Iterator[_Entry]:
    with path.open(encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            yield from _key_entries(line, None, f"{path}:{lineno}")


def _key_entries(line: str, owner: str | None, where: str) -> Iterator[_Entry]:
    """Entries for one key line; the owner is ``owner`` or else the key comment."""
    try:
        key = parse_key_line(line)
    except KeyLineError as e:
        logger.warning("%s: malformed key line skipped: %s", where, e)
        return
    if key is None:
        return
    owner = owner or key.comment
    if not owner:
        logger.warning(
            "%s: %s key %s has no comment naming its owner: skipped", where, key.key_type, key.sha256
        )
        return
    yield key.md5, owner, where
    yield key.sha256, owner, where


def _users_file_entries(path: Path) -> Iterator[_Entry]:
    try:
        import yaml
    except ImportError:
        logger.warning("%s: PyYAML is not installed: users file ignored", path)
        return

    class LineLoader(yaml.SafeLoader):
        """Records the line of every mapping as ``__line__``."""

    def construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        mapping = loader.construct_mapping(node, deep=True)
        mapping["__line__"] = node.start_mark.line + 1
        return mapping

    LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    try:
        with path.open(encoding="utf-8") as f:
            data = yaml.load(f, Loader=LineLoader)  # noqa: S506 - a SafeLoader subclass
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        logger.warning("%s: not a readable YAML users file: %s", path, str(e).replace("\n", " "))
        return
    users = data.get("users") if isinstance(data, dict) else data
    if not isinstance(users, list):
        logger.warning("%s: no 'users' list: users file ignored", path)
        return
    for i, user in enumerate(users):
        where = f"{path}:{user.get('__line__', '?')}" if isinstance(user, dict) else f"{path}: users[{i}]"
        name, keys = (user.get("name"), user.get("key")) if isinstance(user, dict) else (None, None)
        if not isinstance(name, str) or not name or not isinstance(keys, str | list):
            logger.warning("%s: user entry without name and key skipped", where)
            continue
        lines = keys.splitlines() if isinstance(keys, str) else [k for k in keys if isinstance(k, str)]
        for line in lines:
            yield from _key_entries(line, name, where)


def _signature(path: Path) -> tuple[int, int, int] | None:
    """(inode, size, mtime) of ``path``, or None if it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


@dataclass(slots=True)
class _Source:
    path: Path
    reader: Callable[[Path], Iterable[_Entry]]
    signature: tuple[int, int, int] | None = None
    entries: list[_Entry] | None = None  # None: never read

    def load(self) -> None:
        self.signature = _signature(self.path)
        try:
            self.entries = list(self.reader(self.path))
        except OSError as e:
            logger.warning(
                "key file %s cannot be read (%s): its keys are not mapped", self.path, e.strerror or e
            )
            self.entries = []


# --- the enricher -------------------------------------------------------------------------------


@register
class KeyOwnerEnricher(Enricher):
    """Sets the key owner on documents with an SSH key fingerprint (see the module docstring)."""

    name: ClassVar[str] = "key_owner"

    def __init__(
        self,
        authorized_keys: Iterable[Path] = (),
        users_files: Iterable[Path] = (),
        *,
        reload_interval: timedelta = timedelta(seconds=30),
        fingerprint_field: str = "system.auth.ssh.key.fingerprint",
        owner_field: str = "system.auth.ssh.key.owner",
        not_mapped: str = NOT_MAPPED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sources = [_Source(Path(p), _authorized_keys_entries) for p in authorized_keys]
        self._sources += [_Source(Path(p), _users_file_entries) for p in users_files]
        self._interval = reload_interval.total_seconds()
        self._fp_path = fingerprint_field.split(".")
        self._owner_parent = owner_field.split(".")[:-1]
        self._owner_key = owner_field.split(".")[-1]
        self._not_mapped = not_mapped
        self._clock = clock
        self._owners: dict[str, str] = {}
        self._last_check = clock()
        self.reloads = 0
        self._refresh(force=True)

    @classmethod
    def from_config(
        cls, cfg: KeyOwnerConfig, clock: Callable[[], float] = time.monotonic
    ) -> KeyOwnerEnricher:
        return cls(
            cfg.authorized_keys,
            cfg.users_files,
            reload_interval=cfg.reload_interval,
            fingerprint_field=cfg.fingerprint_field,
            owner_field=cfg.owner_field,
            not_mapped=cfg.not_mapped,
            clock=clock,
        )

    @property
    def enabled(self) -> bool:
        """False when no key file is configured: :meth:`enrich_batch` then does nothing."""
        return bool(self._sources)

    def owner(self, fingerprint: str) -> str:
        """The owner of a logged fingerprint (any accepted form), or the not-mapped value."""
        owner = self._owners.get(fingerprint)  # already in normal form: the usual case
        if owner is not None:
            return owner
        fp = normalize_fingerprint(fingerprint)
        return self._owners.get(fp, self._not_mapped) if fp else self._not_mapped

    def enrich_batch(self, docs: list[dict[str, Any]]) -> None:
        if not self._sources:
            return
        now = self._clock()
        if now - self._last_check >= self._interval:
            self._last_check = now
            self._refresh(force=False)
        first, rest = self._fp_path[0], self._fp_path[1:]
        for doc in docs:
            value: Any = doc.get(first)
            if value is None:  # most documents (no ``system`` object at all): nothing to walk
                continue
            try:
                for part in rest:
                    value = value.get(part) if isinstance(value, dict) else None
                    if value is None:  # (``system.auth`` without ``ssh``: the usual case)
                        break
                if not isinstance(value, str) or not value.strip():
                    continue
                parent: Any = doc
                for part in self._owner_parent:
                    parent = parent.setdefault(part, {})
                parent[self._owner_key] = self.owner(value)
            except Exception:  # never fail a batch because of one document
                logger.exception("key-owner enrichment of one document failed; document left as is")

    def _refresh(self, force: bool) -> None:
        """Re-read the files whose (inode, size, mtime) changed and rebuild the map if any did."""
        changed = [
            s for s in self._sources if force or s.entries is None or _signature(s.path) != s.signature
        ]
        if not changed:
            return
        for source in changed:
            if _signature(source.path) is None:
                logger.warning("key file %s is missing: its keys are not mapped", source.path)
                source.signature, source.entries = None, []
            else:
                source.load()
        owners: dict[str, str] = {}
        where_of: dict[str, str] = {}
        for source in self._sources:
            for fp, owner, where in source.entries or ():
                if fp in owners and owners[fp] != owner:
                    if fp.startswith("SHA256:"):  # warn once per key, not per fingerprint form
                        logger.warning(
                            "%s: key %s already belongs to %r (%s): %r ignored",
                            where, fp, owners[fp], where_of[fp], owner,
                        )  # fmt: skip
                    continue
                owners.setdefault(fp, owner)
                where_of.setdefault(fp, where)
        self._owners = owners
        if not force:
            self.reloads += 1
        logger.info(
            "key owners loaded: %d keys from %s", len(owners) // 2, ", ".join(str(s.path) for s in changed)
        )
