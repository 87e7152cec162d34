"""Checkpoints with orbax; the only module that imports it.

Two managers under the workdir:
* `checkpoints/`: the periodic train state (params, optimizer state, step, rng) and a JSON record
  of the run position (best validation score so far, ...), async, keeping the last N;
* `best/`: the parameters with the best validation NDCG@K so far (one kept).
A run started again with the same workdir restores the latest of each and goes on from there.

Integrity (docs/reliability.md):
* nothing non-finite is saved: `save` and `save_best` raise `NonFiniteState` instead;
* every saved step records, in its JSON record, two 32-bit checksums of every leaf's bits
  (`checksums`: a plain and a position-weighted sum modulo 2^32: exact, so independent of the
  device count and the order of the sums); `restore` and `restore_best` recompute them and raise
  `CheckpointError` when a leaf differs, is not finite, or orbax cannot read the step;
* `restore_latest_verified` walks back from the newest step: a step that fails is moved aside
  to `WORKDIR/corrupt/` (never deleted), said in one line, and the next older one is tried.
Steps saved before checksums existed are checked for finiteness only.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp


class NonFiniteState(FloatingPointError):
    """A state or parameters about to be saved hold NaN or inf (nothing was written)."""


class CheckpointError(RuntimeError):
    """A saved step cannot be used: unreadable, checksum mismatch, or not finite."""


class DiskFullError(RuntimeError):
    """A step could not be saved for lack of space (or a file-size limit); the message names the
    workdir, the free space and the newest step that was saved."""


_SPACE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def is_space_error(e: BaseException) -> bool:
    """True for a write that failed for lack of space: an OSError with ENOSPC/EDQUOT/EFBIG, or
    an orbax/tensorstore error carrying that os error code, anywhere in the exception chain."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _SPACE_ERRNOS:
            return True
        m = re.search(r"os_error_code='?(\d+)", str(e))
        if (m and int(m.group(1)) in _SPACE_ERRNOS) or 'No space left on device' in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def free_bytes(path: str) -> int:
    return shutil.disk_usage(path).free


def _fmt_bytes(n: float) -> str:
    for unit in ('B', 'KB', 'MB', 'GB', 'TB'):
        if abs(n) < 1024 or unit == 'TB':
            return f'{n:.0f} {unit}' if unit == 'B' else f'{n:.1f} {unit}'
        n /= 1024


def _bits(x):
    x = jnp.asarray(x)
    if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    size = x.dtype.itemsize
    if size == 4:
        return jax.lax.bitcast_convert_type(x, jnp.uint32)
    if size == 2:
        return jax.lax.bitcast_convert_type(x, jnp.uint16).astype(jnp.uint32)
    if size == 1:
        return jax.lax.bitcast_convert_type(x, jnp.uint8).astype(jnp.uint32)
    return jax.lax.bitcast_convert_type(x, jnp.uint32)          # 8 bytes: [..., 2]


@jax.jit
def _checksums_and_finite(tree):
    sums, finite = [], jnp.array(True)
    for leaf in jax.tree_util.tree_leaves(tree):
        b = _bits(leaf).reshape(-1)
        idx = jnp.arange(b.shape[0], dtype=jnp.uint32)
        w = idx * jnp.uint32(2654435761) + jnp.uint32(1)           # wraps modulo 2^32
        sums.append(jnp.stack([jnp.sum(b, dtype=jnp.uint32), jnp.sum(b * w, dtype=jnp.uint32)]))
        if jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.floating):
            finite = finite & jnp.all(jnp.isfinite(leaf))
    return sums, finite


def checksums_and_finite(tree) -> tuple[list, bool]:
    """([[sum, weighted sum] per leaf] of the leaves' bits, modulo 2^32; True if every float
    leaf is finite). One small jitted program; the inputs may be sharded."""
    if not jax.tree_util.tree_leaves(tree):
        return [], True
    sums, finite = jax.device_get(_checksums_and_finite(tree))
    return [[int(a), int(b)] for a, b in (np.asarray(s) for s in sums)], bool(finite)


def _with_checksums(tree, meta: dict, what: str) -> dict:
    """`meta` plus the tree's checksums; NonFiniteState (naming `what`) if the tree is not finite."""
    sums, finite = checksums_and_finite(tree)
    if not finite:
        raise NonFiniteState(f'{what} is not finite (NaN or inf)')
    return dict(meta, checksums=sums)


