"""The GPT-2 architecture (Radford et al. 2019), written to be read next to docs/tutorial.md, chapter 1.

InstructGPT starts every step from a GPT-3 language model; we start from the same architecture at toy
size. Three things beyond a plain GPT are needed by the RLHF pipeline:

- left-padded batches: `forward` takes an attention mask and position ids, so that a prompt's positions
  start at 0 at its first real token and padding never changes the outputs at real positions;
- a KV cache (`KVCache`) for fast incremental decoding during rollouts;
- the unembedding swap (`swap_unembedding`): the reward model and the value function are the same
  transformer with the vocabulary projection replaced by a projection to one scalar (Ouyang et al. 2022,
  section 3.5).

Parameter names follow GPT-2's (wte, wpe, h.i.ln_1, attn.c_attn, ...), so `from_pretrained` is a
transpose-and-copy of a Hugging Face checkpoint.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import DataError, parse_json, read_text


@dataclass
class GPTConfig:
    block_size: int = 128  # maximum sequence length (context)
    vocab_size: int = 2048  # rows of the embedding; may exceed the tokenizer's n_vocab (padding to 64)
    n_layer: int = 4  # transformer blocks
    n_head: int = 4  # attention heads per block
    n_embd: int = 128  # residual stream width
    dropout: float = 0.0  # residual, attention and embedding dropout (InstructGPT's SFT used 0.2)
    bias: bool = True  # biases in Linear and LayerNorm layers, as in GPT-2
    head: str = "lm"  # "lm": logits over the vocabulary (tied to wte); "scalar": one number per position


class LayerNorm(nn.Module):
    """LayerNorm with an optional bias (torch's LayerNorm only has both or neither)."""

    def __init__(self, ndim: int, bias: bool):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x):
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class KVCache:
    """Keys and values of every layer for positions already processed, so that decoding one new token
    costs one token's forward pass instead of a pass over the whole sequence.

    All rows of the batch share one time index `pos` (prompts are left-padded to a common length, and
    every row gets one new token per step); padding is handled by the attention mask, not the cache.
    """

    def __init__(self, config: GPTConfig, batch_size: int, max_len: int, device, dtype):
        hs = config.n_embd // config.n_head
        shape = (batch_size, config.n_head, max_len, hs)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.pos = 0  # number of positions already stored
        self.max_len = max_len

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Store k, v (B, nh, Tq, hs) at positions [pos, pos + Tq) and return all keys and values so far."""
        t0, t1 = self.pos, self.pos + k.size(2)
        if t1 > self.max_len:
            raise ValueError(f"KV cache full: {t1} positions needed, cache holds {self.max_len}")
        self.k[layer][:, :, t0:t1] = k
        self.v[layer][:, :, t0:t1] = v
        return self.k[layer][:, :, :t1], self.v[layer][:, :, :t1]

    def keep(self, rows: torch.Tensor):
        """Keep only the given batch rows (a 1-D index tensor), dropping the others' keys and values: a
        sampler drops rows that have finished so that later steps compute only the running ones. The
        positions stored so far are copied into smaller buffers; later positions stay free."""
        for cache in (self.k, self.v):
            for layer, buf in enumerate(cache):
                small = buf.new_empty((len(rows),) + buf.shape[1:])
                small[:, :, : self.pos] = buf[rows, :, : self.pos]
                cache[layer] = small


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        assert config.n_embd % config.n_head == 0, "n_embd must be divisible by n_head"
        self.layer_idx = layer_idx
        self.n_head = config.n_head
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v at once
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x, attn_mask=None, kv_cache: KVCache | None = None):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        if kv_cache is not None:
            k, v = kv_cache.update(self.layer_idx, k, v)  # (B, nh, Tk, hs), Tk = cached + T
        dropout_p = self.dropout if self.training else 0.0
        if attn_mask is None:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2 used the tanh approximation of GELU
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm transformer block (GPT-2 moved LayerNorm to the input of each sub-block)."""

    def __init__(self, config: GPTConfig, layer_idx: int):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config, layer_idx)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, attn_mask=None, kv_cache=None):
        x = x + self.attn(self.ln_1(x), attn_mask, kv_cache)
        x = x + self.mlp(self.ln_2(x))
        return x


