"""models.state_dicts: what does not fit between a weight file's state dict and a model's, for every loader."""

from __future__ import annotations

import torch

from models.state_dicts import StateMismatch, compare_state


def test_every_kind_of_mismatch_is_found_and_described() -> None:
    expected = {"a.weight": torch.zeros(2, 3), "a.bias": torch.zeros(2), "bn.num_batches_tracked": torch.zeros(())}
    state = {"a.weight": torch.zeros(3, 3), "b.weight": torch.zeros(1)}
    mismatch = compare_state(expected, state, optional={"bn.num_batches_tracked"})
    assert mismatch.missing == ("a.bias",) and mismatch.unexpected == ("b.weight",)
    assert mismatch.shapes == {"a.weight": ((3, 3), (2, 3))}
    assert mismatch.describe() == (
        "1 missing keys: a.bias; 1 unexpected keys: b.weight; "
        "1 keys of the wrong shape: a.weight [3, 3] in the file, [2, 3] expected"
    )
    assert (
        not compare_state(expected, {**expected}) and compare_state(expected, {}, optional=expected) == StateMismatch()
    )


def test_shapes_may_be_given_instead_of_tensors_and_long_lists_are_cut() -> None:
    expected = {f"k{i:02d}": (4,) for i in range(25)}
    mismatch = compare_state(expected, {})
    assert mismatch.describe(limit=3) == "25 missing keys: k00, k01, k02, ... and 22 more"
    assert not compare_state({"w": torch.Size([2])}, {"w": torch.ones(2)})
