"""PPO against hand-built tensors: the rollout (log-probs at the sampling temperature, KL,
score index, missing-EOS penalty, padding, the reward vector token by token), the alignment
of response log-probs and values, left- vs right-padded log-probs, ``generate``'s masks, the
optimisation loop (epochs, minibatches, clipping, the clip fraction), dropout (and DPO's), the G
analysis's pi_old, and the optional k3 KL, reward normalisation and linear LR schedule.

The "table" models make every expected number computable by hand: the policy's logits at a
position depend only on that position's token (a bigram table), and the value / reward
head's output is a per-token table entry."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, GPTNeoXForSequenceClassification

from podyn.config import PPOConfig
from podyn.dynamics import PPOBatch
from podyn.generation import Rollout, generate
from podyn.models import token_logps
from podyn.objectives import ComponentWeights, tertile_groups
from podyn.schedules import Weights
from podyn.training import ppo as ppo_mod
from podyn.training.ppo import PPOModule, response_logps, response_values

EOS, PAD = 0, 1
VOCAB = 6
T = 0.7

# bigram logits of the policy and the reference, rows = current token
POLICY_TABLE = [[0.3 * ((3 * i + 5 * j) % 7) - 0.9 for j in range(VOCAB)] for i in range(VOCAB)]
REF_TABLE = [[0.25 * ((2 * i + 3 * j) % 5) - 0.5 for j in range(VOCAB)] for i in range(VOCAB)]
VALUE_TABLE = [0.1, 0.2, -0.3, 0.5, -0.7, 1.1]  # V at a position = f(token there)
REWARD_TABLE = [2.0, 9.0, 0.4, -1.5, 0.8, 3.0]  # the RM's score at a position = f(token there)


class TableLM(torch.nn.Module):
    """logits[b, t] = table[input_ids[b, t]]: a causal LM whose log-probs are hand-computable."""

    def __init__(self, table: list[list[float]]) -> None:
        super().__init__()
        self.table = torch.nn.Parameter(torch.tensor(table, dtype=torch.float64))

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=None):
        return SimpleNamespace(logits=self.table[input_ids])


class OneHotBody(torch.nn.Module):
    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=None):
        return SimpleNamespace(last_hidden_state=torch.nn.functional.one_hot(input_ids, VOCAB).double())


class TableScalar(torch.nn.Module):
    """A value / reward model whose output at a position is ``table[token there]``."""

    def __init__(self, table: list[float]) -> None:
        super().__init__()
        self.base_model = OneHotBody()
        self.score = torch.nn.Linear(VOCAB, 1, bias=False, dtype=torch.float64)
        with torch.no_grad():
            self.score.weight.copy_(torch.tensor([table], dtype=torch.float64))


def hand_logp(table: list[list[float]], prev: int, token: int, temperature: float = T) -> float:
    row = [x / temperature for x in table[prev]]
    return row[token] - math.log(sum(math.exp(x) for x in row))


MAX_NEW_TOKENS = 3
PPO_CFG = {
    "temperature": T,
    "missing_eos_penalty": 0.5,
    "kl_coef": 0.1,
    "kl_estimator": "k1",
    "gamma": 1.0,
    "lam": 0.95,
    "clip_eps": 0.2,
    "cliprange_value": 0.2,
    "vf_coef": 0.1,
    "ppo_epochs": 1,
    "mini_batch_size": 2,
    "max_grad_norm": None,
    "lr": 1e-2,
    "iterations": 4,
    "lr_schedule": "constant",
    "normalize_reward": False,
    "rollout_batch_size": 2,
    "reward_norm_mean": 0.0,
    "reward_norm_std": 1.0,
}

# Two left-padded prompts, width 2, and 3 response slots:
#   row 0: prompt [2, 3],      response [5, EOS, PAD]  -> 2 response tokens, ended
#   row 1: prompt [PAD, 4],    response [3, 4, 5]      -> 3 response tokens, no EOS (cut)
SEQUENCES = torch.tensor([[2, 3, 5, EOS, PAD], [PAD, 4, 3, 4, 5]])
RESPONSE_MASK = torch.tensor([[1, 1, 0], [1, 1, 1]])
HAND_ROLLOUT = Rollout(
    sequences=SEQUENCES,
    attention_mask=torch.tensor([[1, 1, 1, 1, 0], [0, 1, 1, 1, 1]]),
    response_mask=RESPONSE_MASK,
    ended=torch.tensor([True, False]),
    prompt_width=2,
)
# (previous token, response token) of every response slot that the mask keeps
PAIRS = [[(3, 5), (5, EOS)], [(4, 3), (3, 4), (4, 5)]]


def table_module(cfg: dict | None = None, reward_table=REWARD_TABLE) -> PPOModule:
    return PPOModule(
        policy=TableLM(POLICY_TABLE),
        value_model=TableScalar(VALUE_TABLE),
        reference=TableLM(REF_TABLE),
        reward_model=TableScalar(reward_table),
        tokenizer=SimpleNamespace(pad_token_id=PAD, eos_token_id=EOS),
        hyper=PPOConfig(**{**PPO_CFG, **(cfg or {})}),
        max_new_tokens=MAX_NEW_TOKENS,
        weights=Weights(),
        recorder=None,
    )


@pytest.fixture
def hand_rollout(monkeypatch):
    monkeypatch.setattr(ppo_mod, "generate", lambda *args, **kwargs: HAND_ROLLOUT)


# ----------------------------------------------------------------------------- the rollout


@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_rollout_reward_vector_token_by_token(hand_rollout, estimator):
    module = table_module({"kl_estimator": estimator})
    batch = module.rollout([[2, 3], [4]])
    kl_coef, penalty = PPO_CFG["kl_coef"], PPO_CFG["missing_eos_penalty"]
    # the RM scores the last response token: EOS in row 0, the cut token 5 in row 1 (minus the penalty)
    expected_scores = [REWARD_TABLE[EOS], REWARD_TABLE[5] - penalty]
    assert batch["scores"].tolist() == pytest.approx(expected_scores, abs=1e-12)
    for row, pairs in enumerate(PAIRS):
        expected_rewards = [0.0] * 3
        for j, (prev, tok) in enumerate(pairs):
            old, ref = hand_logp(POLICY_TABLE, prev, tok), hand_logp(REF_TABLE, prev, tok)
            kl = old - ref if estimator == "k1" else math.expm1(ref - old) - (ref - old)
            assert float(batch["old_logps"][row, j]) == pytest.approx(old, abs=1e-12)
            assert float(batch["ref_logps"][row, j]) == pytest.approx(ref, abs=1e-12)
            assert float(batch["kl"][row, j]) == pytest.approx(kl, abs=1e-12)
            expected_rewards[j] = -kl_coef * kl
        expected_rewards[len(pairs) - 1] += expected_scores[row]
        assert batch["rewards"][row].tolist() == pytest.approx(expected_rewards, abs=1e-12)
    # padding: nothing at the masked slot of row 0
    assert float(batch["old_logps"][0, 2]) == 0.0 and float(batch["values"][0, 2]) == 0.0
    assert float(batch["kl"][0, 2]) == 0.0 and float(batch["rewards"][0, 2]) == 0.0
    if estimator == "k3":
        assert (batch["kl"] >= 0).all()


def test_rollout_values_returns_and_advantages_by_hand(hand_rollout):
    batch = table_module().rollout([[2, 3], [4]])
    gamma, lam = PPO_CFG["gamma"], PPO_CFG["lam"]
    for row, pairs in enumerate(PAIRS):
        values = [VALUE_TABLE[prev] for prev, _ in pairs]  # V(x, y_<t) is the head at the previous token
        assert batch["values"][row, : len(pairs)].tolist() == pytest.approx(values, abs=1e-12)
        rewards = batch["rewards"][row].tolist()
        adv, expected = 0.0, [0.0] * 3
        for t in reversed(range(len(pairs))):
            next_value = values[t + 1] if t + 1 < len(pairs) else 0.0
            adv = rewards[t] + gamma * next_value - values[t] + gamma * lam * adv
            expected[t] = adv
        assert batch["raw_advantages"][row].tolist() == pytest.approx(expected, abs=1e-12)
        assert batch["returns"][row, : len(pairs)].tolist() == pytest.approx(
            [a + v for a, v in zip(expected, values)], abs=1e-12
        )
    adv = batch["raw_advantages"][RESPONSE_MASK.bool()]
    whitened = (adv - adv.mean()) / torch.sqrt(adv.var() + 1e-8)  # unbiased variance, over the 5 response tokens
    assert batch["advantages"][RESPONSE_MASK.bool()].tolist() == pytest.approx(whitened.tolist(), abs=1e-12)


def test_response_logps_and_values_alignment():
    rollout = {"sequences": SEQUENCES, "attention_mask": HAND_ROLLOUT.attention_mask, "prompt_width": 2}
    logps = response_logps(TableLM(POLICY_TABLE), rollout, T)
    values = response_values(TableScalar(VALUE_TABLE), rollout)
    assert logps.shape == values.shape == (2, 3)
    for row in range(2):
        for j in range(3):
            prev, tok = int(SEQUENCES[row, 1 + j]), int(SEQUENCES[row, 2 + j])
            assert float(logps[row, j].detach()) == pytest.approx(hand_logp(POLICY_TABLE, prev, tok), abs=1e-12)
            assert float(values[row, j].detach()) == pytest.approx(VALUE_TABLE[prev], abs=1e-12)


# ----------------------------------------------------------------------------- generate's masks


class FixedGenerator(torch.nn.Module):
    """Stands in for a causal LM whose ``generate`` returns fixed sequences."""

    def __init__(self, sequences: torch.Tensor) -> None:
        super().__init__()
        self.sequences = sequences
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    @property
    def device(self) -> torch.device:
        return self.anchor.device

    def generate(self, input_ids, attention_mask, **kwargs):
        assert input_ids.shape[1] == 2 and kwargs["max_new_tokens"] == 4 and kwargs["return_dict_in_generate"]
        return SimpleNamespace(sequences=torch.cat([input_ids, self.sequences], 1), scores=None)


def test_generate_response_mask_and_ended():
    responses = torch.tensor(
        [
            [5, EOS, PAD, PAD],  # EOS mid-way: the EOS is kept, the padding after it is not
            [5, 5, 5, 5],  # cut at max_new_tokens
            [EOS, PAD, PAD, PAD],  # EOS first
            [5, 5, 5, EOS],  # EOS in the last slot
            [5, EOS, 5, EOS],  # only the first EOS counts
        ]
    )
    tokenizer = SimpleNamespace(pad_token_id=PAD, eos_token_id=EOS)
    roll = generate(FixedGenerator(responses), tokenizer, [[2, 3], [4], [2, 2], [3], [4, 4]], 4, do_sample=False)
    assert roll.prompt_width == 2
    assert roll.response_mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0]]
    assert roll.ended.tolist() == [True, False, True, True, True]
    prompt_mask = [[1, 1], [0, 1], [1, 1], [0, 1], [1, 1]]
    assert roll.attention_mask.tolist() == [p + r for p, r in zip(prompt_mask, roll.response_mask.tolist())]
    assert roll.sequences[:, 2:].tolist() == responses.tolist()


# ----------------------------------------------------------------------------- real model: padding, temperature


def tiny_neox(**dropout) -> GPTNeoXConfig:
    return GPTNeoXConfig(
        vocab_size=VOCAB + 10,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=32,
        rotary_pct=1.0,
        eos_token_id=EOS,
        pad_token_id=PAD,
        bos_token_id=EOS,
        attn_implementation="eager",
        tie_word_embeddings=False,
        **dropout,
    )


@pytest.mark.parametrize("temperature", [1.0, T])
def test_left_and_right_padded_logps_are_equal(temperature):
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(tiny_neox()).eval()
    short, long = [2, 7, 3, 9, 4], [5, 6, 7, 8, 9, 10, 11, 12]
    pad = len(long) - len(short)
    right = torch.tensor([short + [PAD] * pad, long])
    left = torch.tensor([[PAD] * pad + short, long])
    right_mask = torch.tensor([[1] * len(short) + [0] * pad, [1] * len(long)])
    left_mask = torch.tensor([[0] * pad + [1] * len(short), [1] * len(long)])
    with torch.no_grad():
        from_right = token_logps(model, right, right_mask, temperature)
        from_left = token_logps(model, left, left_mask, temperature)
    torch.testing.assert_close(from_left[0, pad:], from_right[0, : len(short) - 1], rtol=0, atol=1e-5)
    torch.testing.assert_close(from_left[1], from_right[1], rtol=0, atol=0)


def tiny_config_rollout(tiny_cfg, assets, old_logps: str) -> tuple[PPOModule, list[list[int]]]:
    """A PPO module on the test assets at the tiny config's settings (T = 0.7), and 6 training prompts."""
    from podyn import data as data_mod
    from podyn.batching import encode_prompt
    from podyn.models import load_policy, load_scalar_model, load_tokenizer

    tokenizer = load_tokenizer(assets["base"])
    module = PPOModule(
        load_policy(assets["base"], tiny_cfg.model),
        load_scalar_model(assets["reward"], tiny_cfg.model),
        load_policy(assets["base"], tiny_cfg.model),
        load_scalar_model(assets["reward"], tiny_cfg.model),
        tokenizer,
        tiny_cfg.ppo.model_copy(update={"old_logps": old_logps}),
        tiny_cfg.generation.max_new_tokens,
        Weights(),
        None,
    )
    prompts = data_mod.load_split(assets["data"], "prefs_train")["prompt"][:6]
    return module, [encode_prompt(tokenizer, p, tiny_cfg.generation.max_prompt_tokens) for p in prompts]


