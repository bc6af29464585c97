"""Where the command line's log goes: everything to a file, warnings (INFO with ``-v``) to the terminal.

The root logger gets its handlers before any library is imported, so pyace's
``logging.basicConfig(INFO)`` at import finds them and adds none. FireWorks' and jobflow's own
loggers write to ``sys.stdout`` through handlers of their own; a worker runs its rockets with
stdout sent to the same file (``manager.rocket.run_worker(log_file=...)``), and those loggers do
not propagate, so each line reaches the file once and the terminal not at all.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path

LOG_NAME = "uq-flows.log"
LIBRARY_LOGGERS = ("jobflow", "launchpad", "rocket.launcher")  # each with its own stdout handler
FILE_ONLY = "uq_flows_file_only"  # a record with this attribute set goes to the log file only
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def default_log_file() -> Path:
    """``$UQ_FLOWS_HOME/logs/uq-flows.log`` (read from the environment: a bad settings file must not stop the log)."""
    home = Path(os.environ.get("UQ_FLOWS_HOME") or "~/.uq-flows").expanduser()
    return home / "logs" / LOG_NAME


def configure_logging(log_file: Path | None, level: str = "INFO", verbose: bool = False) -> Path | None:
    """Root handlers: the log file at ``level`` (rotated at 20 MB, created on the first line) and
    stderr at WARNING, INFO with ``verbose``. Returns the file, or None when it cannot be written."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_uq_flows", False)]:
        root.removeHandler(handler)
        handler.close()
    path = Path(log_file or default_log_file()).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        to_file = logging.handlers.RotatingFileHandler(path, maxBytes=20_000_000, backupCount=3, delay=True,
                                                       encoding="utf-8")
    except OSError as error:
        print(f"warning: no log file ({path}: {error.strerror})", file=sys.stderr)
        to_file, path = None, None
    to_terminal = logging.StreamHandler(sys.stderr)
    to_terminal.setLevel(logging.INFO if verbose else logging.WARNING)
    to_terminal.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    to_terminal.addFilter(lambda record: not getattr(record, FILE_ONLY, False))
    handlers = [to_terminal]
    if to_file is not None:
        to_file.setLevel(getattr(logging, level))
        to_file.setFormatter(logging.Formatter(FORMAT))
        handlers.append(to_file)
    for handler in handlers:
        handler._uq_flows = True
        root.addHandler(handler)
    root.setLevel(min(h.level for h in handlers))
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).propagate = False
    return path
