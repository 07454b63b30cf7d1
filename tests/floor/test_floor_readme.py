"""The README's two opening commands, CI and the entry points it lists stay in sync."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _readme_commands() -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return [b.strip() for b in blocks[:2]]


def test_readme_opens_with_install_run_and_test_commands():
    run, test = _readme_commands()
    assert "python train_policy.py env=cube_pick" in run and run.startswith("pip install")
    assert "pytest" in test and '".[test]"' in test
    ci = (ROOT / ".ci" / "run").read_text()
    assert test in ci.splitlines(), ".ci/run must run exactly the README test command"


def test_entry_points_in_readme_exist_and_explain_themselves():
    text = (ROOT / "README.md").read_text()
    scripts = sorted(set(re.findall(r"`([a-z_]+\.py)\b", text)))
    assert "train_policy.py" in scripts
    for script in scripts:
        assert (ROOT / script).is_file(), f"README names {script}, which does not exist"
    out = subprocess.run(
        [sys.executable, str(ROOT / "train_policy.py"), "--help"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "train_policy" in out.stdout