def _on_this_host(abstract):
    """`abstract` with a sharding on every leaf: a leaf without one gets the first local device.

    Without a target sharding orbax lays an array out as it was saved, which fails ("Topology
    mismatch") when this process has other devices than the run that saved it: a run trained on 8
    devices or on two hosts, evaluated or recommended from on one. The bits restored are the same
    whatever the layout (the checksums say so)."""
    dev = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])

    def place(a):
        if getattr(a, 'sharding', None) is None:
            return jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=dev)
        return a
    return jax.tree_util.tree_map(place, abstract)


def _saved_layout(mgr, step: int, key: str):
    """The shapes and dtypes item `key` of `step` was saved with, as ShapeDtypeStructs."""
    from etils import epath
    meta = ocp.StandardCheckpointHandler().metadata(epath.Path(mgr.directory) / str(step) / key)
    return jax.tree_util.tree_map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype), meta.tree)


def _restore_verified(mgr, step: int, key: str, abstract, what: str):
    """(tree, meta) of item `key` of a step of `mgr`, verified against the step's checksums;
    the checksums are not in the returned meta. `abstract`: the target tree of
    ShapeDtypeStructs (a leaf without a sharding lands on this host's first device), or None for
    the tree as saved. CheckpointError naming `what` if the files cannot be read, changed since
    they were saved, or hold NaN/inf."""
    try:
        if abstract is None:
            abstract = _saved_layout(mgr, step, key)
        abstract = _on_this_host(abstract)
        r = mgr.restore(step, args=ocp.args.Composite(
            **{key: ocp.args.StandardRestore(abstract)}, meta=ocp.args.JsonRestore()))
    except Exception as e:          # orbax / tensorstore / json: the files cannot be read
        raise CheckpointError(f'{what}: unreadable ({type(e).__name__}: '
                              f'{str(e).splitlines()[0][:200] if str(e) else ""})') from e
    verify(r[key], r['meta'], what)
    meta = dict(r['meta'])
    meta.pop('checksums', None)
    return r[key], meta


def verify(tree, meta: dict, what: str) -> None:
    """Raises CheckpointError if `tree` does not match the checksums in `meta` or is not finite."""
    sums, finite = checksums_and_finite(tree)
    want = (meta or {}).get('checksums')
    if want is not None:
        if len(want) != len(sums):
            raise CheckpointError(f'{what}: {len(sums)} arrays restored, {len(want)} were saved')
        bad = [i for i, (a, b) in enumerate(zip(sums, want)) if list(a) != list(b)]
        if bad:
            raise CheckpointError(f'{what}: checksum mismatch in {len(bad)} of {len(sums)} arrays '
                                  '(the files changed after they were saved)')
    if not finite:
        raise CheckpointError(f'{what}: holds NaN or inf')


