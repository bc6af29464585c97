"""CP2K for the tests: installed where we can (root + apt), otherwise a clear skip reason."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from uq_flows.labeling.cp2k import Cp2kSettings

# ≈ 4 s for 2 Si atoms; an odd mesh: the Γ-centred 2×2×2 mesh of a 2-atom cell is too coarse for
# energies of strained cells to differ from the uMLIPs' by one constant per element
FAST = Cp2kSettings(kpoints=(3, 3, 3), cutoff=300.0)


def ensure_cp2k() -> None:
    """Install Debian's cp2k when missing and possible; skip with the reason otherwise."""
    if shutil.which("cp2k.psmp"):
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "cp2k", "cp2k-data"]):
            subprocess.run(command, check=False, capture_output=True, timeout=900)
    if not shutil.which("cp2k.psmp"):
        pytest.skip("CP2K is not installed and could not be installed (needs root and apt-get: apt-get install cp2k cp2k-data)")
