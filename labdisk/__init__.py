"""labdisk: an emulated SD card for tests and benchmarks, that loses power and dies on cue.

A FUSE file system (libfuse 3 through mfusepy) over a backing directory. Everything the code
under test does through the mount reaches the backing directory at once, and labdisk remembers
what is not durable yet; a **power cut** throws that away, with the semantics of Jepsen's LazyFS
extended to directory entries. It also injects **errors** (EIO, ENOSPC, a card that turns
read-only, a card pulled and reinserted), **stalls** (fsync or write latency drawn from a seeded
distribution) and **counts** what is written, per file class, for write-amplification figures.
Outside the product: nothing in the box imports it (tests/test_layering.py).

## Use

    from labdisk import Delay, LabDisk, LabDiskClient

    with LabDisk(backing=tmp / "card-backing", mountpoint=tmp / "card", mode="strict",
                 seed=7, classes=[("evidence", "*.mvb*"), ("catalog", "catalog/*")]) as disk:
        ... the code under test writes below tmp / "card" ...
        disk.cut(torn=True)              # power cut: only the durable state is left
        disk.fail("EIO", ops=["fsync"], path="evidence/*", times=1)
        disk.stall(Delay.uniform(0.05, 2.0), ops=["fsync"])
        disk.read_only()                 # the card turns read-only: writes fail EROFS from now on
        disk.pull("ENODEV"); disk.reinsert()
        disk.stats()                     # bytes written, writes, fsyncs, dir fsyncs per class

`LabDisk` starts the daemon (`python -m labdisk serve`, a process of its own in a new session,
so killing the code under test never kills the card) and waits until the mount serves; `close`
(or the `with` block's end) unmounts: `fusermount3 -u`, lazily when busy, and the mount is made
with `auto_unmount`, so a daemon that dies takes its mount along. Every control call goes
through the daemon's **control socket** (`disk.control`, a unix socket, one JSON line each way:
labdisk/control_io.py), so another process controls the same card with
`LabDiskClient(control).cut()`, or from a shell: `python -m labdisk ctl SOCKET cut --torn`
(labdisk/__main__.py lists the commands). The socket lives outside the mount: nothing of labdisk
appears in the card's listing (the hidden `.labdisk/` of parked inodes is not served, and is
gone after every cut).

Requirements: root (the daemon serves the backing directory as root and gives new files to
their creator; mount with `allow_other=True` when the code under test runs as another user),
/dev/fuse, Debian `fuse3` (fusermount3, libfuse 3) and `mfusepy` (the test extra). `make test`
installs both.

## The power cut

While mounted, the backing directory is the live state (plus `.labdisk/`); after `cut` it holds
exactly the durable state, and the mount serves it at once: same mount, no remount. Handles open
before the cut are stale (every operation on them fails EIO, close succeeds), so the code under
test must be stopped first and started again after, as after a real power cut. What is durable
(labdisk/durability.py):

- **File data** is durable where the file was fsynced (fsync or fdatasync, or a write through an
  O_SYNC/O_DSYNC handle): at a cut every file gets back the content of its last fsync (a file
  created since: empty). A write not fsynced is gone, page by page (4 KiB): overwritten pages
  come back, appended bytes are cut off, a truncation is undone.
- **Directory entries** (create, mkdir, symlink, link, rename, unlink, rmdir) depend on the mode:
  - `strict` (POSIX): an entry is durable when its directory has been fsynced since it changed.
    A file created in a directory never fsynced is gone, even if the file was fsynced; a
    directory whose own entry is not durable takes everything below it along; a rename over a
    name reverts (the old file comes back); an unlinked file comes back. A rename between two
    directories is two entries, each durable with its own directory's fsync.
  - `ext4` (ext4 with data=ordered and delayed allocation, seen from the application): any
    successful fsync, of a file or a directory, commits the journal: every pending entry of the
    whole card becomes durable; file data still only where that file was fsynced. So a file
    written and renamed over a name without its own fsync is **empty** after a cut that follows
    another file's fsync: ext4's zero-length file. `commit()` is a journal commit on demand
    (ext4's 5 s timer, which labdisk does not run by itself).
- **Torn write** (`cut(torn=True)`): of the last write not yet durable, each 4 KiB page of the
  file it touched is kept or lost at random (seeded); the report says how many were kept.

A failed operation (an injected error, a stale handle) changes nothing, so a failed fsync makes
nothing durable. A cut ends every stall at once: the stalled operation fails EIO.

`cut` returns what was thrown away: files_restored, bytes_lost (written or truncated since the
files' last fsyncs), entries_reverted, torn_pages_kept of torn_pages.

Not modelled:
- ext4's `auto_da_alloc` (a replace by rename, or a truncate to 0, of a file with unwritten data
  starts its writeback, which usually saves the data in practice): labdisk keeps the worst case.
  Nor the writeback of dirty data after 30 s, nor the 5 s journal commit (call `commit`):
  everything not fsynced waits for the cut; real ext4 would often have saved more.
- Inode attributes (mode, owner, times) and extended attributes: durable at once. The kernel's
  sync(2)/syncfs(2) never reach a FUSE file system: they make nothing durable here.
- fsync error semantics: after an injected fsync error the data stays pending, and a later fsync
  that succeeds makes it durable. Linux (since 4.13) drops the pages a failed writeback held, so
  a retried fsync succeeds while the data is gone: code that retries fsync is judged too kindly.
- rename(2) flags: RENAME_NOREPLACE and RENAME_EXCHANGE fail EINVAL.
- Reordering within a file beyond the torn last write (a real card may keep a later unsynced
  write and lose an earlier one).
- The backing directory itself is never fsynced: a crash of the host is not the card's cut.

## Errors, stalls, card state (labdisk/faults.py)

- `fail(error, ops=..., path=glob, after=N, times=M)`: the operations in `ops` (names in
  faults.ALL_OPS: open, create, read, write, truncate, fsync, fsyncdir, mkdir, rmdir, unlink,
  rename, link, symlink, getattr, readdir, statfs, ...; `*` for all; faults.SPACE_OPS for a full
  card) on a path matching `path` fail with `error` (ENOSPC, EIO, ...), after `after` matches
  pass, `times` times (None: from then on). Paths are relative to the mount; the glob is
  fnmatch's, where `*` also matches `/` (`evidence/*` is a prefix). A rename matches either
  path. The kernel retries a failed readahead as a plain read: make a read error stick with
  `times=None`.
- `stall(delay, ops=..., path=..., after=..., times=...)`: the operation waits before it runs:
  `Delay.fixed(s)`, `Delay.uniform(low, high)` or `Delay.choice([...])`, drawn from the card's
  seeded generator. Only the stalled caller waits (the rest of the card goes on), and
  `status()["stalled"]` counts the operations waiting now.
- `read_only(on=True)`: every write operation (and every open for writing) fails EROFS; reads
  work. `pull("ENODEV" | "ENOTCONN" | "EIO")`: a power cut of the card, then every operation
  fails with that errno; `reinsert()` serves the durable state again, but handles from before the
  pull stay stale: the code under test must open its files again.
- `clear_faults(rule_id=None)` drops one rule or all (the card state stays).

## Accounting

`stats(reset=False)["classes"]` holds, per class and in total: bytes_written, writes, fsyncs,
dir_fsyncs and metadata_ops. A class is the first (name, glob) of `classes` (or `classify(...)`)
that matches the path at the time of the operation; the rest is "other". Tmp files of the
durable write are `.<name>.<16 hex>.tmp` beside their target: `*.mvb*` catches an evidence file's
tmp too. These are bytes the file system received, before any flash-level amplification.

## For the torture and the soak

- One mount for the card and the state directory: `LabDisk(backing=..., mountpoint=root)` and
  `make_dirs(root / "card")`, `make_dirs(root / "state")` (common/durable.py: durable even in
  strict mode) before the box starts; then point the box's card and state paths below `root`.
  One `cut` then cuts both, as one power supply does. (Two mounts work too; cut both.)
- A power cut is: SIGKILL the box (its whole process group), **wait until it has exited**, then
  `cut()` (from the harness's process, or any other with `LabDiskClient(control)`), then start
  the box again on the same mount. An operation in flight at the cut fails EIO; one issued after
  the cut by a process still alive would land on the new state, hence the wait.
- Run each scenario in both modes; `seed` makes stalls and torn writes repeatable.
- Throughput through the mount: about 290 MB/s with four threads writing and fsyncing (2-core
  test machine), plenty for a 4 Mbit/s camera.

## Files

durability.py (pure: what is durable, what a cut puts back), faults.py (pure: rules, delays,
card state, accounting), fs_io.py (the FUSE operations, in the daemon: the file and directory
data operations, on fs_core_io.py's shared state and plumbing, with fs_tree_io.py's namespace
operations and fs_control_io.py's control: cut, pull, faults, stats), cut_io.py (a cut's work
in the backing directory), control_io.py (the socket and `LabDiskClient`), mount_io.py
(`LabDisk`: start, wait, unmount), __main__.py (`serve` and `ctl`). Tests: tests/labdisk/.
"""

from labdisk.control_io import ControlError, LabDiskClient
from labdisk.faults import Delay
from labdisk.mount_io import LabDisk, is_mounted, labdisk_mounts, unmount

__all__ = [
    "ControlError",
    "Delay",
    "LabDisk",
    "LabDiskClient",
    "is_mounted",
    "labdisk_mounts",
    "unmount",
]