class Checkpointer:

    def __init__(self, workdir: str, keep: int = 2, create: bool = True):
        """`create=False`: read only; creates no folder (evaluate and recommend on a workdir)."""
        self.workdir = os.path.abspath(workdir)
        self._in_flight = None          # the step of the newest async save
        self._unchecked = None          # ... while its outcome has not been collected
        self.state_mgr = ocp.CheckpointManager(
            os.path.join(self.workdir, 'checkpoints'),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True,
                                                 create=create))
        self.best_mgr = ocp.CheckpointManager(
            os.path.join(self.workdir, 'best'),
            options=ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=False,
                                                 create=create))

    def latest_step(self):
        return self.state_mgr.latest_step()

    def save(self, step: int, state, meta: dict) -> None:
        """Saves (async) the state with `meta` and the state's checksums; NonFiniteState, and
        nothing written, when the state is not finite; DiskFullError, and nothing written, when
        the disk has not room for it (or when the previous save failed for lack of space)."""
        self.wait()          # orbax waits for the previous save anyway; its failure is named
        meta = _with_checksums(state, meta, f'the train state at step {step}')
        self._check_space(step, state)
        replaced = self._set_aside(step)
        self._in_flight = self._unchecked = step
        with self._space_errors(step):
            self.state_mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                              meta=ocp.args.JsonSave(meta)), force=True)
        if replaced is not None:          # rare: wait, then drop the superseded copy
            self.wait()
            shutil.rmtree(replaced, ignore_errors=True)

    def _set_aside(self, step: int):
        """A step saved again (a phase entered at a step that already has a checkpoint, e.g. a
        finished run extended by a new phase): the old copy is renamed to
        `checkpoints/.replaced-STEP` (orbax does not list it) until the new one is complete;
        `restore_latest_verified` puts it back if a kill came in between."""
        if step not in self.state_mgr.all_steps():
            return None
        src = os.path.join(self.workdir, 'checkpoints', str(step))
        dst = os.path.join(self.workdir, 'checkpoints', f'.replaced-{step}')
        shutil.rmtree(dst, ignore_errors=True)
        os.replace(src, dst)
        self.state_mgr.reload()
        return dst

    # ---------------------------------------------------------------- disk space
    def _check_space(self, step: int, tree) -> None:
        need = sum(int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
                   for x in jax.tree_util.tree_leaves(tree) if hasattr(x, 'shape'))
        need = int(need * 1.05) + (1 << 20)          # + orbax's metadata and the JSON record
        free = free_bytes(self.workdir)
        if free < need:
            raise DiskFullError(self._full_message(
                step, f'about {_fmt_bytes(need)} needed, {_fmt_bytes(free)} free'))

    def _full_message(self, step: int, why: str) -> str:
        good = [s for s in self.state_mgr.all_steps() if s != step]
        return (f'checkpoint step {step} could not be saved in {self.workdir}: no space ({why}); '
                f'training stopped there. '
                + (f'The steps saved before are intact (newest: {max(good)}); ' if good else '')
                + 'free space (or give a --workdir on another disk), then rerun the same command '
                'to resume')

    class _SpaceErrors:
        def __init__(self, ck, step):
            self.ck, self.step = ck, step

        def __enter__(self):
            return self

        def __exit__(self, typ, e, tb):
            if e is None or not is_space_error(e):
                return False
            step = self.ck._in_flight if self.step is None else self.step
            self.ck._remove_tmp(step)
            try:
                free = _fmt_bytes(free_bytes(self.ck.workdir))
            except OSError:
                free = '?'
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            reason = ('a file-size limit (ulimit -f)' if 'File too large' in str(e)
                      else first[:120])
            raise DiskFullError(self.ck._full_message(step, f'{reason}; {free} free')) from None

    def _remove_tmp(self, step: int, settle_s: float = 0.5, limit_s: float = 10.0) -> None:
        """Removes the unfinished step's temporary folders (garbage: frees their space). A failed
        async save can leave writes of other arrays still running in orbax's threads, and such a
        write creates its folder again after a first removal; so the folders are removed until
        none has come back for `settle_s` (at most `limit_s`)."""
        t_end, quiet_since = time.monotonic() + limit_s, None
        while time.monotonic() < t_end:
            found = False
            for kind in ('checkpoints', 'best'):
                d = os.path.join(self.workdir, kind)
                for name in (os.listdir(d) if os.path.isdir(d) else []):
                    if name.startswith(f'{step}.orbax-checkpoint-tmp'):
                        found = True
                        shutil.rmtree(os.path.join(d, name), ignore_errors=True)
            now = time.monotonic()
            if found or quiet_since is None:
                quiet_since = now
            elif now - quiet_since >= settle_s:
                return
            time.sleep(0.05)

    def _space_errors(self, step=None):
        return Checkpointer._SpaceErrors(self, step)

    def _save_over(self) -> bool:
        """True once orbax's finalize thread of the newest save has ended (successfully or not).
        orbax offers no public call for this (is_saving_in_progress stays true after a failed
        save); an orbax without the attribute makes this False, and a failure is then raised
        at the next save, one checkpoint interval later."""
        ft = getattr(self.state_mgr, '_finalize_thread', None)
        try:
            return bool(ft.map(lambda t: t is not None and not t.is_alive()))
        except Exception:           # another orbax version
            return False

    def check_errors(self) -> None:
        """Raises (DiskFullError for lack of space) if the newest async save has failed. Cheap:
        the trainer calls it after every step; once the background save is over, its outcome is
        collected (orbax raises a failed write only from wait_until_finished), so a failed save
        stops the run at the first step after it ended. One process only: with several, each
        host's save ends at its own time, and the failure is raised at the next save instead."""
        if self._unchecked is None or jax.process_count() > 1 or not self._save_over():
            return
        self._unchecked = None
        self.wait()

    def restore(self, step: int, abstract_state):
        """Returns (state laid out as `abstract_state`'s shardings, meta dict), verified
        (CheckpointError if the step is unreadable, changed since it was saved, or not finite)."""
        return _restore_verified(self.state_mgr, step, 'state', abstract_state,
                                 f'checkpoint step {step} in {self.workdir}/checkpoints')

    def _move_aside(self, mgr, kind: str, step: int) -> str:
        src = os.path.join(self.workdir, kind, str(step))
        dst_dir = os.path.join(self.workdir, 'corrupt')
        os.makedirs(dst_dir, exist_ok=True)
        dst = os.path.join(dst_dir, f'{kind}-{step}-{time.strftime("%Y%m%d-%H%M%S")}')
        if os.path.exists(src):
            os.replace(src, dst)
        mgr.reload()
        return dst

    def restore_latest_verified(self, abstract_state, log=print):
        """(step, state, meta) of the newest step that verifies, or None if there is none; each
        newer step that fails is moved to WORKDIR/corrupt/ with one line through `log`."""
        d = os.path.join(self.workdir, 'checkpoints')
        for name in (os.listdir(d) if os.path.isdir(d) else []):
            if name.startswith('.replaced-'):       # a kill while a step was saved again
                step = name[len('.replaced-'):]
                if step.isdigit() and int(step) not in self.state_mgr.all_steps():
                    os.replace(os.path.join(d, name), os.path.join(d, step))
                else:
                    shutil.rmtree(os.path.join(d, name), ignore_errors=True)
        self.state_mgr.reload()
        for step in sorted(self.state_mgr.all_steps(), reverse=True):
            try:
                state, meta = self.restore(step, abstract_state)
                return step, state, meta
            except CheckpointError as e:
                dst = self._move_aside(self.state_mgr, 'checkpoints', step)
                log(f'WARNING: {e}; moved to {dst}; trying the previous checkpoint')
        return None

    def save_best(self, step: int, params, meta: dict) -> None:
        meta = _with_checksums(params, meta, f'the parameters at step {step}')
        self.wait()
        self._check_space(step, params)
        if step in self.best_mgr.all_steps():      # written before a kill, now written again
            self.best_mgr.delete(step)
        with self._space_errors(step):
            self.best_mgr.save(step, args=ocp.args.Composite(
                params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta)),
                force=True)

    def prune_best_after(self, step: int) -> None:
        """Forgets best parameters saved after `step` (by a run killed after saving them): the resumed
        run repeats those steps and saves them again, so the record never runs ahead of the state."""
        for s in self.best_mgr.all_steps():
            if s > step:
                self.best_mgr.delete(s)

    def best_step(self):
        return self.best_mgr.latest_step()

    def restore_best(self, abstract_params, step=None):
        """(params, meta) of the kept best step, verified; CheckpointError if it fails (the
        caller decides: `discard_best` moves it aside)."""
        step = self.best_mgr.latest_step() if step is None else step
        return _restore_verified(self.best_mgr, step, 'params', abstract_params,
                                 f'best parameters of step {step} in {self.workdir}/best')

    def discard_best(self, step: int) -> str:
        """Moves the best/ step aside to WORKDIR/corrupt/ (never deletes it); returns where."""
        return self._move_aside(self.best_mgr, 'best', step)

    def wait(self):
        with self._space_errors():
            self.state_mgr.wait_until_finished()
            self.best_mgr.wait_until_finished()

    def close(self):
        self.state_mgr.close()
        self.best_mgr.close()


def restore_params_only(workdir: str, abstract_params, which: str = 'best'):
    """Parameters of a finished run, for `recommend` and `evaluate`: the best ones, else the
    latest state's; verified (CheckpointError names the step and why it cannot be used). Creates
    nothing in the workdir."""
    ck = Checkpointer(workdir, create=False)
    try:
        if which == 'best' and ck.best_step() is not None:
            return ck.restore_best(abstract_params)[0]
        step = ck.latest_step()
        if step is None:
            raise FileNotFoundError(f'no checkpoint under {workdir}/checkpoints or {workdir}/best')
        return ck.restore(step, None)[0]['params']
    finally:
        ck.close()
