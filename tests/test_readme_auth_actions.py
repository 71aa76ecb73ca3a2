"""README's table of auth event.action values lists every action the auth rules set, and no other."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_readme_lists_every_auth_action() -> None:
    rules = tomllib.loads((ROOT / "patterns" / "auth.rules.toml").read_text(encoding="utf-8"))["rules"]
    actions = {r["set"]["event.action"] for r in rules if "event.action" in r.get("set", {})}
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.index("`auth` `event.action` values")
    table = readme[start:readme.index("\n\n", readme.index("| `event.action` |", start))]
    listed = {name for row in table.splitlines() if row.startswith("| `")
              for name in re.findall(r"`([a-z_]+)`", row.split("|")[1])}
    assert len(actions) > 90
    assert sorted(actions - listed) == []
    assert sorted(listed - actions) == []
