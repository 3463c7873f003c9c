"""The chunked, response-only and packed (padding-free) log-prob paths equal the plain padded
computation: values and every parameter's gradient (float64, so only reassociation separates
them)."""

import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from podyn.batching import prompt_response_batch
from podyn.models import sequence_logps


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = GPTNeoXConfig(
        vocab_size=97,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        rotary_pct=1.0,
        hidden_dropout=0.0,
        attention_dropout=0.0,
    )
    return GPTNeoXForCausalLM(cfg).double().train()


def _batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(2, 97, (n,), generator=g).tolist() for n in (3, 7, 1, 5)]
    responses = [torch.randint(2, 97, (n,), generator=g).tolist() for n in (4, 1, 9, 6)]
    return prompt_response_batch(prompts, responses, pad_id=0)


@pytest.mark.parametrize("chunk,packed", [(1, False), (5, False), (1000, False), (0, True), (5, True)])
def test_chunked_and_packed_logps_equal_plain_values_and_gradients(chunk, packed):
    model, batch = _model(), _batch()
    args = (batch["input_ids"], batch["attention_mask"], batch["response_mask"])
    plain = sequence_logps(model, *args)
    weights = torch.tensor([0.3, -1.0, 2.0, 0.7], dtype=torch.float64)
    grads_plain = torch.autograd.grad((plain * weights).sum(), list(model.parameters()), allow_unused=True)
    chunked = sequence_logps(model, *args, chunk_tokens=chunk, packed=packed)
    grads_chunked = torch.autograd.grad((chunked * weights).sum(), list(model.parameters()), allow_unused=True)
    torch.testing.assert_close(chunked, plain, rtol=1e-12, atol=1e-12)
    for a, b in zip(grads_plain, grads_chunked):
        if a is None:
            assert b is None or not b.abs().any()
        else:
            torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


def test_adamw_is_fused_only_on_cuda_parameters():
    from podyn.training.common import adamw

    cpu = torch.nn.Linear(3, 2)
    opt = adamw(cpu.parameters(), lr=1e-3)
    assert not opt.defaults["fused"]
    groups = adamw([{"params": cpu.parameters(), "lr": 1e-3}], lr=1e-3)
    assert len(groups.param_groups[0]["params"]) == 2  # a generator inside a group is not consumed twice


def test_dpo_max_grad_norm_reaches_the_trainer(tmp_path):
    from podyn.config import TrainerConfig
    from podyn.training.common import make_trainer

    trainer = make_trainer(tmp_path, TrainerConfig(), max_steps=1, max_grad_norm=0.5)
    assert trainer.gradient_clip_val == 0.5 and trainer.gradient_clip_algorithm == "norm"
    assert make_trainer(tmp_path, TrainerConfig(), max_steps=1).gradient_clip_val is None


def test_packed_rows_restart_positions_and_keep_rows_apart():
    from podyn.models import _packed_rows

    batch = _batch()
    ids, positions, responses, rows = _packed_rows(batch["input_ids"], batch["attention_mask"], batch["response_mask"])
    lengths = batch["attention_mask"].sum(1).tolist()  # [7, 8, 10, 11]
    assert ids.shape == (1, sum(lengths))
    assert positions[0].tolist() == [i for n in lengths for i in range(n)]
    assert rows[0].tolist() == [r for r, n in enumerate(lengths) for _ in range(n)]
    assert responses.sum() == batch["response_mask"].sum()


def test_packed_attention_does_not_cross_rows():
    """Changing one row's tokens leaves every other row's log-prob unchanged, bit for bit."""
    model, batch = _model().eval(), _batch()
    args = (batch["input_ids"], batch["attention_mask"], batch["response_mask"])
    before = sequence_logps(model, *args, packed=True)
    changed = batch["input_ids"].clone()
    changed[0, :3] = (changed[0, :3] + 1) % 97
    after = sequence_logps(model, changed, *args[1:], packed=True)
    assert torch.equal(before[1:], after[1:]) and before[0] != after[0]
