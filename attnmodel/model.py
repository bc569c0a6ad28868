"""SASRec-family sequence model: item (+ content) embeddings, causal pre-norm self-attention, dot-product scores.

Sequences are int64 tensors (B, L) of item indexes, oldest first, LEFT-padded with PADDING_IDX (0).
Positions are counted from the most recent item (the last column is position 0), so extra left
padding never changes the output of real positions.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from attnmodel.columns import PADDING_IDX

LOSSES = ("softmax", "sampled_softmax", "bce")


@dataclass(frozen=True)
class ModelConfig:
    n_items: int  # real items are 1..n_items; 0 is padding
    max_len: int = 200
    d_model: int = 64
    n_blocks: int = 2
    n_heads: int = 1
    dropout: float = 0.2
    loss: str = "softmax"
    n_negatives: int = 256  # sampled_softmax: shared uniform negatives per batch
    n_tags: int = 0  # content: size of the categorical-tag vocabulary (0 = no tags); tag id 0 is padding
    max_tags: int = 0  # content: tag slots per item
    n_tokens: int = 0  # content: size of the title-token vocabulary (0 = no tokens); token id 0 is padding
    max_tokens: int = 0  # content: token slots per item

    def __post_init__(self) -> None:
        if self.n_items < 1:
            raise ValueError(f"n_items must be >= 1, got {self.n_items}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")

    @property
    def has_content(self) -> bool:
        return self.n_tags > 0 or self.n_tokens > 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


def attention_mask(seq: torch.Tensor, dtype=torch.float32, padded: bool | None = None) -> torch.Tensor | None:
    """Additive (B, 1, L, L) mask (0 = may attend, -inf = not): causal, real keys only, plus the diagonal.

    The diagonal keeps padded query rows from having every key masked (NaN in some SDPA paths);
    real query rows never see a padded key, because left padding only precedes them.
    None when no row has padding (then attention is plainly causal). Built once per forward.
    """
    real = seq != PADDING_IDX
    if not (padded if padded is not None else bool((~real).any())):  # `padded` given: no device sync
        return None
    L = seq.shape[1]
    causal = torch.ones(L, L, dtype=torch.bool, device=seq.device).tril()
    eye = torch.eye(L, dtype=torch.bool, device=seq.device)
    allowed = (causal & real[:, None, None, :]) | eye
    return torch.zeros(allowed.shape, dtype=dtype, device=seq.device).masked_fill_(~allowed, float("-inf"))


class Block(nn.Module):
    def __init__(self, d: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads, self.dropout = n_heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.ff = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Dropout(dropout), nn.Linear(d, d))
        self.drop = nn.Dropout(dropout)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        return x.view(B, L, self.n_heads, D // self.n_heads).transpose(1, 2)

    def forward(self, x, mask, last_only: bool = False, need_weights: bool = False):
        """last_only: compute only the last position's output (inference); returns (x, weights|None)."""
        h = self.ln1(x)
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        weights = None
        if last_only:
            x, q = x[:, -1:], q[:, :, -1:]
            mask = mask[:, :, -1:] if mask is not None else None
        causal = mask is None and not last_only  # no padding in the batch: plain causal (flash path)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, dropout_p=self.dropout if self.training else 0.0)
        if need_weights:  # last query's attention over keys, averaged over heads: (B, L)
            s = (q[:, :, -1:] @ k.transpose(-1, -2)).float() / math.sqrt(q.shape[-1])
            if mask is not None:
                s = s + mask[:, :, -1:].float()
            weights = s.softmax(-1).mean(1)[:, 0]
        B, H, Lq, Dh = a.shape
        x = x + self.drop(self.out(a.transpose(1, 2).reshape(B, Lq, H * Dh)))
        x = x + self.drop(self.ff(self.ln2(x)))
        return x, weights


