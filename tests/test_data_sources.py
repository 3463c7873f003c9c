"""Real-format data: the hf and local sources on fixtures built from the HH-RLHF file (laid
out like the hub repos), checked against values read independently from the raw file; bad
rows; chat-template rendering; Pythia-size checkpoints and the BPE tokenizer."""

from __future__ import annotations

import gzip
import io
import json
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from conftest import REPO
from podyn.config import DataConfig
from podyn.data.formats import Renderer, map_row
from podyn.data.sources import load_role, load_splits
from podyn.io import DataError

HH_FILE = REPO.parent / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"
pytestmark = pytest.mark.skipif(not HH_FILE.exists(), reason=f"{HH_FILE} not present")
FORMATS = ("trl_standard", "trl_conversational", "ultrafeedback_binarized", "hh_rlhf")


@pytest.fixture(scope="session")
def fixtures(tmp_path_factory) -> tuple[Path, dict]:
    sys.path.insert(0, str(REPO / "scripts"))
    from build_fixtures import build_fixtures

    out = tmp_path_factory.mktemp("hub")
    return out, build_fixtures(HH_FILE, out, n_rows=120)


@pytest.fixture(scope="session")
def raw() -> list[dict]:
    with gzip.open(HH_FILE, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def data_section(source: str, fmt: str, path: str, **role) -> dict:
    return {
        "source": source,
        "path": path,
        "format": fmt,
        "on_bad_row": "error",
        "shuffle": False,
        "render": "paper",
        "roles": {"prefs_train": role, "sft": role, "test": role},
    }


def typed(data: dict) -> DataConfig:
    """The data section as the stages get it: validated and typed."""
    return DataConfig.model_validate(data)


def check_against_raw(rows: list[dict], indices: list[int], raw: list[dict], exact: bool) -> None:
    """Each mapped pair is its raw dialogue cut in two: prompt + response == the raw
    dialogue (exactly for text formats, up to white space for message lists)."""
    assert len(rows) == len(indices)
    for row, i in zip(rows, indices):
        assert row["prompt"].startswith("\n\nHuman:") and row["prompt"].endswith("\n\nAssistant:")
        for key in ("chosen", "rejected"):
            if exact:
                assert row["prompt"] + row[key] == raw[i][key]
            else:
                assert squash(row["prompt"] + row[key]) == squash(raw[i][key])


@pytest.mark.parametrize("fmt", FORMATS)
def test_local_files_in_every_format(fixtures, raw, fmt):
    out, manifest = fixtures
    path = next((out / "local").glob(f"{fmt}.*"))
    data = data_section("local", fmt, str(path))
    rows = load_role(typed(data), "prefs_train", seed=0, log=io.StringIO())
    check_against_raw(rows, manifest[f"local/{fmt}"], raw, exact=fmt in ("trl_standard", "hh_rlhf"))
    sft = load_role(typed(data), "sft", seed=0, log=io.StringIO())
    assert [s["completion"] for s in sft] == [r["chosen"] for r in rows]  # SFT on the chosen responses
    test = load_role(typed(data), "test", seed=0, log=io.StringIO())
    assert [t["prompt"] for t in test] == [r["prompt"] for r in rows]


def test_hub_layout_ultrafeedback(fixtures, raw):
    """load_dataset(<dir>, split=...) resolves the UltraFeedback-binarized splits by the
    README's configs, and the sft role reads train_sft's `messages`."""
    out, manifest = fixtures
    path = str(out / "ultrafeedback_binarized")
    data = data_section("hf", "ultrafeedback_binarized", path)
    data["roles"] = {
        "sft": {"split": "train_sft"},
        "prefs_train": {"split": "train_prefs"},
        "prefs_heldout": {"split": "test_prefs", "n": 7},
        "test": {"split": "test_prefs"},
    }
    splits = load_splits(typed(data), seed=0)
    check_against_raw(splits["prefs_train"], manifest["ultrafeedback_binarized/train_prefs"], raw, exact=False)
    check_against_raw(splits["prefs_heldout"], manifest["ultrafeedback_binarized/test_prefs"][:7], raw, exact=False)
    for row, i in zip(splits["sft"], manifest["ultrafeedback_binarized/train_sft"]):
        assert squash(row["prompt"] + row["completion"]) == squash(raw[i]["chosen"])
    assert len(splits["test"]) == len(manifest["ultrafeedback_binarized/test_prefs"])


@pytest.mark.parametrize("name", ["trl_standard", "trl_conversational"])
def test_hub_layout_trl(fixtures, raw, name):
    out, manifest = fixtures
    data = data_section("hf", name, str(out / name), split="test")
    check_against_raw(
        load_role(typed(data), "prefs_train", 0, log=io.StringIO()),
        manifest[f"{name}/test"],
        raw,
        exact=name == "trl_standard",
    )


def test_hub_layout_hh_rlhf_data_dir(fixtures, raw):
    """Like Anthropic/hh-rlhf: data_dir="helpful-base", splits train and test; seeded order
    and disjoint start/n ranges give disjoint rows."""
    out, manifest = fixtures
    data = data_section("hf", "hh_rlhf", str(out / "hh-rlhf"))
    data.update(data_dir="helpful-base", shuffle=True)
    data["roles"] = {
        "prefs_train": {"split": "train", "start": 0, "n": 50},
        "judge_prefs": {"split": "train", "start": 50, "n": 30},
    }
    first = load_role(typed(data), "prefs_train", 3, log=io.StringIO())
    second = load_role(typed(data), "judge_prefs", 3, log=io.StringIO())
    everything = {raw[i]["chosen"] for i in manifest["hh-rlhf/helpful-base/train"]}
    assert len(first) == 50 and len(second) == 30
    assert {r["prompt"] + r["chosen"] for r in first}.isdisjoint({r["prompt"] + r["chosen"] for r in second})
    assert {r["prompt"] + r["chosen"] for r in first + second} <= everything
    assert load_role(typed(data), "prefs_train", 3, log=io.StringIO()) == first  # the order is seeded


BAD_ROWS = [
    ("trl_standard", {"prompt": "\n\nHuman: hi\n\nAssistant:", "chosen": " a"}, "field 'rejected': missing"),
    (
        "trl_standard",
        {"prompt": "\n\nHuman: hi\n\nAssistant:", "chosen": "  ", "rejected": " b"},
        "field 'chosen': empty response",
    ),
    (
        "trl_standard",
        {"prompt": "\n\nHuman: hi\n\nAssistant:", "chosen": " b", "rejected": " b"},
        "field 'rejected': identical to 'chosen'",
    ),
    (
        "trl_conversational",
        {
            "prompt": [{"role": "user", "content": "hi"}],
            "chosen": [{"role": "assistant", "content": "a"}],
            "rejected": [{"content": "b"}],
        },
        "field 'rejected': message 0 is not",
    ),
    (
        "trl_conversational",
        {
            "prompt": "hi",
            "chosen": [{"role": "assistant", "content": "a"}],
            "rejected": [{"role": "assistant", "content": "b"}],
        },
        "field 'prompt': should be a non-empty list",
    ),
    (
        "ultrafeedback_binarized",
        {
            "prompt": "hi",
            "chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}],
            "rejected": [{"role": "user", "content": "bye"}, {"role": "assistant", "content": "b"}],
        },
        "field 'rejected': its turns before the reply differ",
    ),
    (
        "hh_rlhf",
        {"chosen": "\n\nHuman: hi\n\nAssistant: a", "rejected": "\n\nHuman: bye\n\nAssistant: b"},
        "field 'rejected': chosen and rejected share no prompt",
    ),
]


@pytest.mark.parametrize(("fmt", "bad", "message"), BAD_ROWS)
def test_bad_rows_error_or_drop(tmp_path, fmt, bad, message):
    good = {
        "trl_standard": {"prompt": "\n\nHuman: hi\n\nAssistant:", "chosen": " a", "rejected": " b"},
        "trl_conversational": {
            "prompt": [{"role": "user", "content": "hi"}],
            "chosen": [{"role": "assistant", "content": "a"}],
            "rejected": [{"role": "assistant", "content": "b"}],
        },
        "ultrafeedback_binarized": {
            "prompt": "hi",
            "chosen": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}],
            "rejected": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "b"}],
        },
        "hh_rlhf": {"chosen": "\n\nHuman: hi\n\nAssistant: a", "rejected": "\n\nHuman: hi\n\nAssistant: b"},
    }[fmt]
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in (good, good, bad, good)))
    data = data_section("local", fmt, str(path))
    with pytest.raises(DataError, match=re.escape(f"{path}: row 3: {message}")):
        load_role(typed(data), "prefs_train", 0, log=io.StringIO())
    log = io.StringIO()
    rows = load_role(typed({**data, "on_bad_row": "drop"}), "prefs_train", 0, log=log)
    assert len(rows) == 3
    assert "dropped 1 bad rows" in log.getvalue() and message.split(":")[0] in log.getvalue()


