"""`utils.tune_cpu_allocator`: a CPU forward pass reuses freed tensor memory instead of faulting fresh pages."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[2] / "src")

# minor page faults per forward pass of a small MobileNetV2 at 240x320, after 3 warm-up passes, in a fresh process
FAULTS = """
import resource, sys, torch
from transferdepth.utils import tune_cpu_allocator
applied = tune_cpu_allocator() if sys.argv[1] == "1" else None
from transferdepth.models import create_model
torch.set_num_threads(2)
model = create_model("mobilenetv2", decoder_width=0.05).eval()
x = torch.rand(1, 3, 240, 320)
with torch.no_grad():
    for _ in range(3):
        model(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        model(x)
print(applied, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""


def _faults(tune: bool, **env: str) -> tuple[str, float]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "TRANSFERDEPTH_MALLOC"}
    out = subprocess.run([sys.executable, "-c", FAULTS, "1" if tune else "0"], capture_output=True, text=True,
                         env={**clean, "PYTHONPATH": SRC, **env}, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    applied, faults = out.stdout.split()
    return applied, float(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc settings (Linux)")
def test_tuned_allocator_stops_page_faults_in_a_forward_pass():
    # glibc's defaults adapt their thresholds as blocks are freed, and which of torch's threads (each with
    # its own malloc arena) frees what varies from run to run: a plain run took 3883-6157 faults per pass in
    # 14 runs here, and once 0 in CI; with the settings every run took 0
    _, plain = _faults(False)
    if plain < 1000:
        pytest.skip(f"glibc's defaults reused the memory in this run ({plain:.0f} faults per pass)")
    applied, tuned = _faults(True)
    assert applied == "True"
    assert tuned <= plain / 10, (plain, tuned)
    applied, _ = _faults(True, TRANSFERDEPTH_MALLOC="0")  # the opt-out leaves glibc's defaults
    assert applied == "False"
