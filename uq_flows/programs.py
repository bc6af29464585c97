"""External programs given as command lines: a program alone (``cp2k.psmp``) or behind an MPI or
batch launcher (``srun -n 32 cp2k.psmp``, ``mpirun -np 4 cp2k.psmp``)."""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path

LAUNCHERS = {"srun", "mpirun", "mpiexec", "aprun", "jsrun", "ibrun", "time", "env", "nice"}
_WITH_VALUE = ("-n", "-np", "-N", "-c", "--ntasks", "--nodes", "-ppn", "--cpus-per-task", "-x")


def find_program(command: str) -> str | None:
    """Full path of the program a command line runs (past its launcher and the launcher's options)."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    skip_value = False
    for word in words:
        if skip_value:
            skip_value = False
            continue
        if Path(word).name in LAUNCHERS or "=" in word and not word.startswith(("/", ".")):
            continue
        if word.startswith("-"):
            skip_value = word in _WITH_VALUE
            continue
        found = shutil.which(word)
        if found:
            return found
        return word if os.path.isfile(word) and os.access(word, os.X_OK) else None
    return None


def command_words(command: str) -> list[str] | None:
    """The command line as arguments, its first word a full path; None when its program (or its
    launcher) is not found."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    first = shutil.which(words[0]) if words else None
    if first is None or find_program(command) is None:
        return None
    return [first, *words[1:]]