def test_bad_rows_in_parquet_name_the_file(tmp_path):
    import pandas as pd

    path = tmp_path / "prefs.parquet"
    pd.DataFrame(
        [{"prompt": "p", "chosen": " a", "rejected": " b"}, {"prompt": "p", "chosen": " a", "rejected": None}]
    ).to_parquet(path)
    with pytest.raises(DataError, match=re.escape(f"{path}: row 2: field 'rejected': missing")):
        load_role(typed(data_section("local", "trl_standard", str(path))), "prefs_train", 0, log=io.StringIO())


def test_chat_template_rendering(tmp_path):
    """render: chat_template renders message lists with the tokenizer's template, HH-RLHF
    dialogues included (parsed into turns first)."""
    from podyn.models import build_word_tokenizer

    tok = build_word_tokenizer(["hi", "a", "b"])
    tok.chat_template = (
        "{% for m in messages %}<{{ m.role }}>{{ m.content }}</s>{% endfor %}{% if add_generation_prompt "
        "%}<assistant>{% endif %}"
    )
    tok.save_pretrained(tmp_path / "tok")
    data = {
        **data_section("local", "hh_rlhf", "unused"),
        "render": "chat_template",
        "chat_template_from": str(tmp_path / "tok"),
    }
    from podyn.data.sources import chat_renderer

    render = chat_renderer(typed(data))
    row = map_row(
        {
            "chosen": "\n\nHuman: hi\n\nAssistant: yo\n\nHuman: again \n\nAssistant: a",
            "rejected": "\n\nHuman: hi\n\nAssistant: yo\n\nHuman: again \n\nAssistant: b",
        },
        "hh_rlhf",
        "pref",
        render,
    )
    assert row == {"prompt": "<user>hi</s><assistant>yo</s><user>again</s><assistant>", "chosen": "a", "rejected": "b"}
    conv = {
        "prompt": [{"role": "user", "content": "hi"}],
        "chosen": [{"role": "assistant", "content": "a"}],
        "rejected": [{"role": "assistant", "content": "b"}],
    }
    assert map_row(conv, "trl_conversational", "pref", render)["prompt"] == "<user>hi</s><assistant>"
    assert map_row(conv, "trl_conversational", "pref", Renderer())["prompt"] == "\n\nHuman: hi\n\nAssistant:"


