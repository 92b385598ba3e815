"""The commands in docs/processes.md ("Making sure every process is patched") stay true: every OpenRLHF
flag they use is accepted by OpenRLHF 0.9.10's own parser, reached through our launcher, and
every dotted name they give resolves."""
import os
import pkgutil
import re
import subprocess
import sys

import pytest

from conftest import AFFECTED, ORL_AFFECTED, ROOT, require_openrlhf

SECTION = "# Making sure every process is patched"


def readme_commands():
    text = open(os.path.join(ROOT, "docs", "processes.md"), encoding="utf-8").read()
    section = text.split(SECTION, 1)[1]
    commands = []
    for block in re.findall(r"```\n(.*?)```", section, flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        commands += [line.strip() for line in joined.splitlines() if line.strip() and not line.startswith("#")]
    return commands


def test_the_section_has_the_commands_the_issue_names():
    commands = " | ".join(readme_commands())
    for needle in ("deepspeed --module sftrl_patches.launch openrlhf.cli.train_sft",
                   "python -m sftrl_patches.launch openrlhf.cli.train_ppo_ray", "ray job submit",
                   "accelerate launch", "-m sftrl_patches.launch trl.scripts.sft",
                   "-m sftrl_patches.launch llamafactory.launcher"):
        assert needle in commands


def test_dotted_names_in_the_section_resolve():
    text = " ".join(readme_commands())
    names = set(re.findall(r"sftrl_patches(?:\.\w+)+", text))
    assert "sftrl_patches.integrations.ray.setup_worker" in names
    for name in names:
        assert pkgutil.resolve_name(name) is not None


@pytest.mark.parametrize("module", ["openrlhf.cli.train_sft", "openrlhf.cli.train_ppo_ray"])
def test_openrlhf_flags_in_the_readme_are_accepted(module):
    env = require_openrlhf(ORL_AFFECTED[0], deepspeed=AFFECTED)
    (command,) = [c for c in readme_commands() if f" {module} " in c and c.startswith(("deepspeed", "python"))]
    flags = sorted(set(re.findall(r"(--[a-z_]+)", command.split(module, 1)[1])))
    proc = subprocess.run([sys.executable, "-m", "sftrl_patches.launch", module, "--help"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    accepted = set(re.findall(r"(--[a-z_]+)", proc.stdout))
    assert len(flags) >= 8 and not set(flags) - accepted, set(flags) - accepted