@pytest.mark.parametrize("old_logps", ["recompute", "generation"])
def test_stored_old_logps_equal_the_samplers_at_the_tiny_config_temperature(old_logps, tiny_cfg, assets):
    """Acceptance (issue 13): at ``ppo.temperature`` of the tiny config (0.7), the rollout's stored
    log-probs are the sampler's log-probs of the tokens it chose (``generate``'s processed scores):
    recomputed by a forward pass to float round-off, or (``ppo.old_logps: generation``) those very
    scores."""
    from podyn.batching import left_padded_prompts

    temperature = tiny_cfg.ppo.temperature
    assert temperature == 0.7
    module, prompt_ids = tiny_config_rollout(tiny_cfg, assets, old_logps)
    policy, tokenizer = module.policy, module.tokenizer
    torch.manual_seed(11)
    batch = module.rollout(prompt_ids)
    # replay the sampler with the same seed, keeping its processed (temperature-scaled) scores
    torch.manual_seed(11)
    inputs = left_padded_prompts(prompt_ids, tokenizer.pad_token_id)
    policy.eval()
    out = policy.generate(
        **inputs,
        max_new_tokens=tiny_cfg.generation.max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        do_sample=True,
        temperature=temperature,
        top_k=0,
        top_p=1.0,
        output_scores=True,
        return_dict_in_generate=True,
    )
    assert torch.equal(out.sequences, batch["sequences"])
    chosen = out.sequences[:, batch["prompt_width"] :]
    sampler = torch.stack(
        [torch.log_softmax(s.float(), -1).gather(1, chosen[:, j, None]).squeeze(1) for j, s in enumerate(out.scores)],
        1,
    )
    mask = batch["response_mask"].bool()
    assert mask.sum() > 20
    if old_logps == "generation":
        assert torch.equal(batch["old_logps"][mask], sampler[mask])
    else:
        torch.testing.assert_close(batch["old_logps"][mask], sampler[mask], rtol=0, atol=2e-5)
    # and the test can tell: the log-probs at T = 1 are far from the sampler's
    untempered = response_logps(module.policy, batch, 1.0)
    assert (untempered[mask] - sampler[mask]).abs().max() > 0.05


