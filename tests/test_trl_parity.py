"""Peer parity: our DPO loss value and gradients equal TRL ``DPOTrainer``'s sigmoid loss on
the tiny model, the same synthetic-task batch and float32 on the CPU (the parity half of
``bench/trl_dpo.py``; tolerances and their justification are there). Skipped without trl
(the optional ``bench`` extra)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("trl")

BENCH = Path(__file__).resolve().parents[1] / "bench" / "trl_dpo.py"


@pytest.fixture(scope="module")
def trl_dpo():
    """bench/trl_dpo.py as a module; torch's thread count restored afterwards (the test runs
    single-threaded: on a busy 2-core machine two threads wait on each other)."""
    threads = torch.get_num_threads()
    spec = importlib.util.spec_from_file_location("bench_trl_dpo", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the module's annotations through it
    spec.loader.exec_module(module)
    yield module
    torch.set_num_threads(threads)


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
@pytest.mark.parametrize("seq_len", [0, 96], ids=["task-lengths", "padded-96"])
def test_dpo_loss_and_gradients_equal_trl(trl_dpo, seq_len, tmp_path):
    args = trl_dpo.parse_args(
        [
            "--model-size",
            "tiny",
            "--device",
            "cpu",
            "--pairs",
            "6",
            "--seq-len",
            str(seq_len),
            "--skip-timing",
            "--threads",
            "1",
            "--out",
            str(tmp_path),
        ]
    )
    setup = trl_dpo.prepare(args)
    parity = trl_dpo.check_parity(setup.pristine, setup.rows, setup.tokenizer, args, setup.settings)
    report = trl_dpo.format_parity(parity)
    tol = parity.tolerances

    assert parity.batches_identical, report
    assert parity.margin_std > 0.3, f"margins too uniform to test the per-pair weights\n{report}"
    assert parity.ref_logps_max_abs_err <= tol["ref_logps_abs"], report
    assert parity.loss_abs_err <= tol["loss_abs"], report
    assert parity.grad_global_rel_err <= tol["grad_global_rel"], report
    assert parity.grad_worst_tensor_rel_err <= tol["grad_tensor_rel"], report
    assert parity.passed, report