def build_attn_mask(attention_mask: torch.Tensor, q_len: int) -> torch.Tensor:
    """Boolean SDPA mask (B, 1, Tq, Tk): query i (the last q_len of Tk positions) may see key j when j is a
    real token (attention_mask == 1) and j <= i. Every query also sees itself, so that a pad query never
    has an all-masked row (which would give NaN); pad outputs are garbage but finite, and never read."""
    B, Tk = attention_mask.shape
    if q_len == 1:  # a decoding step: the one query is the last position and may see every real key
        mask = attention_mask.to(torch.bool, copy=True)  # (B, Tk)
        mask[:, -1] = True
        return mask[:, None, None, :]  # (B, 1, 1, Tk)
    device = attention_mask.device
    q_pos = torch.arange(Tk - q_len, Tk, device=device)[:, None]  # (Tq, 1)
    k_pos = torch.arange(Tk, device=device)[None, :]  # (1, Tk)
    causal = k_pos <= q_pos  # (Tq, Tk)
    real = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, Tk)
    mask = (causal & real) | (k_pos == q_pos)  # (B, 1, Tq, Tk)
    return mask


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position of each token counted from the row's first real token: left padding does not shift a
    prompt's positions. Pads get position 0 (their outputs are never used)."""
    return (attention_mask.long().cumsum(dim=1) - 1).clamp(min=0)  # (B, T)


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        if config.head not in ("lm", "scalar"):
            raise ValueError(f"GPTConfig.head must be 'lm' or 'scalar', got {config.head!r}")
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config, i) for i in range(config.n_layer)]),
                ln_f=LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        if config.head == "lm":
            self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
            self.transformer.wte.weight = self.lm_head.weight  # weight tying, as in GPT-2
        else:
            self.lm_head = nn.Linear(config.n_embd, 1, bias=True)
        self.apply(self._init_weights)
        # GPT-2 paper: scale the init of residual projections by 1/sqrt(number of residual layers)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        if config.head == "scalar":
            init_scalar_head(self.lm_head, config.n_embd)

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wpe.weight.numel()
        return n

    def forward(
        self,
        idx: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        outputs_from: int = 0,
    ) -> torch.Tensor:
        """idx (B, T) token ids. attention_mask (B, T_total): 1 for real tokens, 0 for padding, covering
        the cached positions too when a kv_cache is given (T_total = cache.pos + T). position_ids (B, T):
        derived from attention_mask when not given. Returns logits (B, T, vocab) for an "lm" head, or
        (B, T) scalars for a "scalar" head; with outputs_from=s, only those of positions s, s + 1, ... (a
        Python slice start: -1 is the last position), the only ones the caller reads: sampling reads the last
        position (nanoGPT's inference shortcut), PPO the response positions. Unembedding the positions
        nobody reads would cost a (T, n_embd) x (n_embd, vocab) matmul, the largest one in a small model."""
        B, T = idx.size()
        past = kv_cache.pos if kv_cache is not None else 0
        if past + T > self.config.block_size:  # positions derived here are at most past + T - 1
            raise ValueError(f"sequence of {past + T} tokens is beyond the model's context "
                             f"(block_size={self.config.block_size}); shorten the prompt or max_new_tokens")
        if position_ids is None:
            if attention_mask is not None:
                position_ids = position_ids_from_mask(attention_mask)[:, past:]  # (B, T)
            else:
                position_ids = torch.arange(past, past + T, device=idx.device).expand(B, T)
        attn_mask = None
        if attention_mask is not None:
            attn_mask = build_attn_mask(attention_mask, T)
        elif kv_cache is not None and past > 0:
            attn_mask = build_attn_mask(torch.ones(B, past + T, device=idx.device), T)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(position_ids))
        for block in self.transformer.h:
            x = block(x, attn_mask, kv_cache)
        if outputs_from:
            x = x[:, outputs_from:]  # (B, T', C)
        x = self.transformer.ln_f(x)  # (B, T', C)
        if kv_cache is not None:
            kv_cache.pos += T
        if self.config.head == "scalar":
            # in fp32 even under bf16 autocast: bf16 rounds a reward near 1 to steps of 2^-7 (0.0078), which a
            # group-normalised advantage (GRPO's / std) would blow up to full size between near-equal scores
            with torch.autocast(device_type=x.device.type, enabled=False):
                return self.lm_head(x.float()).squeeze(-1)  # (B, T)
        return self.lm_head(x)  # (B, T, V)

    def set_dropout(self, p: float):
        """Residual, attention and embedding dropout of a built model (SFT turns it on for fine-tuning only)."""
        self.config.dropout = p
        for m in self.modules():
            if isinstance(m, nn.Dropout):
                m.p = p
            elif isinstance(m, CausalSelfAttention):
                m.dropout = p


