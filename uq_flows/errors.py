"""Exceptions shared by every stage; the CLI turns them into a message and exit code 2."""


class UqFlowsError(Exception):
    """Base class: anything the user can fix by changing input or configuration."""


class InputError(UqFlowsError):
    """Bad or inconsistent input data (empty files, mismatched configurations, NaN...)."""


class MemberError(UqFlowsError):
    """An ensemble member cannot be found, loaded or run."""


# top-level module → the extra of ``pip install 'uq-flows[EXTRA]'`` that provides it
EXTRAS = {
    **dict.fromkeys(("torch", "chgnet", "sevenn", "mace"), "umlip"),
    "pyace": "ace",
    **dict.fromkeys(("jobflow", "fireworks", "maggma", "mongomock", "mongomock_persistence", "montydb", "pymongo",
                     "bson", "pydash"), "workflow"),
    **dict.fromkeys(("atomate2", "custodian", "emmet"), "vasp"),
}


def install_hint(module: str | None) -> str | None:
    """How to install an optional module's extra, or None for a module no extra provides."""
    extra = EXTRAS.get((module or "").split(".")[0])
    return None if extra is None else f"pip install 'uq-flows[{extra}]'"
