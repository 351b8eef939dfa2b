"""The session-vs-step benchmark's pure parts: its rows, and the Datums the session side trains on.

The benchmark itself needs the local cluster for minutes (`python -m bench session_vs_step`); what
is checked here is that both sides get the same work: the session's Datums are the step trainer's
own tokens, with the step's token-mean REINFORCE weights on exactly the completion targets.
"""

from __future__ import annotations

import json

import numpy as np
from rft.rows import iter_groups
from rft_devcluster.tiny import CHAT_TEMPLATE, build_tokenizer

from bench import __main__ as bench_main
from bench import session_vs_step


def test_rows_are_valid_groups_new_per_iteration_and_reproducible() -> None:
    first, again, second = (session_vs_step.iteration_rows(i) for i in (1, 1, 2))
    assert first == again
    assert first != second
    groups = list(iter_groups(json.dumps(r) for r in first))
    assert len(groups) == session_vs_step.GROUPS
    assert all(len(g.completions) == session_vs_step.COMPLETIONS for g in groups)


def test_datums_carry_the_trainers_tokens_and_token_mean_advantages() -> None:
    tokenizer = build_tokenizer()
    assert tokenizer.chat_template == CHAT_TEMPLATE
    rows = session_vs_step.iteration_rows(3)
    datums = session_vs_step.rows_to_datums(rows, tokenizer)
    assert len(datums) == session_vs_step.GROUPS * session_vs_step.COMPLETIONS
    weights = [d.loss_fn_inputs["weights"].to_numpy() for d in datums]
    trained = sum(int(np.count_nonzero(w)) for w in weights)
    for datum, w in zip(datums, weights, strict=True):
        targets = datum.loss_fn_inputs["target_tokens"].to_numpy()
        assert len(targets) == len(w) == datum.model_input.length
        nonzero = np.flatnonzero(w)
        if nonzero.size:  # a completion's tokens are contiguous and end the sequence
            assert nonzero[-1] == len(w) - 1
            assert np.all(np.diff(nonzero) == 1)
            # token-mean: each completion token's weight is its advantage over the batch's tokens
            assert np.allclose(w[nonzero], w[nonzero[0]])
    assert trained > 0
    # group advantages: weight x trained tokens is the completion's advantage; a group's sum to zero
    advantages = np.array([float(w[np.flatnonzero(w)[0]]) * trained if w.any() else 0.0 for w in weights])
    per_group = advantages.reshape(session_vs_step.GROUPS, session_vs_step.COMPLETIONS).sum(axis=1)
    assert np.allclose(per_group, 0.0, atol=1e-4)
    assert np.abs(advantages).max() > 0.1
    assert bench_main.resolve(bench_main.BENCHMARKS["session_vs_step"]) is session_vs_step.benchmark
