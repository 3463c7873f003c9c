"""Models and tokenizers: built from scratch for the embedded default, loaded by name for
the paper setting, and always saved/loaded with ``save_pretrained`` / ``from_pretrained``."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from . import resources
from .config import ArchConfig, ModelConfig, TrainerConfig
from .io import DataError

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|padding|>"


def build_word_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    """A word-level tokenizer (``tokenizers`` WordLevel) whose pre-tokenizer keeps the
    HH-RLHF separators ("\\n\\n", ":") as tokens and drops other white space."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    specials = [EOS_TOKEN, PAD_TOKEN, "<|unk|>"]
    vocab = {tok: i for i, tok in enumerate(specials + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|unk|>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"\n\n|[^\s:]+|:"), behavior="removed", invert=True)
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN, unk_token="<|unk|>", bos_token=EOS_TOKEN
    )


def build_gpt_neox(
    vocab_size: int, tokenizer: PreTrainedTokenizerBase, arch: ArchConfig | dict, seed: int
) -> GPTNeoXForCausalLM:
    """A Pythia-architecture model with random weights; ``arch`` is the config's
    ``model.arch`` (typed, or its YAML form, which is validated)."""
    arch = ArchConfig.model_validate(arch)
    torch.manual_seed(seed)
    config = GPTNeoXConfig(
        vocab_size=vocab_size,
        hidden_size=arch.hidden_size,
        num_hidden_layers=arch.num_layers,
        num_attention_heads=arch.num_heads,
        intermediate_size=4 * arch.hidden_size if arch.intermediate_size is None else arch.intermediate_size,
        max_position_embeddings=arch.max_position_embeddings,
        rotary_pct=arch.rotary_pct,
        use_parallel_residual=True,
        tie_word_embeddings=False,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return GPTNeoXForCausalLM(config)


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Pythia's tokenizer has no pad token; use its ``<|padding|>`` token, never EOS, so that a
    response's closing EOS is never mistaken for padding."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = PAD_TOKEN if PAD_TOKEN in tokenizer.get_vocab() else tokenizer.eos_token
    tokenizer.padding_side = "right"
    return tokenizer


def _from_pretrained(load, path: str | Path, **kwargs):
    """``load(path, **kwargs)`` of a model directory an earlier stage saved: a missing directory
    (which transformers would take for a hub id) or a damaged one is a :class:`DataError`
    naming it."""
    if not Path(path).is_dir():
        raise DataError(f"{path}: model directory not found")
    from safetensors import SafetensorError

    try:
        return load(str(path), **kwargs)
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise DataError(f"{path}: cannot load ({type(err).__name__}: {first_line})") from None


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    return prepare_tokenizer(_from_pretrained(AutoTokenizer.from_pretrained, path))


def _torch_dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}[
        name
    ]


def load_policy(path: str | Path, model_cfg: ModelConfig) -> torch.nn.Module:
    return _from_pretrained(
        AutoModelForCausalLM.from_pretrained,
        path,
        dtype=_torch_dtype(model_cfg.dtype),
        attn_implementation=model_cfg.attn_implementation,
    )


def load_scalar_model(path: str | Path, model_cfg: ModelConfig) -> torch.nn.Module:
    """A causal LM body with a scalar head (reward or value model)."""
    model = _from_pretrained(
        AutoModelForSequenceClassification.from_pretrained,
        path,
        num_labels=1,
        dtype=_torch_dtype(model_cfg.dtype),
        attn_implementation=model_cfg.attn_implementation,
    )
    model.config.pad_token_id = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    return model


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """Half-precision outputs are promoted for the log-softmax; float64 stays float64."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def inference_device(trainer: TrainerConfig) -> torch.device:
    """Where evaluation-only stages run: the GPU when the trainer is set to use one and one is
    present, else the CPU."""
    accelerator = trainer.accelerator
    return torch.device("cuda" if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available() else "cpu")


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, so that a left-padded rollout and a right-padded
    training row give the same log-probs."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def token_logps(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """log pi_T(input_ids[:, t] | input_ids[:, :t]) for t >= 1, shape (B, T-1), where
    pi_T = softmax(logits / T): the distribution that ``generate`` samples from at temperature T
    (``transformers``' temperature warper divides the float32 logits by T the same way)."""
    resources.add_tokens(attention_mask.sum())
    # Every scoring forward pass (here, response_logps, scalar_head_outputs) says use_cache=False:
    # transformers otherwise takes the config's use_cache (true in GPT-NeoX's and most configs) and
    # builds a KV cache in each pass, copying every layer's keys and values into a cache that is
    # dropped after it; and with a cache it does not read restarting position ids as packed rows.
    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    ).logits[:, :-1]
    logits = _at_least_float32(logits)
    if temperature != 1.0:
        logits = logits / temperature
    return torch.gather(F.log_softmax(logits, dim=-1), 2, input_ids[:, 1:, None]).squeeze(2)