class SASRec(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.item_emb = nn.Embedding(cfg.n_items + 1, d, padding_idx=PADDING_IDX)
        self.pos_emb = nn.Embedding(cfg.max_len, d)
        if cfg.n_tags:
            self.tag_emb = nn.Embedding(cfg.n_tags, d, padding_idx=0)
            self.register_buffer("item_tags", torch.zeros(cfg.n_items + 1, max(cfg.max_tags, 1), dtype=torch.long))
        if cfg.n_tokens:
            self.token_emb = nn.Embedding(cfg.n_tokens, d, padding_idx=0)
            self.register_buffer("item_tokens", torch.zeros(cfg.n_items + 1, max(cfg.max_tokens, 1), dtype=torch.long))
        self.emb_drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(d, cfg.n_heads, cfg.dropout) for _ in range(cfg.n_blocks))
        self.ln_f = nn.LayerNorm(d)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        # small init: N(0, 1) * sqrt(d) embeddings barely learn (FIELD-NOTES)
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
            if isinstance(m, nn.Embedding) and m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()

    def set_content(self, tags=None, tokens=None) -> None:
        """Fill the per-item content buffers: int arrays (n_items + 1, slots), 0 = empty slot."""
        for name, arr in (("item_tags", tags), ("item_tokens", tokens)):
            if arr is not None and hasattr(self, name):
                buf = getattr(self, name)
                t = torch.as_tensor(arr, dtype=torch.long, device=buf.device)
                if t.shape[0] != buf.shape[0]:
                    raise ValueError(f"{name} has {t.shape[0]} rows, expected n_items + 1 = {buf.shape[0]}")
                setattr(self, name, t.contiguous())

    @staticmethod
    def _bag(emb: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
        n = (ids != 0).sum(-1, keepdim=True).clamp(min=1)
        return emb(ids).sum(-2) / n

    def item_vectors(self, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Item representation (id embedding + content); all items (n_items + 1, d) when ids is None."""
        w = self.item_emb.weight if ids is None else self.item_emb(ids)
        if self.cfg.n_tags:
            w = w + self._bag(self.tag_emb, self.item_tags if ids is None else self.item_tags[ids])
        if self.cfg.n_tokens:
            w = w + self._bag(self.token_emb, self.item_tokens if ids is None else self.item_tokens[ids])
        return w

    def encode(self, seq: torch.Tensor, last_only: bool = False, need_weights: bool = False, padded: bool | None = None):
        """Hidden states (B, L, d), or (B, d) with last_only; plus last-position attention (B, L) if asked.

        padded: whether any row has padding (None = look, which syncs a GPU once per call).
        """
        seq = seq[:, -self.cfg.max_len:]
        B, L = seq.shape
        valid = (seq != PADDING_IDX).unsqueeze(-1)
        pos = torch.arange(L - 1, -1, -1, device=seq.device)
        x = (self.item_vectors(seq) + self.pos_emb(pos)) * valid
        x = self.emb_drop(x)
        mask_dtype = torch.get_autocast_dtype(seq.device.type) if torch.is_autocast_enabled(seq.device.type) else x.dtype
        mask = attention_mask(seq, mask_dtype, padded)
        attn = None
        for i, blk in enumerate(self.blocks):
            last = last_only and i == len(self.blocks) - 1
            x, w = blk(x, mask, last_only=last, need_weights=need_weights)
            if need_weights:
                attn = w if attn is None else attn + w
            if not last:
                x = x * valid
        x = self.ln_f(x)
        if last_only:
            x = x[:, -1]
        return x, (attn / len(self.blocks) if need_weights else None)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        return self.encode(seq)[0]

    def score_all(self, seq: torch.Tensor) -> torch.Tensor:
        """Scores (B, n_items + 1) for the next item after each sequence; column 0 (padding) is -inf."""
        h, _ = self.encode(seq, last_only=True)
        s = (h @ self.item_vectors().T.to(h.dtype)).float()
        s[:, PADDING_IDX] = float("-inf")
        return s

    @torch.no_grad()
    def topk(self, seq: torch.Tensor, k: int, exclude: torch.Tensor | None = None):
        """(scores, items), each (B, k): best next items, never padding nor any index in exclude (B, E), 0 = none.

        By default the sequence's own items are excluded; pass an empty (B, 0) tensor to exclude nothing.
        """
        s = self.score_all(seq)
        ex = seq if exclude is None else exclude
        if ex.numel():
            s.scatter_(1, ex.long(), float("-inf"))
        s[:, PADDING_IDX] = float("-inf")
        k = min(k, self.cfg.n_items)
        v, i = s.topk(k, dim=1)
        return v, i.masked_fill(v == float("-inf"), PADDING_IDX)  # 0 = fewer than k candidates left

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        """Next-item loss on every position: batch (B, L + 1) left-padded; input [:, :-1], target [:, 1:]."""
        inp, tgt = batch[:, :-1], batch[:, 1:]
        h = self.forward(inp)
        keep = (tgt != PADDING_IDX) & (inp != PADDING_IDX)
        h, tgt = h[keep], tgt[keep]  # (N, d), (N,)
        if self.cfg.loss == "softmax":
            logits = (h @ self.item_vectors().T.to(h.dtype)).float()
            logits[:, PADDING_IDX] = float("-inf")
            return F.cross_entropy(logits, tgt)
        pos = (h * self.item_vectors(tgt).to(h.dtype)).sum(-1).float()
        if self.cfg.loss == "bce":
            neg_ids = torch.randint(1, self.cfg.n_items + 1, tgt.shape, device=tgt.device)
            neg = (h * self.item_vectors(neg_ids).to(h.dtype)).sum(-1).float()
            return F.binary_cross_entropy_with_logits(torch.cat([pos, neg]), torch.cat([torch.ones_like(pos), torch.zeros_like(neg)]))
        # sampled softmax with shared uniform negatives (uniform q: the log-q correction is a constant)
        neg_ids = torch.randint(1, self.cfg.n_items + 1, (self.cfg.n_negatives,), device=tgt.device)
        neg = (h @ self.item_vectors(neg_ids).T.to(h.dtype)).float()
        neg = neg.masked_fill(neg_ids[None, :] == tgt[:, None], float("-inf"))
        logits = torch.cat([pos[:, None], neg], dim=1)
        return F.cross_entropy(logits, torch.zeros_like(tgt))
