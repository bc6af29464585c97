"""Workflow manager: launchpads, JobStores, submission, status, resume, rockets and doctor.

Modules (import them directly; this package imports nothing heavy):

- ``stores``: ``open_jobstore`` (embedded SQLite, MongoDB + GridFS), ``ConfiguredJobStore``;
- ``sqlite_store``: ``SqliteStore``, the maggma Store of the embedded JobStore;
- ``launchpad``: ``open_launchpad`` (embedded mongomock-persistence file or MongoDB), ``save_launchpad``;
- ``submit``: ``submit_flow`` (flow → workflow with categories and a loop id), ``loop_fw_ids``;
- ``status``: ``loop_status``; ``resume``: ``resume``, ``watch``; ``rocket``: ``run_worker``;
- ``doctor``: ``run_doctor``, ``preflight``, ``require_executables``.
"""
