"""Export a checkpoint to a folder that Hugging Face `transformers` loads with no custom code.

    python -m minigpt_rlhf.export out/ppo/model.pt hf/ppo                      # the policy (any LM: base, sft, ppo)
    python -m minigpt_rlhf.export out/rm/model.pt hf/rm                        # the reward model
    python -m minigpt_rlhf.export out/ppo/model.pt hf/value --value_model=True  # the value model of a PPO run

    from transformers import AutoModelForCausalLM, AutoTokenizer
    model, tok = AutoModelForCausalLM.from_pretrained("hf/ppo"), AutoTokenizer.from_pretrained("hf/ppo")

The folder holds:

- config.json and model.safetensors in GPT-2's layout, the inverse of `model.from_pretrained`: the
  attention and MLP matrices are stored transposed (GPT-2's Conv1D keeps (in, out) where nn.Linear keeps
  (out, in)), and the LM head is not stored (tied to wte). `vocab_size` is the model's padded embedding
  size, not the tokenizer's: the exported model has the same rows as ours, so its logits equal ours
  column for column and `from_pretrained` gives back the same model. The padding rows and PAD are listed
  in generation_config.json's `suppress_tokens`, so that `generate` never emits them, as our sampler
  never does (sampling.banned_token_ids).
- the tokenizer: tokenizer.json (Hugging Face `tokenizers` format) and tokenizer_config.json, loaded by
  `AutoTokenizer` as a `PreTrainedTokenizerFast` with EOS `<|endoftext|>` and PAD `<|pad|>` at our ids;
  for GPT-2's vocabulary also GPT-2's own vocab.json and merges.txt. Same split regex, same merges: it
  gives our ids (tests/test_export.py checks the world's text and random Unicode), with one difference of
  convention: `transformers` reads the strings "<|endoftext|>" and "<|pad|>" in text
  as the special tokens, where our `Tokenizer.encode` keeps them text (`split_special_tokens=True` in
  `transformers` does the same).

The reward model and the value model export as `GPT2ForSequenceClassification` with one label. It
reads its score at the last token that is not PAD (`pad_token_id`), which is the EOS where our RM reads
the reward (`reward.reward_at_eos`), since PAD never occurs inside a sequence. Since transformers 4.49
(huggingface/transformers#35911) that works with left or right padding; before, only with right padding.
Its `score` layer has no bias, so our head's bias b is folded into the final LayerNorm's bias, which
feeds only the head: with head weight w, adding b * w / |w|^2 to ln_f's bias adds exactly b to every score. The
exported model's last hidden state is shifted by that constant vector; its scores are ours. The value
model's per-token values are `model.score(model.transformer(...).last_hidden_state)`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from .checkpoint import load_checkpoint, model_from_checkpoint
from .model import _CONV1D, GPT, GPTConfig
from .sampling import banned_token_ids
from .tokenizer import EOS, PAD, Tokenizer, bytes_to_unicode, get_tokenizer

# ----------------------------------------------------------------------------------------------------
# Weights


def gpt2_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """Our weights under GPT-2's names and shapes (GPT2LMHeadModel, or GPT2ForSequenceClassification for
    a scalar head). The inverse of `model.from_pretrained`."""
    config = model.config
    sd = {}
    for name, w in model.state_dict().items():
        if name.startswith("lm_head."):
            continue  # the LM head is tied to wte; a scalar head becomes `score` below
        if name.endswith(_CONV1D):
            w = w.t()  # nn.Linear (out, in) -> Conv1D (in, out)
        sd[name] = w.detach().cpu().contiguous().clone()
    if not config.bias:  # GPT-2 always has biases; zero biases are the same function
        C = config.n_embd
        zeros = {"ln_1.bias": C, "attn.c_attn.bias": 3 * C, "attn.c_proj.bias": C, "ln_2.bias": C,
                 "mlp.c_fc.bias": 4 * C, "mlp.c_proj.bias": C}
        dtype = sd["transformer.wte.weight"].dtype
        for i in range(config.n_layer):
            for name, n in zeros.items():
                sd[f"transformer.h.{i}.{name}"] = torch.zeros(n, dtype=dtype)
        sd["transformer.ln_f.bias"] = torch.zeros(C, dtype=dtype)
    if config.head == "scalar":
        w = model.lm_head.weight.detach().double().cpu()[0]  # (C,)
        b = float(model.lm_head.bias.detach()[0])
        norm2 = float(w @ w)
        if norm2 == 0.0:
            raise ValueError("the scalar head's weight is all zeros: its bias cannot be folded into ln_f")
        ln_f_bias = sd["transformer.ln_f.bias"]
        # score = w . (ln_f(x) + b w / |w|^2) = w . ln_f(x) + b: the bias GPT-2's bias-free `score` lacks
        sd["transformer.ln_f.bias"] = (ln_f_bias.double() + b * w / norm2).to(ln_f_bias.dtype)
        sd["score.weight"] = model.lm_head.weight.detach().cpu().contiguous().clone()  # (1, C)
    return sd


def gpt2_config(config: GPTConfig, tok: Tokenizer, label: str = "reward") -> dict:
    """config.json of a GPT-2 with our model's sizes and the tokenizer's EOS and PAD ids. A scalar head
    becomes GPT2ForSequenceClassification with one label, named `label`."""
    out = {
        "architectures": ["GPT2LMHeadModel" if config.head == "lm" else "GPT2ForSequenceClassification"],
        "model_type": "gpt2",
        "vocab_size": config.vocab_size,  # the padded embedding: logits keep all our columns
        "n_positions": config.block_size,
        "n_ctx": config.block_size,
        "n_embd": config.n_embd,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_inner": None,  # 4 * n_embd, as our MLP
        "activation_function": "gelu_new",  # GELU, tanh approximation (model.MLP)
        "resid_pdrop": config.dropout,
        "embd_pdrop": config.dropout,
        "attn_pdrop": config.dropout,
        "layer_norm_epsilon": 1e-5,
        "initializer_range": 0.02,
        "scale_attn_weights": True,
        "tie_word_embeddings": config.head == "lm",
        "bos_token_id": tok.eos_id,  # as GPT-2: documents are separated by EOS, there is no other BOS
        "eos_token_id": tok.eos_id,
        "pad_token_id": tok.pad_id,
    }
    if config.head == "scalar":
        out["id2label"] = {"0": label}
        out["label2id"] = {label: 0}
    return out


def _safetensors_save_file():
    try:
        from safetensors.torch import save_file
    except ImportError as e:
        raise ImportError("exporting needs the optional package safetensors "
                          "(pip install safetensors, or pip install -e \".[export]\")") from e
    return save_file


# ----------------------------------------------------------------------------------------------------
# Tokenizer


def bpe_merges(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """The merge list of tiktoken-style ranks, in rank order: for each token past the 256 bytes, the two
    lower-ranked tokens it was made from, found by replaying BPE on its bytes with only lower ranks (the
    way transformers converts tiktoken vocabularies). For GPT-2's ranks this is GPT-2's merges.txt."""
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) == 1:
            continue
        parts = [bytes([b]) for b in token]
        while len(parts) > 2:
            pairs = [(ranks.get(parts[i] + parts[i + 1]), i) for i in range(len(parts) - 1)]
            pairs = [(r, i) for r, i in pairs if r is not None and r < rank]
            if not pairs:
                break
            _, i = min(pairs)
            parts[i: i + 2] = [parts[i] + parts[i + 1]]
        if len(parts) != 2:
            raise ValueError(f"token {token!r} (rank {rank}) is not a merge of two lower-ranked tokens")
        merges.append((parts[0], parts[1]))
    return merges


def hf_tokenizer(tok: Tokenizer):
    """A `tokenizers.Tokenizer` that encodes exactly as `tok`: the same split regex, byte-level BPE with
    the same merges, and EOS, PAD as special tokens at our ids."""
    try:
        from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
        from tokenizers import Tokenizer as HFTokenizer
    except ImportError as e:
        raise ImportError("exporting the tokenizer needs the optional package tokenizers "
                          "(pip install tokenizers; transformers installs it)") from e
    byte_char = bytes_to_unicode()  # tokenizers' ByteLevel spells bytes as GPT-2's vocab.json does

    def spell(b: bytes) -> str:
        return "".join(byte_char[x] for x in b)

    vocab = {spell(token): rank for token, rank in tok.ranks.items()}
    merges = [(spell(a), spell(b)) for a, b in bpe_merges(tok.ranks)]
    # ignore_merges: a chunk that is itself a token is that token, as in tiktoken's encoder
    hf = HFTokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True))
    hf.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(tok.pattern), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    hf.decoder = decoders.ByteLevel()
    hf.add_special_tokens([AddedToken(EOS, special=True, normalized=False),
                           AddedToken(PAD, special=True, normalized=False)])
    if (hf.token_to_id(EOS), hf.token_to_id(PAD)) != (tok.eos_id, tok.pad_id):
        raise AssertionError(f"exported EOS/PAD ids {hf.token_to_id(EOS)}, {hf.token_to_id(PAD)} "
                             f"differ from ours {tok.eos_id}, {tok.pad_id}")
    return hf


def export_tokenizer(tok: Tokenizer, out_dir: str | Path, model_max_length: int, hf=None):
    """tokenizer.json + tokenizer_config.json (and GPT-2's vocab.json + merges.txt for GPT-2's vocabulary).

    tokenizer_config names PreTrainedTokenizerFast, which loads tokenizer.json as written; GPT-2's own
    tokenizer class would rebuild its pre-tokenizer from vocab and merges."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (hf or hf_tokenizer(tok)).save(str(out_dir / "tokenizer.json"))
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": EOS,
        "eos_token": EOS,
        "pad_token": PAD,
        "model_max_length": model_max_length,
        "clean_up_tokenization_spaces": False,  # decode must give back the text exactly, as ours does
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2) + "\n")
    if tok.name == "gpt2":
        byte_char = bytes_to_unicode()
        encoder = {"".join(byte_char[x] for x in t): r for t, r in sorted(tok.ranks.items(), key=lambda kv: kv[1])}
        encoder[EOS] = tok.eos_id
        (out_dir / "vocab.json").write_text(json.dumps(encoder, ensure_ascii=False), encoding="utf-8")
        merges = ["".join(byte_char[x] for x in a) + " " + "".join(byte_char[x] for x in b)
                  for a, b in bpe_merges(tok.ranks)]
        (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------------------------------
# The whole folder


def export_model(model: GPT, tok: Tokenizer, out_dir: str | Path, label: str = "reward") -> Path:
    """Write `model` and `tok` to `out_dir` in Hugging Face's GPT-2 format. Returns the folder."""
    if tok.n_vocab > model.config.vocab_size:
        raise ValueError(f"tokenizer has {tok.n_vocab} ids but the model only {model.config.vocab_size} rows")
    # both optional packages are needed: fail before anything is written
    hf, save_file = hf_tokenizer(tok), _safetensors_save_file()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_file(gpt2_state_dict(model), str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    (out_dir / "config.json").write_text(json.dumps(gpt2_config(model.config, tok, label), indent=2) + "\n")
    if model.config.head == "lm":
        banned = banned_token_ids(model.config.vocab_size, tok.n_vocab, tok.pad_id).tolist()
        generation = {"bos_token_id": tok.eos_id, "eos_token_id": tok.eos_id, "pad_token_id": tok.pad_id,
                      "suppress_tokens": banned}
        (out_dir / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    export_tokenizer(tok, out_dir, model.config.block_size, hf)
    return out_dir


def export_checkpoint(path: str | Path, out_dir: str | Path, tokenizer: str = "", value_model: bool = False) -> Path:
    """Export a checkpoint (out/<stage>/model.pt). `tokenizer` defaults to the spec the checkpoint was
    trained with (its config's `tokenizer`); the checkpoint's stored identity must match it.
    value_model=True exports the value model stored in a PPO checkpoint instead of the policy."""
    ckpt = load_checkpoint(path, "checkpoint")
    spec = tokenizer or ckpt.get("config", {}).get("tokenizer", "default")
    tok = get_tokenizer(spec)
    if value_model:
        if "value_model" not in ckpt:
            raise ValueError(f"{path} holds no value model (only PPO checkpoints do); drop --value_model")
        ckpt = {**ckpt, "model": ckpt["value_model"], "model_config": {**ckpt["model_config"], "head": "scalar"}}
    model = model_from_checkpoint(ckpt, tok, where=str(path))
    return export_model(model, tok, out_dir, label="value" if value_model else "reward")


def main(argv: list[str] | None = None):
    argv = sys.argv[1:] if argv is None else argv
    usage = ("usage: python -m minigpt_rlhf.export CHECKPOINT OUT_DIR [--tokenizer=SPEC] [--value_model=True]\n"
             "  CHECKPOINT  out/<stage>/model.pt; OUT_DIR  the folder to write\n"
             "  --tokenizer    the checkpoint's tokenizer spec if not the one in its config\n"
             "  --value_model  export the value model of a PPO checkpoint instead of its policy")
    if "-h" in argv or "--help" in argv:
        print(usage)
        return
    positional = [a for a in argv if not a.startswith("--")]
    options = dict(a[2:].split("=", 1) if "=" in a else (a[2:], "") for a in argv if a.startswith("--"))
    unknown = set(options) - {"tokenizer", "value_model"}
    if len(positional) != 2 or unknown:
        raise SystemExit((f"unknown option --{sorted(unknown)[0]}\n" if unknown else "") + usage)
    value_model = options.get("value_model", "false").lower() in ("1", "true", "yes", "on", "")
    try:
        out = export_checkpoint(positional[0], positional[1], options.get("tokenizer", ""), value_model)
    except (FileNotFoundError, ValueError, RuntimeError, ImportError) as e:
        raise SystemExit(f"error: {e}") from None
    print(f"wrote {out}: " + ", ".join(sorted(p.name for p in out.iterdir())))


if __name__ == "__main__":
    main()
