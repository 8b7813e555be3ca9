"""Keeping freed memory (harness.memory): a big tensor freed and made again faults no pages
in; glibc's defaults fault them all in again. Run in child processes: mallopt is global."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from harness.memory import _libc

pytestmark = pytest.mark.skipif(_libc() is None, reason="no glibc mallopt on this system")

PAGES = 64 * 2**20 // 4096  # a 64 MiB tensor: past glibc's 32 MiB mmap ceiling

CHILD = """
import resource, sys, torch
from harness.memory import keep_freed_memory
keep_freed_memory(sys.argv[1] == "keep")
def step():  # three 64 MiB tensors made and freed, as a training step makes activations
    x = torch.ones(16 * 2**20)
    return float(torch.nn.functional.gelu(x * 2).sum())
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True,
                         check=True).stdout
    return int(out.split()[-1])


def test_freed_memory_is_reused_instead_of_faulted_in_again():
    # defaults: all 30 tensors of the 10 steps are faulted in afresh; kept: at most a third
    # (the heap's layout shifts now and then, so not none)
    assert _faults("system") > 25 * PAGES
    assert _faults("keep") < 10 * PAGES


def test_the_harness_command_keeps_freed_memory_unless_told_not_to():
    probe = ("import harness.cli as c, harness.memory as m; "
             "m.keep_freed_memory = lambda keep=True: print('KEEP', keep) or True; "
             "c.main()")
    env = {**os.environ, "HARNESS_MALLOC": "keep"}
    out = subprocess.run([sys.executable, "-c", probe, "--help"], capture_output=True,
                         text=True, env=env).stdout
    assert "KEEP True" in out
    env["HARNESS_MALLOC"] = "system"
    out = subprocess.run([sys.executable, "-c", probe, "--help"], capture_output=True,
                         text=True, env=env).stdout
    assert "KEEP" not in out and "Usage" in out


def test_bench_memory_reports_both_settings_and_their_faults():
    out = subprocess.run([sys.executable, "-c", "from harness.cli import main; main()",
                          "bench", "memory", "--preset", "tiny-32", "--images", "2",
                          "--prompts", "4", "--steps", "1", "--rounds", "2", "--json"],
                         capture_output=True, text=True, check=True).stdout
    result = json.loads(out)
    assert set(result["seconds"]) == {"system", "keep"}
    assert result["ratio"]["median"] > 0
    assert result["rounds"] == 2 and result["prompts"] == 4
