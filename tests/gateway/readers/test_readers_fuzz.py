"""The readers' mutation fuzz, a bounded run in ``make test`` (``make fuzz`` runs thousands).

Every attribute of each DICOM seed deleted in turn and every hostile value tried, then random
truncations and bit flips, with a fixed seed so that a failure reproduces: each case must read
or give a documented 4xx (see :mod:`tests.gateway.readers.fuzzing`).
"""

from __future__ import annotations

import pytest

from tests.gateway.readers.fuzzing import fuzz

CASES = 1500
"""Covers every structured mutation of every seed plus random ones, in about 20 s here."""


@pytest.mark.filterwarnings("ignore")
def test_mutated_files_never_give_a_500_or_hang() -> None:
    outcomes, failures = fuzz(CASES, seed=20261201, report=lambda line: None)
    assert sum(outcomes.values()) == CASES
    assert not failures, "\n".join(f"{c.seed.name}: {c.mutation}: {o}" for c, o in failures[:20])
    assert outcomes["ok"] > 0 and any(key.startswith("422") for key in outcomes)
