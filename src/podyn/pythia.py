"""Pythia-architecture checkpoints without the hub: a randomly initialised GPT-NeoX with a
Pythia size's real hyper-parameters and a byte-level BPE tokenizer trained locally with
``tokenizers``, saved as an HF model directory that ``model.init: pretrained`` loads like a
hub checkpoint (``podyn build-checkpoint``; the ``local_checkpoint`` rule)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from .io import DataError, read_jsonl
from .models import EOS_TOKEN, PAD_TOKEN

# EleutherAI/pythia-<size> config.json values (Biderman et al. 2023, table 1). Shared by all:
# GeLU, parallel attention + MLP residual, untied embeddings, rotary on 25% of each head,
# rotary base 10000, layer-norm eps 1e-5, 2048 positions, init std 0.02.
PYTHIA_SIZES: dict[str, dict[str, int]] = {
    "14m": {"hidden_size": 128, "num_hidden_layers": 6, "num_attention_heads": 4, "vocab_size": 50304},
    "31m": {"hidden_size": 256, "num_hidden_layers": 6, "num_attention_heads": 8, "vocab_size": 50304},
    "70m": {"hidden_size": 512, "num_hidden_layers": 6, "num_attention_heads": 8, "vocab_size": 50304},
    "160m": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "vocab_size": 50304},
    "410m": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "vocab_size": 50304},
    "1b": {"hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 8, "vocab_size": 50304},
    "1.4b": {"hidden_size": 2048, "num_hidden_layers": 24, "num_attention_heads": 16, "vocab_size": 50304},
    "2.8b": {"hidden_size": 2560, "num_hidden_layers": 32, "num_attention_heads": 32, "vocab_size": 50304},
    "6.9b": {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32, "vocab_size": 50432},
    "12b": {"hidden_size": 5120, "num_hidden_layers": 36, "num_attention_heads": 40, "vocab_size": 50688},
}
PYTHIA_SHARED = {
    "hidden_act": "gelu",
    "rotary_pct": 0.25,
    "rotary_emb_base": 10000,
    "max_position_embeddings": 2048,
    "layer_norm_eps": 1e-5,
    "initializer_range": 0.02,
    "use_parallel_residual": True,
    "tie_word_embeddings": False,
    "attention_bias": True,
}


def pythia_config(size: str, overrides: dict[str, Any] | None = None) -> GPTNeoXConfig:
    """The GPT-NeoX config of Pythia-``size`` (``70m`` ... ``12b``), with ``overrides``
    (any ``GPTNeoXConfig`` key) applied last."""
    if size not in PYTHIA_SIZES:
        raise ValueError(f"unknown Pythia size {size!r}; choose one of {', '.join(PYTHIA_SIZES)}")
    values = {**PYTHIA_SHARED, **PYTHIA_SIZES[size]}
    values["intermediate_size"] = 4 * values["hidden_size"]
    values.update(overrides or {})
    return GPTNeoXConfig(**values)


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int, min_frequency: int = 2) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (GPT-2/Pythia style) trained on ``texts``, with Pythia's
    ``<|endoftext|>`` (BOS/EOS) and ``<|padding|>`` special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS_TOKEN, eos_token=EOS_TOKEN, pad_token=PAD_TOKEN, unk_token=EOS_TOKEN
    )


def training_texts(files: Iterable[Path]) -> list[str]:
    """Every prompt and response of prepared splits (JSON lines), for tokenizer training."""
    texts = []
    for path in files:
        for row in read_jsonl(path):
            texts += [row[k] for k in ("prompt", "completion", "chosen", "rejected") if isinstance(row.get(k), str)]
    if not texts:
        raise DataError(f"no text to train a tokenizer on in {', '.join(map(str, files))}")
    return texts


def build_checkpoint(
    size: str, tokenizer: PreTrainedTokenizerBase, seed: int, overrides: dict[str, Any] | None = None
) -> GPTNeoXForCausalLM:
    """A randomly initialised Pythia-``size`` model for ``tokenizer`` (whose length must fit
    the vocabulary)."""
    import torch

    config = pythia_config(size, overrides)
    if len(tokenizer) > config.vocab_size:
        raise ValueError(f"the tokenizer has {len(tokenizer)} tokens but vocab_size is {config.vocab_size}")
    config.bos_token_id, config.eos_token_id, config.pad_token_id = (
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(config)


def build_checkpoint_dir(spec: dict[str, Any], text_files: list[Path], out: Path, seed: int) -> None:
    """``model.build_checkpoint``: train the tokenizer (or load ``spec['tokenizer']``), build
    the model, ``save_pretrained`` both into ``out``."""
    from .io import save_pretrained_atomic

    if spec.get("tokenizer"):
        from transformers import AutoTokenizer

        from .models import prepare_tokenizer

        tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(spec["tokenizer"]))
    else:
        tokenizer = train_bpe_tokenizer(
            training_texts(text_files), spec["bpe_vocab_size"], spec.get("bpe_min_frequency", 2)
        )
    model = build_checkpoint(spec["size"], tokenizer, seed, spec.get("overrides"))
    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"Pythia-{spec['size']} architecture, {n_params / 1e6:.2f}M parameters, tokenizer of "
        f"{len(tokenizer)} tokens -> {out}"
    )
    save_pretrained_atomic(Path(out), model, tokenizer)


def build_checkpoint_stage(
    cfg: Any, *, out: Path, text: list[Path] | None = None, size: str | None = None, tokenizer: str | None = None
) -> None:
    """Stage ``build-checkpoint``: ``model.build_checkpoint``, the flags overriding its size and tokenizer."""
    from .config import ConfigError

    built = cfg.model.build_checkpoint
    spec = (
        built.model_dump() if built is not None else {"bpe_vocab_size": 8192, "bpe_min_frequency": 2, "overrides": {}}
    )
    spec.update({k: v for k, v in (("size", size), ("tokenizer", tokenizer)) if v})
    if not spec.get("size"):
        raise ConfigError("build-checkpoint: no Pythia size (--size or model.build_checkpoint.size)")
    if not spec.get("tokenizer") and not text:
        raise ConfigError("build-checkpoint: --text (training text for the tokenizer) or --tokenizer is needed")
    build_checkpoint_dir(spec, list(text or []), out, cfg.seed)