def count_forward_passes(model: torch.nn.Module) -> tuple[Callable[[], int], torch.utils.hooks.RemovableHandle]:
    """A counter of ``model``'s forward calls from now on, and the hook's handle."""
    calls = []
    handle = model.register_forward_pre_hook(lambda module, args: calls.append(1))
    return (lambda: len(calls)), handle


@pytest.mark.parametrize("old_logps", ["recompute", "generation"])
def test_old_logps_from_generation_save_the_policys_forward_pass(old_logps, tiny_cfg, assets):
    """generate makes one policy forward pass per generated token (the first over the prompts, then
    one token at a time with the key-value cache); ``recompute`` adds one over the whole sequences."""
    module, prompt_ids = tiny_config_rollout(tiny_cfg, assets, old_logps)
    forward_passes, handle = count_forward_passes(module.policy)
    torch.manual_seed(11)
    batch = module.rollout(prompt_ids)
    handle.remove()
    generated = batch["sequences"].shape[1] - batch["prompt_width"]
    assert generated > 1
    assert forward_passes() == generated + (old_logps == "recompute")


@pytest.mark.parametrize("return_logps", [False, True])
def test_sampling_refused_where_it_would_not_draw_from_the_tempered_softmax(return_logps):
    """A checkpoint's generation_config.json may add logits processors: PPO's rollouts would then
    not come from the policy whose log-probs PPO computes (and generate's scores would not be them)."""
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(tiny_neox()).eval()
    tokenizer = SimpleNamespace(pad_token_id=PAD, eos_token_id=EOS)
    with pytest.raises(ValueError, match="do_sample"):
        generate(model, tokenizer, [[2, 3]], 3, do_sample=False, return_logps=True)
    model.generation_config.repetition_penalty = 1.2
    with pytest.raises(ValueError, match="repetition_penalty"):
        generate(model, tokenizer, [[2, 3]], 3, do_sample=True, temperature=T, return_logps=return_logps)
    generate(model, tokenizer, [[2, 3]], 3, do_sample=False)  # greedy evaluation keeps the checkpoint's settings
    model.generation_config.repetition_penalty = 1.0  # neutral: accepted
    roll = generate(model, tokenizer, [[2, 3]], 3, do_sample=True, temperature=T, return_logps=True)
    assert roll.sampler_logps.shape == (1, 3)


