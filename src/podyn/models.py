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


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    return prepare_tokenizer(AutoTokenizer.from_pretrained(str(path)))


def _torch_dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}[name]


def load_policy(path: str | Path, model_cfg: ModelConfig) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(
        str(path), dtype=_torch_dtype(model_cfg.dtype), attn_implementation=model_cfg.attn_implementation
    )


def load_scalar_model(path: str | Path, model_cfg: ModelConfig) -> torch.nn.Module:
    """A causal LM body with a scalar head (reward or value model)."""
    model = AutoModelForSequenceClassification.from_pretrained(
        str(path),
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


def token_logps(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """log pi(input_ids[:, t] | input_ids[:, :t]) for t >= 1, shape (B, T-1)."""
    resources.add_tokens(attention_mask.sum())
    logits = model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask)
    ).logits[:, :-1]
    logits = _at_least_float32(logits)
    return torch.gather(F.log_softmax(logits, dim=-1), 2, input_ids[:, 1:, None]).squeeze(2)


def sequence_logps(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """logp(y|x): the sum of response-token log-probs (prompt and padding masked), shape (B,).

    ``response_mask`` is aligned with ``input_ids``; position 0 can never be a response token."""
    return (token_logps(model, input_ids, attention_mask) * response_mask[:, 1:]).sum(-1)


def scalar_head_outputs(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The scalar head applied at every position, shape (B, T)."""
    resources.add_tokens(attention_mask.sum())
    hidden = model.base_model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask)
    ).last_hidden_state
    return _at_least_float32(model.score(hidden).squeeze(-1))


def score_at(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The scalar head's output at ``index`` (one position per row), shape (B,)."""
    values = scalar_head_outputs(model, input_ids, attention_mask)
    return values.gather(1, index[:, None]).squeeze(1)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last non-padding token (right or left padding)."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return (positions * attention_mask.long()).argmax(-1)
