"""The file store's claims, fencing tokens and cancel requests, in ``<dir>/.claims/``.

- ``<task_id>.claim`` holds ``{"owner", "expires_at", "token", "nonce"}``. A claim of a task
  without one is written to a temp file and hard-linked to its name, which fails when the
  name exists: exactly one of several instances creating it at once wins, and nobody ever
  sees a half-written claim (NFS's classic exclusive create; where hard links are refused,
  O_CREAT|O_EXCL is used instead and a claim file too young to be complete counts as held).
  Every later change (renewal, take-over of an expired claim, release) rewrites the
  version it read: it first creates ``.<task_id>.<digest of that version>.take``
  exclusively (O_EXCL), checks that the claim still holds that version, renames its new
  claim over it and removes the marker. Of several instances acting on one version, only
  the creator of its marker can replace it; the others are refused. A marker older than
  STALE_MARKER (its creator crashed or froze) is moved aside by one rename, which only one
  instance wins, and taken anew.
- The claim's `token` is the fence (store.fencing): a take-over writes the previous token
  plus one; a release only marks the claim expired and keeps the token, so the superseded
  run stays refused after the new run ended. A claim file is swept only with its task.
  A new claim and a release are not fsynced (renewals are): on NFS, close() already
  commits the data and link/rename are synchronous on the server; on a local disk only a
  power loss of this very machine could lose them, and it stops the run that held the
  claim too. A claim file found empty then counts as garbage and is taken over with a
  token from the clock (store.fencing), newer than any it held.
- A run's final record ends its claim too: a live claim counts as released once its task's
  record is terminal and was written after the claim's last change (file mtimes, set by
  the one file system both are on). The store then skips the release of a claim whose final
  record it wrote that way: a run that ends writes no claim file at all after its record
  (on a NAS, the release's half a dozen file operations per run). A stale final record of
  an earlier run (written before this claim) frees nothing; a claim renewed after the final
  record was written is released the usual way.
- ``<task_id>.cancel`` holds ``{"requested_at", "expires_at"}`` (written atomically); it is
  removed by every new claim and by the sweeper once expired or when its task expires.

What NFS can and cannot promise. It gives atomic rename, exclusive create (O_EXCL since
NFSv3, and link), and close-to-open consistency: a file opened after another client closed
(or renamed) it shows that client's bytes. It has no compare-and-swap on a file's content
and no lock we can rely on (NLM locks are often disabled on NAS mounts). So a fenced write
reads the claim's token and then renames its record into place (its temp file is written
and fsynced first, to keep that gap to one small read); a take-over that lands inside the
gap lets that one stale write through. A claim rewrite frozen between its check and its
rename for longer than STALE_MARKER can likewise replace a newer claim when it resumes.
These windows are one read and one rename wide and open only when a lease already ran out
or a marker went stale, i.e. when an instance was frozen or stalled exactly there for that
long; the runner narrows them further (it renews before writing whenever its lease may
have lapsed, so a resumed owner learns it was superseded before it writes). Leases use the
wall clock of every instance, so their clocks must agree (NTP) to well within a lease.
Redis has none of these windows: there each check-and-set is one script.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import secrets
import time
from pathlib import Path
from typing import NamedTuple

from store.fencing import next_token
from store.file_io import (
    FILE_MODE,
    Signature,
    read_file,
    stat_signature,
    unlink,
    write_atomically,
    write_new,
    write_temp,
)
from store.records import TaskStatus

CLAIMS_DIR = ".claims"
CLAIM_SUFFIX = ".claim"
CANCEL_SUFFIX = ".cancel"
# Where claims must be created with O_EXCL (no hard links), the file exists empty for a
# moment: an unreadable claim this young is taken as held, an older one as garbage.
UNREADABLE_CLAIM_GRACE = 10.0
TAKE_SUFFIX = ".take"
# A rewrite holds its marker for milliseconds; one this old belongs to a crashed or frozen
# instance and may be broken.
STALE_MARKER = 10.0
# Rounds of claim() against claims that vanish between its steps (swept).
_CLAIM_ROUNDS = 5
# Errors that mean "this file system has no hard links", not "the link failed".
_NO_LINK_ERRNOS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS})


class Claim(NamedTuple):
    """The content of a claim file."""

    owner: str
    expires_at: float
    token: int
    # Random per write: tells apart two takers that wrote the same token at once.
    nonce: str


def claim_path(claims: Path, task_id: str) -> Path:
    """The claim file of task_id."""
    return claims / (task_id + CLAIM_SUFFIX)


def cancel_path(claims: Path, task_id: str) -> Path:
    """The cancel request file of task_id."""
    return claims / (task_id + CANCEL_SUFFIX)


def claim(
    claims: Path, task_id: str, owner: str, lease: float, record: Path | None = None
) -> int | None:
    """Take task_id's claim for lease s: its new token, or None while another owner holds it.

    record: the task's record file; a live claim whose run's final record is there is free.
    """
    path = claim_path(claims, task_id)
    for _ in range(_CLAIM_ROUNDS):
        now = time.time()
        fresh = Claim(owner, now + lease, next_token(None, now), secrets.token_hex(8))
        if create_exclusively(claims, task_id, path, claim_bytes(fresh), sync=False):
            unlink(cancel_path(claims, task_id))
            return fresh.token
        found = read_file(path)
        if found is None:
            continue  # swept since: try to create it again
        current = parse_claim(found[0])
        if current is None:
            if now - found[1].mtime_ns / 1e9 <= UNREADABLE_CLAIM_GRACE:
                return None  # being created with O_EXCL right now
        elif (
            current.expires_at > now
            and current.owner != owner
            and (record is None or not ended_since(record, found[1]))
        ):
            return None  # held, and its run has not ended
        # Expired, released, ours, or garbage: take it over, unless someone else does.
        previous = None if current is None else current.token
        mine = Claim(owner, now + lease, next_token(previous, now), secrets.token_hex(8))
        if not _rewrite(claims, task_id, path, found[0], mine, sync=False):
            return None  # another instance took it over (or renewed it) at the same moment
        unlink(cancel_path(claims, task_id))
        return mine.token
    return None


def renew(claims: Path, task_id: str, owner: str, token: int, lease: float) -> bool:
    """Extend the claim holding token (or take it again after a lapse); False if superseded."""
    path = claim_path(claims, task_id)
    mine = Claim(owner, time.time() + lease, token, secrets.token_hex(8))
    found = read_file(path)
    if found is None:
        # Swept while nobody else claimed (only a very long freeze): take it again.
        return create_exclusively(claims, task_id, path, claim_bytes(mine))
    current = parse_claim(found[0])
    if current is None or current.token != token:
        return False
    return _rewrite(claims, task_id, path, found[0], mine)


def release(claims: Path, task_id: str, token: int) -> None:
    """Mark the claim holding token expired, keeping its token; no effect once superseded."""
    path = claim_path(claims, task_id)
    found = read_file(path)
    if found is None:
        return
    current = parse_claim(found[0])
    now = time.time()
    # A lapsed claim is free already, and rewriting it could undo a take-over just now;
    # a live one cannot be taken over meanwhile.
    if current is None or current.token != token or current.expires_at <= now:
        return
    # Not fsynced (see above): a release lost in a crash leaves the claim live until its
    # lease ends, as if its owner had died.
    _rewrite(claims, task_id, path, found[0], current._replace(expires_at=now), sync=False)


def ended_since(record: Path, claim_version: Signature) -> bool:
    """True when the record file is terminal and was written after that claim version."""
    found = read_file(record)
    if found is None or found[1].mtime_ns <= claim_version.mtime_ns:
        return False
    try:
        status = json.loads(found[0]).get("status")
        return TaskStatus(status).is_terminal
    except (ValueError, AttributeError, TypeError):
        return False


def claim_bytes(claim: Claim) -> bytes:
    """A claim file's content."""
    return json.dumps(claim._asdict()).encode()