def test_paper_config_reads_the_fixtures(fixtures, raw):
    """config/paper.yaml's data section, its hub ids replaced by the fixture directories."""
    import yaml

    from podyn.config import validate_config

    out, manifest = fixtures
    paper = {
        **yaml.safe_load((REPO / "config.yaml").read_text()),
        **yaml.safe_load((REPO / "config" / "paper.yaml").read_text()),
    }
    data = validate_config(paper, "config/paper.yaml").data.model_dump()
    assert data["source"] == "hf"
    for role in data["roles"].values():
        if role:
            role["path"] = str(
                out
                / {"HuggingFaceH4/ultrafeedback_binarized": "ultrafeedback_binarized", "Anthropic/hh-rlhf": "hh-rlhf"}[
                    role["path"]
                ]
            )
    splits = load_splits(typed(data), seed=0)
    assert sorted(splits) == ["prefs_heldout", "prefs_train", "sft", "test"]
    uf_prompts = {squash(raw[i]["chosen"]) for i in manifest["ultrafeedback_binarized/train_prefs"]}
    assert {squash(r["prompt"] + r["chosen"]) for r in splits["prefs_train"]} == uf_prompts
    hh_test = {raw[i]["chosen"] for i in manifest["hh-rlhf/helpful-base/test"]}
    assert all(any(c.startswith(t["prompt"]) for c in hh_test) for t in splits["test"])


# ----------------------------------------------------------------------------- models