# ----------------------------------------------------------------------------- dropout


def test_dropout_is_disabled_in_policy_reference_and_value_models():
    dropout = {"hidden_dropout": 0.5, "attention_dropout": 0.5, "classifier_dropout": 0.5}
    torch.manual_seed(0)
    models = {
        "policy": GPTNeoXForCausalLM(tiny_neox(**dropout)),
        "reference": GPTNeoXForCausalLM(tiny_neox(**dropout)),
        "value": GPTNeoXForSequenceClassification(tiny_neox(**dropout)),
        "reward": GPTNeoXForSequenceClassification(tiny_neox(**dropout)),
    }
    ids = torch.tensor([[2, 7, 3, 9, 4, 5]])

    def twice(model) -> tuple[torch.Tensor, torch.Tensor]:
        return model(input_ids=ids).logits, model(input_ids=ids).logits

    for model in models.values():  # the config's dropout is live in train mode
        a, b = twice(model.train())
        assert not torch.equal(a, b)
    module = PPOModule(
        models["policy"],
        models["value"],
        models["reference"],
        models["reward"],
        SimpleNamespace(pad_token_id=PAD, eos_token_id=EOS),
        PPOConfig(**PPO_CFG),
        MAX_NEW_TOKENS,
        Weights(),
        None,
    )
    assert module.policy.training and module.value_model.training
    for name, model in models.items():
        a, b = twice(model.train())
        assert torch.equal(a, b), name
        assert torch.equal(a, model.eval()(input_ids=ids).logits), name
        assert model.config.hidden_dropout == model.config.attention_dropout == 0.0