def parse_claim(data: bytes) -> Claim | None:
    """The claim in a claim file, or None when it is not one."""
    try:
        document = json.loads(data)
        token = document["token"]
        found = Claim(document["owner"], float(document["expires_at"]), token, document["nonce"])
    except (ValueError, KeyError, TypeError):
        return None
    if isinstance(token, bool) or not isinstance(token, int):
        return None
    if not (isinstance(found.owner, str) and isinstance(found.nonce, str)):
        return None
    return found


def cancel_expiry(data: bytes) -> float | None:
    """When a cancel request file's request ends, or None when it is not one."""
    try:
        return float(json.loads(data)["expires_at"])
    except (ValueError, KeyError, TypeError):
        return None


def _rewrite(
    claims: Path, task_id: str, path: Path, judged: bytes, new: Claim, *, sync: bool = True
) -> bool:
    """Replace the claim file, read as `judged`, with new; False if another got there first."""
    digest = hashlib.sha256(judged).hexdigest()[:32]
    marker = claims / f".{task_id}.{digest}{TAKE_SUFFIX}"
    if not _create_marker(marker):
        return False
    try:
        now_found = read_file(path)
        if now_found is None or now_found[0] != judged:
            return False  # changed since it was judged: whatever it is now is not ours to judge
        write_atomically(claims, task_id, claim_bytes(new), CLAIM_SUFFIX, sync=sync)
        return True
    finally:
        unlink(marker)


def _create_marker(marker: Path) -> bool:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(2):
        try:
            os.close(os.open(marker, flags, FILE_MODE))
        except FileExistsError:
            pass
        else:
            return True
        held = stat_signature(marker)
        if held is None or time.time() - held.mtime_ns / 1e9 <= STALE_MARKER:
            return False
        # Its holder crashed or froze: move it aside (only one instance's rename finds it),
        # then compete for the name like everyone else.
        aside = marker.with_name(f"{marker.name}.{secrets.token_hex(4)}.stale")
        try:
            os.rename(marker, aside)
        except FileNotFoundError:
            return False
        unlink(aside)
    return False


def is_marker_name(name: str) -> bool:
    """True for the names of take-over markers (and stale ones moved aside)."""
    return name.startswith(".") and (name.endswith(TAKE_SUFFIX) or name.endswith(".stale"))


def create_exclusively(
    claims: Path, task_id: str, path: Path, data: bytes, *, sync: bool = True
) -> bool:
    """Create path holding data unless it exists; True when this call created it."""
    temp = write_temp(claims, task_id, data, sync=sync)
    try:
        os.link(temp, path)
    except FileExistsError:
        # Over NFS the link may have been made and only the reply lost (the retried call
        # then finds the name taken): the temp file's link count tells.
        return os.stat(temp).st_nlink == 2
    except OSError as exc:
        if exc.errno not in _NO_LINK_ERRNOS:
            raise
        try:
            write_new(path, data)
        except FileExistsError:
            return False
        return True
    else:
        return True
    finally:
        unlink(temp)
