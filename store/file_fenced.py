"""The file store's fenced record writes, and the claims that final records end.

A save carrying a claim token writes its temp file (over a spare for a final record), then
reads the task's claim and renames the record into place only while the token is current
(see store.file_claims for what NFS allows here). The same read tells whether the record
was written after the claim's last change: a terminal record so written ends the claim
(file_claims.claim counts it as released), so the run's own release need not write the
claim file again (store.common.EndedClaims remembers which releases to skip).
"""

from __future__ import annotations

import os
from pathlib import Path

from store.base import ClaimSuperseded
from store.file_claims import claim_path, parse_claim
from store.file_io import read_file, write_atomically, write_temp
from store.file_spares import write_spare


def write_fenced(
    directory: Path,
    claims: Path,
    task_id: str,
    data: bytes,
    suffix: str,
    token: int,
    *,
    sync: bool = True,
    spare: Path | None = None,
) -> bool:
    """Replace the task's file with data unless a newer claim superseded token (written
    into spare, a file of store.file_spares, when one is given and fits).

    True when the file was written after the claim's last change: a terminal record so
    written ends the claim, and its release can be skipped.
    """
    temp = write_spare(spare, data) or write_temp(directory, task_id, data, sync=sync)
    after_claim = False

    def check() -> None:
        nonlocal after_claim
        # After the slow part (write, fsync): the check and the rename stay close.
        written_at = os.stat(temp).st_mtime_ns
        found = read_file(claim_path(claims, task_id))
        current = None if found is None else parse_claim(found[0])
        if found is None or current is None:
            return  # never claimed (or unreadable): nothing fences the write
        if current.token != token:
            raise ClaimSuperseded(task_id, token, current.token)
        after_claim = written_at > found[1].mtime_ns

    write_atomically(directory, task_id, data, suffix, before_rename=check, sync=sync, written=temp)
    return after_claim
