"""Exceptions shared by every stage; the CLI turns them into a message and exit code 2."""


class UqFlowsError(Exception):
    """Base class: anything the user can fix by changing input or configuration."""


class InputError(UqFlowsError):
    """Bad or inconsistent input data (empty files, mismatched configurations, NaN...)."""


class MemberError(UqFlowsError):
    """An ensemble member cannot be found, loaded or run."""
