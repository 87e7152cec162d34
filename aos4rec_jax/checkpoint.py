"""Checkpoints with orbax; the only module that imports it.

Two managers under the workdir:
* `checkpoints/`: the periodic train state (params, optimizer state, step, rng) and a JSON record
  of the run position (best validation score so far, ...), async, keeping the last N;
* `best/`: the parameters with the best validation NDCG@K so far (one kept).
A run started again with the same workdir restores the latest of each and goes on from there.
"""
from __future__ import annotations

import os

import orbax.checkpoint as ocp


class Checkpointer:

    def __init__(self, workdir: str, keep: int = 2):
        self.state_mgr = ocp.CheckpointManager(
            os.path.abspath(os.path.join(workdir, 'checkpoints')),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True,
                                                 create=True))
        self.best_mgr = ocp.CheckpointManager(
            os.path.abspath(os.path.join(workdir, 'best')),
            options=ocp.CheckpointManagerOptions(max_to_keep=1, enable_async_checkpointing=False,
                                                 create=True))

    def latest_step(self):
        return self.state_mgr.latest_step()

    def save(self, step: int, state, meta: dict) -> None:
        self.state_mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                          meta=ocp.args.JsonSave(meta)), force=True)

    def restore(self, step: int, abstract_state):
        """Returns (state laid out as `abstract_state`'s shardings, meta dict)."""
        r = self.state_mgr.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()))
        return r['state'], r['meta']

    def save_best(self, step: int, params, meta: dict) -> None:
        self.state_mgr.wait_until_finished()
        if step in self.best_mgr.all_steps():      # written before a kill, now written again
            self.best_mgr.delete(step)
        self.best_mgr.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(params),
                                                         meta=ocp.args.JsonSave(meta)), force=True)

    def prune_best_after(self, step: int) -> None:
        """Forgets best parameters saved after `step` (by a run killed after saving them): the resumed
        run repeats those steps and saves them again, so the record never runs ahead of the state."""
        for s in self.best_mgr.all_steps():
            if s > step:
                self.best_mgr.delete(s)

    def best_step(self):
        return self.best_mgr.latest_step()

    def restore_best(self, abstract_params, step=None):
        step = self.best_mgr.latest_step() if step is None else step
        r = self.best_mgr.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract_params), meta=ocp.args.JsonRestore()))
        return r['params'], r['meta']

    def wait(self):
        self.state_mgr.wait_until_finished()
        self.best_mgr.wait_until_finished()

    def close(self):
        self.state_mgr.close()
        self.best_mgr.close()


def restore_params_only(workdir: str, abstract_params, which: str = 'best'):
    """Parameters of a finished run, for `recommend`: the best ones, else the latest state's."""
    ck = Checkpointer(workdir)
    try:
        if which == 'best' and ck.best_step() is not None:
            return ck.restore_best(abstract_params)[0]
        step = ck.latest_step()
        if step is None:
            raise FileNotFoundError(f'no checkpoint under {workdir}/checkpoints or {workdir}/best')
        r = ck.state_mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(),
                                                               meta=ocp.args.JsonRestore()))
        return r['state']['params']
    finally:
        ck.close()
