"""docs/fleet-admin.md runs: its `sh` blocks, in order, in one empty directory, with the real
`mvb-admin` (the admin's guide cannot drift from the commands). `shell` blocks are for a box or
a service and are not run here."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
GUIDE = REPOSITORY / "docs" / "fleet-admin.md"
BLOCK = re.compile(r"^```sh\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def test_every_sh_block_of_the_admins_guide_runs(tmp_path: Path) -> None:
    blocks = BLOCK.findall(GUIDE.read_text(encoding="utf-8"))
    assert len(blocks) >= 10
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    for number, block in enumerate(blocks, 1):
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", block],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"block {number}:\n{block}\n{done.stdout}\n{done.stderr}"
    codes = sorted(p.name for p in tmp_path.glob("code-MVB-*.txt"))
    assert codes == ["code-MVB-0001.txt", "code-MVB-0002.txt", "code-MVB-0003.txt"]
    assert (tmp_path / "stick.tar").stat().st_size > 0
    assert (tmp_path / "backoffice" / "store" / "fleet-check-now" / "MVB-0003.json").exists()
    accounts = json.loads((tmp_path / "backoffice" / "admin" / "accounts.json").read_text())
    assert list(accounts["accounts"]) == ["alice"]
    assert len((tmp_path / "backoffice" / "metrics.token").read_text().strip()) >= 32
    assert (tmp_path / "fleet" / "repo" / "metadata" / "2.root.json").exists()
    root = json.loads((tmp_path / "fleet" / "repo" / "metadata" / "2.root.json").read_text())
    new_key = (tmp_path / "admin" / "targets-2.pub").read_text()
    targets_keys = root["signed"]["roles"]["targets"]["keyids"]
    assert [root["signed"]["keys"][k]["keyval"]["public"] for k in targets_keys] == [new_key]
    rollout = json.loads((tmp_path / "rollout.json").read_text())
    assert (rollout["rollout_id"], rollout["phase"]) == ("1.4.0-h2o", "rolled_back")
    assert (rollout["canary"], rollout["stale"]) == (["MVB-0002"], ["MVB-0001", "MVB-0002"])
    record = json.loads((tmp_path / "admin" / "trust" / "rollouts" / "1.4.0-h2o.json").read_text())
    served = tmp_path / "fleet" / "repo" / "rollouts" / "1.4.0-h2o.json"
    assert json.loads(served.read_text()) == record
    signed = [(s["path"], s["version"]) for s in record["signed"]]
    assert signed == [
        ("boxes/MVB-0002.toml", "1.4.0"),
        ("groups/h2o.toml", "1.4.0"),
        ("groups/h2o.toml", "1.3.0"),
    ]
    config_rollouts = [
        json.loads(p.read_text())
        for p in (tmp_path / "admin" / "trust" / "rollouts").glob("config-*-h2o.json")
    ]
    assert [(r["kind"], r["phase"]) for r in config_rollouts] == [("config", "promoted")]
    assert config_rollouts[0]["signed"][-1]["path"] == "groups/h2o.toml"
    newest_targets = max(
        (tmp_path / "fleet" / "repo" / "metadata").glob("*.targets.json"),
        key=lambda path: int(path.name.split(".")[0]),
    )
    delegations = json.loads(newest_targets.read_text())["signed"]["delegations"]
    releases_pub = (tmp_path / "admin" / "releases.pub").read_text()
    (role,) = delegations["roles"]
    assert (role["name"], role["paths"]) == ("releases", ["releases/*"])
    assert [delegations["keys"][k]["keyval"]["public"] for k in role["keyids"]] == [releases_pub]
