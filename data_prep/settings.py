"""Settings of a prepared dataset: profiles, the protocol, overrides, validation."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

from .errors import DataPrepError

PROFILES = ("movielens", "yoochoose", "default")
PROTOCOLS = ("paper", "loo")

# PROTOCOL sections 1-3 and the AOS4Rec paper's Table 1 (see docs/data_prep.md).
_PROFILE_VALUES = {
    "movielens": dict(k_core=4, min_len=50, max_len=None, cap=80, k=10, target_len=10,
                      history_len=50, ban_history=True),
    "yoochoose": dict(k_core=4, min_len=12, max_len=200, cap=6, k=6, target_len=6,
                      history_len=20, ban_history=False),
    "default": dict(k_core=4, min_len=4, max_len=None, cap=10, k=10, target_len=10,
                    history_len=50, ban_history=False),
}
_COMMON = dict(num_candidates=1000, seed=0)
# Leave-one-out next-item protocol: h = 1 (cap 1), T = 1, HR/NDCG@10 over target + 100 negatives
# (SASRec's 100; num_negatives=N gives N + 1 candidates, e.g. 99 for the S3-Rec figures).
_LOO = dict(cap=1, target_len=1, k=10, num_candidates=101)


@dataclass(frozen=True)
class Settings:
    """Everything that decides the content of a prepared dataset (and travels with it).

    ``max_len`` None means no maximum length. Under ``protocol='loo'`` the split size is
    h = 1 (``cap`` is 1).
    """

    profile: str = "default"
    protocol: str = "paper"
    k_core: int = 4
    min_len: int = 4
    max_len: Optional[int] = None
    cap: int = 10
    k: int = 10
    target_len: int = 10
    history_len: int = 50
    num_candidates: int = 1000
    seed: int = 0
    ban_history: bool = False

    def __post_init__(self):
        validate(self)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "Settings":
        return dataclasses.replace(self, **changes)


SETTING_FIELDS = tuple(f.name for f in dataclasses.fields(Settings))


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def validate(s: Settings) -> None:
    """Raise DataPrepError naming the first inconsistent setting."""
    if s.profile not in PROFILES:
        raise DataPrepError(f"unknown profile {s.profile!r} (choose from {', '.join(PROFILES)})")
    if s.protocol not in PROTOCOLS:
        raise DataPrepError(f"unknown protocol {s.protocol!r} (choose from {', '.join(PROTOCOLS)})")
    for name in ("k_core", "min_len", "cap", "k", "target_len", "history_len", "num_candidates",
                 "seed"):
        v = getattr(s, name)
        if not _is_int(v):
            raise DataPrepError(f"setting {name} must be an integer, got {v!r}")
    if s.max_len is not None and not _is_int(s.max_len):
        raise DataPrepError(f"setting max_len must be an integer or None, got {s.max_len!r}")
    if not isinstance(s.ban_history, bool):
        raise DataPrepError(f"setting ban_history must be a bool, got {s.ban_history!r}")
    if s.k_core < 1:
        raise DataPrepError(f"k_core must be >= 1, got {s.k_core}")
    if s.min_len < 3:
        # n >= 3 guarantees at least one training item: n - 2 * min(ceil(n / 5), cap) >= 1.
        raise DataPrepError(f"min_len must be >= 3 (every user needs a train, a validation and a "
                            f"test item), got {s.min_len}")
    if s.max_len is not None and s.max_len < s.min_len:
        raise DataPrepError(f"max_len ({s.max_len}) must be >= min_len ({s.min_len})")
    for name in ("cap", "k", "target_len", "history_len"):
        if getattr(s, name) < 1:
            raise DataPrepError(f"{name} must be >= 1, got {getattr(s, name)}")
    if s.num_candidates < s.target_len:
        raise DataPrepError(f"num_candidates ({s.num_candidates}) must be >= target_len "
                            f"({s.target_len}) so that every target is a candidate")
    if s.seed < 0:
        raise DataPrepError(f"seed must be >= 0, got {s.seed}")
    if s.protocol == "loo" and s.cap != 1:
        raise DataPrepError(f"protocol 'loo' holds out exactly one item (cap 1); got cap {s.cap}")


def candidates_for_negatives(protocol: str, num_negatives: Optional[int],
                             num_candidates: Optional[int] = None, *,
                             names: tuple = ("num_negatives", "num_candidates",
                                             "protocol ")) -> Optional[int]:
    """``num_candidates`` implied by ``num_negatives`` (N sampled negatives per user under
    ``loo``: the target + N, so N + 1), checked against an explicit ``num_candidates``.

    Returns ``num_candidates`` unchanged when ``num_negatives`` is None. ``names`` words the
    messages (the CLI passes its flag names).
    """
    if num_negatives is None:
        return num_candidates
    neg, cand, proto = names
    if not _is_int(num_negatives):
        raise DataPrepError(f"{neg} must be an integer, got {num_negatives!r}")
    if protocol != "loo":
        raise DataPrepError(
            f"{neg} only applies to {proto}loo (one target + N negatives per user); "
            f"{proto}{protocol} has several targets per user: give {cand} instead")
    if num_negatives < 1:
        raise DataPrepError(f"{neg} must be >= 1, got {num_negatives}")
    if num_candidates is not None and num_candidates != num_negatives + 1:
        raise DataPrepError(
            f"{cand} {num_candidates} and {neg} {num_negatives} disagree: under {proto}loo "
            f"the candidates are the target + the negatives ({num_negatives + 1}); "
            f"give one of them")
    return num_negatives + 1


def settings_for(profile: str = "default", protocol: str = "paper", *,
                 num_negatives: Optional[int] = None, **overrides) -> Settings:
    """The profile's settings, the protocol's changes on top, then ``overrides`` (None = keep).

    ``max_len`` is special: pass ``max_len=None`` through ``overrides`` only via the string
    ``"none"`` (None means "keep the profile's value" like every other override).
    ``num_negatives`` (``loo`` only): sampled negatives per user, sets ``num_candidates`` to
    ``num_negatives + 1`` (an explicit ``num_candidates`` must agree).
    """
    if profile not in PROFILES:
        raise DataPrepError(f"unknown profile {profile!r} (choose from {', '.join(PROFILES)})")
    if protocol not in PROTOCOLS:
        raise DataPrepError(f"unknown protocol {protocol!r} (choose from {', '.join(PROTOCOLS)})")
    if num_negatives is not None:
        overrides["num_candidates"] = candidates_for_negatives(
            protocol, num_negatives, overrides.get("num_candidates"))
    values = dict(_PROFILE_VALUES[profile], **_COMMON)
    if protocol == "loo":
        values.update(_LOO)
    for name, v in overrides.items():
        if name in ("profile", "protocol") or name not in SETTING_FIELDS:
            raise DataPrepError(f"unknown setting {name!r}")
        if v is None:
            continue
        if name == "max_len" and isinstance(v, str) and v.lower() in ("none", "inf", ""):
            v = None
        values[name] = v
    return Settings(profile=profile, protocol=protocol, **values)
