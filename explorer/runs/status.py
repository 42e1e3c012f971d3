"""A run's effective status: a manifest that says "running" but whose process is gone was killed.

The training side records its host and pid in run.json and refreshes `updated_at` at every flush. A
SIGKILL leaves the manifest at "running"; on the same host we can tell that the process is gone and
report "failed" (killed) instead. Elsewhere we cannot tell, and keep "running". Pure Python.
"""

from __future__ import annotations

import os
import socket

from explorer.runs import schema


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def effective_status(manifest: dict) -> str:
    status = manifest.get("status", "unknown")
    if status != schema.STATUS_RUNNING:
        return status
    pid, host = manifest.get("pid"), manifest.get("host")
    if pid and host == socket.gethostname() and not pid_alive(int(pid)):
        return schema.STATUS_FAILED
    return status


def status_note(manifest: dict) -> str:
    """A sentence for the app: why a run shows the status it shows."""
    s = effective_status(manifest)
    if s == schema.STATUS_FAILED and manifest.get("status") == schema.STATUS_RUNNING:
        p = manifest.get("progress") or {}
        return (f"the process ({manifest.get('pid')}) is gone without finishing: killed or crashed; "
                f"records up to step {p.get('step')} of {p.get('total_steps')} were flushed")
    if s == schema.STATUS_FAILED:
        return f"failed: {manifest.get('error', 'unknown error')}"
    return s
