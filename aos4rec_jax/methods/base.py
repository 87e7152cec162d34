"""The method contract (docs/DESIGN.md, "Method contract"): what the trainer, the evaluator and
the CLIs may ask of any recommender.

A method is built once per run, ``Method(config, ds)``. It owns its networks' train state
(``init_state``), its schedule (``phases``: pure jitted steps), and how parameters become ranked
K-lists (``generate_fn``). The trainer only runs phases, logs, validates, selects, checkpoints
and resumes; it never asks which method it runs.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import ml_collections


class RunError(ValueError):
    """The workdir, the data or a run the config names cannot be used; the message says why."""


@dataclasses.dataclass(frozen=True)
class Phase:
    """One stretch of the schedule.

    name: logged in train.jsonl / valid_history.jsonl ('train', 'seq2seq', 'critic', 'gan').
    steps: updates in this phase (0: the phase is skipped, but its `enter` still runs).
    step_fn: pure ``(state, data) -> (state, metrics)``; increments state['step'].
    validate: validation, model selection and best/ run in this phase.
    examples_per_step, epoch_examples: when both > 0, train.jsonl gets examples_per_s and
      epoch = step * examples_per_step / epoch_examples.
    enter: ``(state, ctx: PhaseContext) -> (state, meta)`` run once when the run reaches the
      phase's first step.
    validate_on_entry: when the run reaches the phase's first step (after `enter`, if any), the
      trainer validates the state the phase starts from (valid_history.jsonl gets a line with
      this phase's name and at_entry=true), so the starting parameters compete in model
      selection: a phase whose updates never beat its start keeps the start (AOS4Rec's
      aos4rec.gan_start_competes). Needs validate=True.
    entered_key: a phase with `enter` or `validate_on_entry` is entered once: the trainer writes
      this key into the checkpoint meta (unless the hook set it) and saves right after, so a
      resumed run does not enter or validate the start again. Default 'entered_<name>'.
    """
    name: str
    steps: int
    step_fn: Callable
    validate: bool = True
    examples_per_step: int = 0
    epoch_examples: int = 0
    enter: Optional[Callable] = None
    entered_key: str = ''
    validate_on_entry: bool = False

    def __post_init__(self):
        if self.validate_on_entry and not self.validate:
            raise ValueError(f'Phase {self.name!r}: validate_on_entry needs validate=True')
        if not self.entered_key:
            object.__setattr__(self, 'entered_key', f'entered_{self.name}')

    @property
    def has_entry(self) -> bool:
        """Whether reaching the first step does something (the enter hook, the entry validation)."""
        return self.enter is not None or self.validate_on_entry


@dataclasses.dataclass
class PhaseContext:
    """What a phase's `enter` hook may use."""
    checkpointer: Any            # checkpoint.Checkpointer of the run (best_step, restore_best)
    abstract: dict               # the state's abstract tree (ShapeDtypeStruct with shardings)
    shardings: dict              # NamedSharding per state leaf
    meta: dict                   # the checkpoint meta so far (best_score, best_step, ...)
    step: int                    # the step the phase starts at
    log: Callable[[str], None]


class Method:
    """Base class of every method; subclasses fill the contract (see the module docstring)."""

    trains: bool = True
    # options of this method's config block added after runs were already written, with the
    # value that reproduces what those runs did: a resumed older run whose config.json lacks
    # them is not refused as "a different config" (trainer._check_resume_config)
    OPTIONS_ADDED_LATER: dict = {}

    def __init__(self, config, ds):
        self.config, self.ds, self.info = config, ds, ds.info

    # -- configuration -----------------------------------------------------------------------
    @classmethod
    def validate_config(cls, config) -> None:
        """Raises config.ConfigError naming the first invalid field of this method's settings."""

    @classmethod
    def resumable_changes(cls, config: dict, resumable: set) -> set:
        """The config fields (dotted names) a resumed run may change, given the trainer's default
        set; `config` is the run's config as a dict."""
        return resumable

    @classmethod
    def generator_network(cls, config: dict) -> Optional[str]:
        """The generator network whose parameters are the `params` a run of this method keeps,
        given that run's config (its config.json as a dict): the seq2seq 'transformer' or 'gru'
        (models/), or 'gpt (train_len W)' for the decoder-only policy of GPT and CRR; None when
        it keeps no such network. Two runs may share `params` (another run's `init_from`,
        methods/init_from.py) only when their networks are equal."""
        return None

    # -- training ------------------------------------------------------------------------------
    def fit(self):
        """Parameters of a method that does not train (trains = False)."""
        raise NotImplementedError(f'{type(self).__name__} trains; it has no fit()')

    def init_state(self, rng) -> dict:
        """Pure: the initial train state {step, params, rng, ...} (the trainer jits it)."""
        raise NotImplementedError

    def phases(self, mesh) -> list[Phase]:
        raise NotImplementedError

    def describe(self) -> Optional[str]:
        """One line about the schedule, logged at the start of training (None: nothing)."""
        return None

    def summarize(self, phase: str, summed: dict, n: int) -> dict:
        """Step metrics summed over n steps -> the logged values: loss_sum / tokens -> loss,
        every other key averaged over the n steps."""
        out = {}
        if 'loss_sum' in summed and 'tokens' in summed:
            out['loss'] = float(summed['loss_sum'] / max(float(summed['tokens']), 1.0))
        for k, v in summed.items():
            if k not in ('loss_sum', 'tokens'):
                out[k] = float(v / max(n, 1))
        return out

    def console(self, phase: str, m: dict) -> str:
        """The console's part of a log line."""
        return ' '.join(f'{k} {v:.4f}' for k, v in m.items())

    # -- evaluation ----------------------------------------------------------------------------
    def generate_fn(self) -> Callable:
        """``f(params, batch, rng) -> (sampled [B, K] or None, full [B, K])`` (jit-compatible)."""
        raise NotImplementedError

    def decode_description(self):
        """What made the K-lists; written into every metrics file."""
        return self.config.decode.to_dict()


def options_block(config, name: str, defaults: dict) -> ml_collections.ConfigDict:
    """A method's option block: `defaults` overridden by config[name] (if the config has it)."""
    out = dict(defaults)
    if name in config:
        out.update(config[name].to_dict())
    return ml_collections.ConfigDict(out)


def checked_options(config, name: str, defaults: dict) -> ml_collections.ConfigDict:
    """`options_block`, after refusing a field of config[name] that `defaults` does not name
    (config.ConfigError naming the block, the unknown fields and the known ones)."""
    if name in config:
        unknown = sorted(set(config[name].to_dict()) - set(defaults))
        if unknown:
            from aos4rec_jax import config as config_lib
            raise config_lib.ConfigError(
                f'config.{name}: unknown field(s) {unknown}; known: {sorted(defaults)}')
    return options_block(config, name, defaults)