def configure_optimizer(models, lr: float, weight_decay: float = 0.0, betas=(0.9, 0.95), eps: float = 1e-8,
                        fused: bool = False) -> torch.optim.AdamW:
    """AdamW over the trainable parameters of `models` (one model, or several trained together: PPO's policy
    and value model), in order. Weight decay on 2-D weights (matmuls, embeddings) only; biases and LayerNorm
    gains are not decayed (as in GPT-2/GPT-3 training setups). With weight_decay=0 nothing needs telling
    apart: one group."""
    models = models if isinstance(models, (list, tuple)) else [models]
    params = [p for m in models for p in m.parameters() if p.requires_grad]
    if weight_decay:
        groups = [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ]
    else:
        groups = [{"params": params, "weight_decay": 0.0}]
    kwargs = {"fused": True} if fused else {}
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, **kwargs)


def init_scalar_head(head: nn.Linear, n_embd: int):
    # lm-human-preferences initialises the reward head with std 1/sqrt(d_model + 1) and a zero bias
    nn.init.normal_(head.weight, std=1.0 / math.sqrt(n_embd + 1))
    nn.init.zeros_(head.bias)


def swap_unembedding(lm: GPT) -> GPT:
    """InstructGPT's reward model and value function: the same transformer with its unembedding layer
    replaced by a projection to one scalar (Ouyang et al. 2022, sec. 3.5). Returns a NEW model whose trunk
    is a copy of `lm`'s trunk and whose head is a fresh Linear(n_embd, 1); `lm` is left untouched and
    nothing is shared or tied between the two."""
    if lm.config.head != "lm":
        raise ValueError("swap_unembedding expects a language model (head='lm')")
    config = GPTConfig(**{**asdict(lm.config), "head": "scalar"})
    model = GPT(config).to(next(lm.parameters()).device)
    trunk = {k: v for k, v in lm.state_dict().items() if not k.startswith("lm_head.")}
    missing, unexpected = model.load_state_dict(trunk, strict=False)
    assert set(missing) == {"lm_head.weight", "lm_head.bias"} and not unexpected, (missing, unexpected)
    return model


# ----------------------------------------------------------------------------------------------------
# Loading GPT-2 weights from a local Hugging Face folder (no network)

_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def _read_hf_state_dict(folder: Path) -> dict:
    st, binf = folder / "model.safetensors", folder / "pytorch_model.bin"
    if st.exists():
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise ImportError(
                f"{st} needs the optional package safetensors (pip install safetensors), "
                f"or provide {binf.name} instead"
            ) from e
        return load_file(str(st))
    if binf.exists():
        return torch.load(binf, map_location="cpu", weights_only=True)
    raise FileNotFoundError(f"{folder}: no model.safetensors or pytorch_model.bin in this folder")