def test_pythia_sizes_match_the_published_parameter_counts():
    """Parameter counts of the randomly initialised models equal the published checkpoints'
    (EleutherAI/pythia-70m: 70,426,624; -160m: 162,322,944; -410m: 405,334,016)."""
    import torch
    from transformers import GPTNeoXForCausalLM

    from podyn.pythia import pythia_config

    for size, expected in (("70m", 70_426_624), ("160m", 162_322_944), ("410m", 405_334_016)):
        with torch.device("meta"):
            model = GPTNeoXForCausalLM(pythia_config(size))
        assert sum(p.numel() for p in model.parameters()) == expected, size


def test_bpe_checkpoint_loads_like_a_hub_checkpoint(tmp_path, raw):
    """The built directory loads through the pretrained path; a long prompt keeps its end."""
    from podyn.batching import encode_prompt
    from podyn.models import load_policy, load_tokenizer
    from podyn.pythia import build_checkpoint_dir

    texts = tmp_path / "sft.jsonl"
    texts.write_text(
        "".join(json.dumps({"prompt": r["chosen"], "completion": r["rejected"]}) + "\n" for r in raw[:300])
    )
    build_checkpoint_dir(
        {"size": "14m", "bpe_vocab_size": 1024, "overrides": {"vocab_size": 1024, "num_hidden_layers": 1}},
        [texts],
        tmp_path / "ckpt",
        seed=0,
    )
    tokenizer = load_tokenizer(tmp_path / "ckpt")
    from podyn.config import ModelConfig

    model = load_policy(tmp_path / "ckpt", ModelConfig(attn_implementation="eager"))
    assert model.config.hidden_size == 128 and model.config.num_attention_heads == 4 and len(tokenizer) == 1024
    assert tokenizer.pad_token == "<|padding|>" and tokenizer.eos_token == "<|endoftext|>"
    prompt = raw[0]["chosen"]
    ids = tokenizer(prompt, add_special_tokens=False).input_ids
    assert tokenizer.decode(ids) == prompt  # byte-level: lossless
    assert len(ids) > 40 and encode_prompt(tokenizer, prompt, 40) == ids[-40:]


def test_reward_model_judge_compares_rewards(assets):
    """judge.type reward_model: win/tie/loss by the judge model's scores, recomputed here with
    the scalar head; a response as long as max_new_tokens loses missing_eos_penalty."""
    import torch

    from podyn.batching import encode_prompt, encode_response, prompt_response_batch
    from podyn.config import GenerationConfig, JudgeConfig, ModelConfig
    from podyn.judges import make_judge
    from podyn.models import last_token_index, load_scalar_model, load_tokenizer, score_at

    model_cfg, generation = ModelConfig(attn_implementation="eager"), GenerationConfig(max_new_tokens=6)
    judge_cfg = JudgeConfig(type="reward_model", tie_margin=0.0, missing_eos_penalty=0.0)

    def cfg(judge):  # the judge stage's typed excerpt: judge, model and generation sections
        return SimpleNamespace(judge=judge, model=model_cfg, generation=generation)

    judge = make_judge(cfg(judge_cfg), "unused", assets["reward"])
    tokenizer, model = load_tokenizer(assets["reward"]), load_scalar_model(assets["reward"], model_cfg).eval()
    prompt = "\n\nHuman: reverse one two three\n\nAssistant:"

    def score(response: str) -> float:
        batch = prompt_response_batch(
            [encode_prompt(tokenizer, prompt)], [encode_response(tokenizer, response)], tokenizer.pad_token_id
        )
        with torch.no_grad():
            return float(
                score_at(model, batch["input_ids"], batch["attention_mask"], last_token_index(batch["attention_mask"]))
            )

    a, b = " three two one", " one two"
    assert judge.reward(prompt, a) == pytest.approx(score(a), abs=1e-6)
    assert judge.compare(prompt, a, b) == float(score(a) > score(b)) and judge.compare(prompt, a, a) == 0.5
    long = " one two three four five six"  # six tokens: cut at max_new_tokens, no EOS
    penalised = make_judge(cfg(judge_cfg.model_copy(update={"missing_eos_penalty": 2.5})), "unused", assets["reward"])
    assert penalised.reward(prompt, long) == pytest.approx(score(long) - 2.5, abs=1e-6)
    assert penalised.reward(prompt, a) == pytest.approx(score(a), abs=1e-6)