@pytest.mark.parametrize("disable", [True, False])
def test_dpo_policy_has_no_dropout_unless_the_config_keeps_it(disable):
    from podyn.config import DPOConfig
    from podyn.training.dpo import DPOModule

    torch.manual_seed(0)
    policy = GPTNeoXForCausalLM(tiny_neox(hidden_dropout=0.5, attention_dropout=0.5))
    module = DPOModule(policy, DPOConfig(disable_dropout=disable), Weights(), None)
    ids = torch.tensor([[2, 7, 3, 9, 4, 5]])
    a, b = (module.policy(input_ids=ids).logits for _ in range(2))
    assert module.policy.training
    assert torch.equal(a, b) == disable
    assert (module.policy.config.hidden_dropout == 0.0) == disable


# ----------------------------------------------------------------------------- the optimisation loop


def crafted_batch(module: PPOModule, ratios: list[list[float]], advantages: list[list[float]]) -> dict:
    """HAND_ROLLOUT's rows with old log-probs set so that pi_theta / pi_old = ``ratios``."""
    rollout = {"sequences": SEQUENCES, "attention_mask": HAND_ROLLOUT.attention_mask, "prompt_width": 2}
    mask = RESPONSE_MASK.double()
    with torch.no_grad():
        logps = response_logps(module.policy, rollout, T)
        values = response_values(module.value_model, rollout) * mask
    adv = torch.tensor(advantages, dtype=torch.float64)
    return {
        **rollout,
        "response_mask": mask,
        "old_logps": (logps - torch.tensor(ratios, dtype=torch.float64).log()) * mask,
        "advantages": adv * mask,
        "values": values,
        "returns": values + 0.3,
        "groups": tertile_groups(adv.abs(), mask),
    }