def from_pretrained(path: str | Path, vocab_size: int | None = None, dropout: float = 0.0) -> GPT:
    """Load a Hugging Face-layout GPT-2 checkpoint (config.json plus model.safetensors or
    pytorch_model.bin) from a LOCAL folder. HF's c_attn / c_proj / c_fc are Conv1D layers whose weights
    are stored transposed relative to nn.Linear, so they are transposed on the way in.

    vocab_size: pad the embedding to this many rows (e.g. 50304 = 50257 rounded up to a multiple of 64,
    which nanoGPT found ~25% faster on GPU, and which leaves room for a PAD token). New rows are 0."""
    folder = Path(path)
    cfg_path = folder / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{cfg_path} not found: from_pretrained expects a local folder holding "
                                "a GPT-2 config.json and model.safetensors or pytorch_model.bin")
    hf = parse_json(read_text(cfg_path, "GPT-2 config.json"), str(cfg_path))
    hf = hf if isinstance(hf, dict) else {}
    sizes = {key: hf.get(key) for key in ("vocab_size", "n_layer", "n_head", "n_embd")}
    sizes["block_size"] = hf.get("n_positions", hf.get("n_ctx", 1024))
    for key, v in sizes.items():
        if type(v) is not int or v <= 0:
            raise DataError(f"{cfg_path}: {key} should be a positive integer, got {v!r}: not a GPT-2 config.json")
    n_vocab = sizes["vocab_size"]
    if sizes["n_embd"] % sizes["n_head"]:
        raise DataError(f"{cfg_path}: n_embd={sizes['n_embd']} is not a multiple of n_head={sizes['n_head']}")
    config = GPTConfig(
        block_size=sizes["block_size"],
        vocab_size=max(vocab_size or n_vocab, n_vocab),
        n_layer=sizes["n_layer"],
        n_head=sizes["n_head"],
        n_embd=sizes["n_embd"],
        dropout=dropout,
        bias=True,
    )
    try:
        sd_hf = _read_hf_state_dict(folder)
    except (OSError, ImportError):
        raise
    except Exception as e:  # a truncated or foreign weights file
        raise DataError(f"{folder}: the GPT-2 weights could not be read ({type(e).__name__}: "
                        f"{str(e).split('.')[0][:160]})") from None
    if not isinstance(sd_hf, dict) or not all(isinstance(w, torch.Tensor) for w in sd_hf.values()):
        raise DataError(f"{folder}: the weights file should hold a dict of tensors (a state dict)")
    model = GPT(config)
    sd = model.state_dict()
    loaded = set()
    for key, w in sd_hf.items():
        name = key[len("transformer."):] if key.startswith("transformer.") else key
        if name.endswith((".attn.bias", ".attn.masked_bias")):
            continue  # causal-mask buffers, not weights
        if name == "lm_head.weight":
            continue  # tied to wte
        ours = "transformer." + name
        if ours not in sd:
            raise DataError(f"{folder}: unknown key {key!r} in the checkpoint (not a GPT-2 weight)")
        if name.endswith(_CONV1D):
            w = w.t()
        if ours == "transformer.wte.weight" and w.shape[0] < sd[ours].shape[0]:
            w = torch.cat([w, w.new_zeros(sd[ours].shape[0] - w.shape[0], w.shape[1])])
        if w.shape != sd[ours].shape:
            raise DataError(f"{folder}: {key!r} has shape {tuple(w.shape)}, expected "
                             f"{tuple(sd[ours].shape)} for the config in config.json")
        with torch.no_grad():
            sd[ours].copy_(w)
        loaded.add(ours)
    missing = [k for k in sd if k not in loaded and k != "lm_head.weight"]
    if missing:
        raise DataError(f"{folder}: checkpoint lacks {len(missing)} weights, e.g. {missing[:3]}")
    return model