def disable_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """Set every dropout probability of ``model`` to 0, in place: ``nn.Dropout`` modules, float
    attributes named ``*dropout*`` that attention code passes to the functional dropout
    (GPT-NeoX's ``attention_dropout``), and the config's dropout fields (so that a saved
    checkpoint says what was trained). PPO needs this: its ratio and KL compare forward passes
    that must be deterministic."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        for name, value in list(vars(module).items()):
            if "dropout" in name and isinstance(value, (int, float)) and not isinstance(value, bool):
                setattr(module, name, 0.0)
    config = getattr(model, "config", None)
    if config is not None:
        for name, value in config.to_dict().items():
            if "dropout" in name and isinstance(value, (int, float)) and not isinstance(value, bool):
                setattr(config, name, 0.0)
    return model


def sequence_logps(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
    chunk_tokens: int = 0,
    packed: bool = False,
) -> torch.Tensor:
    """logp(y|x): the sum of response-token log-probs (prompt and padding masked), shape (B,).

    ``response_mask`` is aligned with ``input_ids``; position 0 can never be a response token.
    ``chunk_tokens > 0`` or ``packed`` take the memory-light path of :func:`response_logps`."""
    if chunk_tokens > 0 or packed:
        return response_logps(model, input_ids, attention_mask, response_mask, chunk_tokens, packed)
    return (token_logps(model, input_ids, attention_mask) * response_mask[:, 1:]).sum(-1)


def logps_options(trainer: TrainerConfig) -> dict[str, int | bool]:
    """The :func:`sequence_logps` options a trainer config selects for DPO and its reference pass."""
    return {"chunk_tokens": trainer.logps_chunk_tokens, "packed": trainer.pack_sequences}


def _target_logps(hidden: torch.Tensor, targets: torch.Tensor, head: torch.nn.Module) -> torch.Tensor:
    """log softmax(head(hidden))[targets] for N rows: (N, H), (N,) -> (N,), in at least float32."""
    logits = _at_least_float32(head(hidden))  # (N, V): one chunk's logits, never the batch's
    return logits.gather(1, targets[:, None]).squeeze(1) - torch.logsumexp(logits, dim=-1)


def _packed_rows(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor
) -> tuple[torch.Tensor, ...]:
    """The batch's real tokens as one row without padding: ids, positions restarting at 0 for
    every row (how the attention keeps rows apart), response mask and the source row of each
    token, each (1, N) with N = attention_mask.sum()."""
    keep = attention_mask.bool()
    lengths = keep.sum(1)
    starts = torch.cumsum(lengths, 0) - lengths
    rows = torch.repeat_interleave(torch.arange(len(lengths), device=input_ids.device), lengths)
    positions = torch.arange(int(lengths.sum()), device=input_ids.device) - starts[rows]
    return input_ids[keep][None], positions[None], response_mask[keep][None], rows[None]


def response_logps(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
    chunk_tokens: int = 0,
    packed: bool = False,
) -> torch.Tensor:
    """:func:`sequence_logps` without the ``(B, T, V)`` logits, and optionally without padding.

    * The output head is applied only at the positions that predict a response token, and with
      ``chunk_tokens > 0`` that many at a time, each chunk recomputed in the backward pass
      (activation checkpointing) instead of kept: the head's peak memory is ``chunk_tokens x V``
      floats instead of several ``B x T x V`` copies, and prompt positions cost no head at all.
    * ``packed``: the rows are concatenated into one sequence without padding, positions
      restarting per row; transformers reads the restarts as sequence boundaries and builds a
      block-diagonal causal mask (or the varlen kernel, with flash attention), so attention never
      crosses rows and no compute is spent on padding.

    Same values and gradients as the padded computation up to float reassociation (tested).
    Shapes: (B, T) -> (B,)."""
    from torch.utils.checkpoint import checkpoint

    resources.add_tokens(attention_mask.sum())
    if packed:
        ids, positions, responses, rows = _packed_rows(input_ids, attention_mask, response_mask)
        # no cache: transformers looks for packed rows in the position ids only without one
        out = model.base_model(input_ids=ids, position_ids=positions, attention_mask=None, use_cache=False)
    else:
        ids, responses = input_ids, response_mask
        rows = torch.arange(len(ids), device=ids.device)[:, None].expand_as(ids)
        out = model.base_model(
            input_ids=ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask),
            use_cache=False,  # see token_logps
        )
    hidden = out.last_hidden_state  # (R, L, H) after the final norm; R = 1 when packed
    predicts = responses[:, 1:].bool()  # (R, L-1): position t predicts token t+1 (never across rows:
    # a row's first token is a prompt token)
    states, targets, owner = hidden[:, :-1][predicts], ids[:, 1:][predicts], rows[:, 1:][predicts]  # (N, H), (N,)
    head = model.get_output_embeddings()
    step = chunk_tokens or max(len(targets), 1)
    parts = [
        checkpoint(_target_logps, states[i : i + step], targets[i : i + step], head, use_reentrant=False)
        if chunk_tokens
        else _target_logps(states[i : i + step], targets[i : i + step], head)
        for i in range(0, len(targets), step)
    ]
    token = torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)
    return torch.zeros(input_ids.shape[0], dtype=token.dtype, device=token.device).index_add(0, owner, token)


def scalar_head_outputs(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The scalar head applied at every position, shape (B, T)."""
    resources.add_tokens(attention_mask.sum())
    hidden = model.base_model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,  # see token_logps
    ).last_hidden_state
    return _at_least_float32(model.score(hidden).squeeze(-1))


def score_at(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, index: torch.Tensor
) -> torch.Tensor:
    """The scalar head's output at ``index`` (one position per row), shape (B,)."""
    values = scalar_head_outputs(model, input_ids, attention_mask)
    return values.gather(1, index[:, None]).squeeze(1)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last non-padding token (right or left padding)."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (positions * attention_mask.long()).argmax(-1)