def drive(module: PPOModule) -> dict:
    """Stand-ins for what Lightning provides, recording the optimizer steps and clip calls."""
    opt = module.configure_optimizers()["optimizer"]
    calls = {"steps": 0, "clip": []}
    step = opt.step

    def counted_step(*args, **kwargs):
        calls["steps"] += 1
        return step(*args, **kwargs)

    opt.step = counted_step
    module.optimizers = lambda: opt
    module.manual_backward = lambda loss: loss.backward()
    module.clip_gradients = lambda o, gradient_clip_val, gradient_clip_algorithm: calls["clip"].append(
        gradient_clip_val
    )
    return calls


def test_clip_fraction_on_a_crafted_minibatch():
    module = table_module({"ppo_epochs": 1, "mini_batch_size": 2})
    drive(module)
    # clipping binds where rho > 1.2 with A > 0 or rho < 0.8 with A < 0: slots (0,0) and (0,1) of the
    # 5 response tokens; (1,0) and (1,2) are outside the clip range on the side that does not bind;
    # slot (0,2) is padding
    ratios = [[1.5, 0.7, 3.0], [0.7, 1.1, 1.3]]
    advantages = [[1.0, -1.0, 1.0], [1.0, 1.0, -1.0]]
    stats = module._optimise(crafted_batch(module, ratios, advantages), ComponentWeights(), 0)
    assert stats["clipfrac"] == pytest.approx(2 / 5, abs=1e-12)
    assert stats["ratio"] == pytest.approx((1.5 + 0.7 + 0.7 + 1.1 + 1.3) / 5, abs=1e-12)


def test_clipped_tokens_get_no_policy_gradient():
    module = table_module({"ppo_epochs": 1, "mini_batch_size": 2, "vf_coef": 0.0})
    grads = {}
    drive(module)
    module.optimizers().step = lambda: grads.setdefault("table", module.policy.table.grad.clone())
    # row 1's 3 tokens are clipped and binding; row 0's two are not: only the bigram rows of
    # row 0's tokens (previous tokens 3 and 5) get a gradient; 4 is row 1's only previous token
    batch = crafted_batch(module, [[1.0, 1.1, 1.0], [1.5, 0.5, 1.5]], [[1.0, -1.0, 0.0], [1.0, -1.0, 1.0]])
    module._optimise(batch, ComponentWeights(), 0)
    assert grads["table"][3].abs().sum() > 0 and grads["table"][5].abs().sum() > 0
    assert torch.equal(grads["table"][4], torch.zeros(VOCAB, dtype=torch.float64))


def test_epochs_and_minibatches_cover_every_row_once_per_epoch(monkeypatch):
    module = table_module({"ppo_epochs": 3, "mini_batch_size": 2, "max_grad_norm": 0.5})
    calls = drive(module)
    seen: list[list[int]] = []
    select = ppo_mod.select_rows
    monkeypatch.setattr(
        ppo_mod, "select_rows", lambda batch, rows: (seen.append(rows.tolist()), select(batch, rows))[1]
    )
    two = crafted_batch(module, [[1.0] * 3] * 2, [[1.0, -1.0, 0.5], [0.5, -0.5, 1.0]])
    batch = {
        k: (torch.cat([v, v, v[:1]]) if torch.is_tensor(v) and v.dim() > 0 else v) for k, v in two.items()
    }  # 5 rows
    module._optimise(batch, ComponentWeights(), 0)
    assert calls["steps"] == 3 * 3 and calls["clip"] == [0.5] * 9
    assert [len(rows) for rows in seen] == [2, 2, 1] * 3
    for epoch in range(3):
        assert sorted(sum(seen[3 * epoch : 3 * epoch + 3], [])) == [0, 1, 2, 3, 4]


# ----------------------------------------------------------------------------- options


def test_linear_lr_schedule_decays_once_per_iteration():
    module = table_module({"lr_schedule": "linear", "iterations": 4, "value_lr": 1e-3})
    sched = module.configure_optimizers()["lr_scheduler"]
    seen = []
    for _ in range(5):
        seen.append([g["lr"] for g in sched.optimizer.param_groups])
        sched.optimizer.step()
        sched.step()
    assert [lr for lr, _ in seen] == pytest.approx([1e-2, 7.5e-3, 5e-3, 2.5e-3, 2.5e-3])
    assert [v for _, v in seen] == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4, 2.5e-4])
    constant = table_module().configure_optimizers()["lr_scheduler"]
    constant.optimizer.step()
    constant.step()
    assert constant.optimizer.param_groups[0]["lr"] == 1e-2


def test_reward_normalisation_gain_and_bias(monkeypatch):
    monkeypatch.setattr(ppo_mod, "generate", lambda *args, **kwargs: HAND_ROLLOUT)
    module = table_module({"normalize_reward": True, "reward_norm_mean": 0.5, "reward_norm_std": 2.0})
    gain, bias = module.fit_reward_normalization([[2, 3], [4], [2, 3], [4]])  # two rollouts of HAND_ROLLOUT
    raw = torch.tensor([REWARD_TABLE[EOS], REWARD_TABLE[5]] * 2, dtype=torch.float64)
    assert gain == pytest.approx(2.0 / float(raw.std()), rel=1e-12)
    normalised = gain * raw + bias
    assert float(normalised.mean()) == pytest.approx(0.5, abs=1e-12) and float(normalised.std()) == pytest.approx(
        2.0, rel=1e-12
    )
    scores = module.rollout([[2, 3], [4]])["scores"]
    assert scores.tolist() == pytest.approx(
        [gain * REWARD_TABLE[EOS] + bias, gain * REWARD_TABLE[5] + bias - 0.5], abs=1e-12
    )


# ----------------------------------------------------------------------------- the G analysis's pi_old


def test_bf16_old_logps_recomputed_at_the_checkpoint_give_ratio_one():
    """The rollout's pi_old under bf16 autocast is off by round-off; recomputed by the analysis
    model (float32) at the checkpoint's weights, rho = 1 exactly and nothing is clipped."""
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(tiny_neox()).eval()
    generator = torch.Generator().manual_seed(1)
    sequences = torch.randint(2, VOCAB + 10, (8, 12), generator=generator)
    attention = torch.ones_like(sequences)
    batch = {"sequences": sequences, "attention_mask": attention, "prompt_width": 4}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        bf16_old = response_logps(model, batch, T)
    with torch.no_grad():
        fp32 = response_logps(model, batch, T)
    log_ratio = fp32 - bf16_old
    assert log_ratio.abs().max() > 1e-3  # bf16 round-off in the recorded pi_old
    # a clip range inside that round-off, and advantages whose sign makes the clip bind
    clip_eps = float(torch.expm1(log_ratio.abs().max())) / 2
    mask = torch.ones_like(bf16_old)
    advantages = torch.sign(log_ratio) * torch.rand(bf16_old.shape, generator=generator)
    recorded = PPOBatch(
        sequences, attention, 4, mask, bf16_old, advantages, tertile_groups(advantages.abs(), mask), clip_eps, T
    )
    with torch.no_grad():
        logps = recorded.logps(model)
    assert recorded.clip_fraction(logps) > 0
    with torch.no_grad():
        own = replace(recorded, old_logps=logps)  # pi_old recomputed by the forward pass above
        logps = own.logps(model)
    assert torch.equal(logps, own.old_logps) and own.clip_fraction(logps) == 0.0
    current, zeros = recorded.at_current_weights(torch.float32)  # what the analysis takes: no pass
    assert current.clip_fraction(zeros) == 0.0
