"""Full definition of shopmind's behaviour model, all of it in this single file.

A causal transformer over one user's event sequence (the trunk) with pluggable heads. The trunk reads,
at each position: the item, the position, and optionally the event's context (its type: view, cart,
purchase, ...; the time since the previous event; its hour of day and day of week) and an item content
vector (e.g. a text embedding of the title), and produces one hidden state per position. Heads turn
hidden states into answers: this file has the next-item head (scores over the whole catalog, sharing
the item embedding table); the intent and risk heads plug in the same way (a module taking hidden states of shape (B, T, d)).

References: SASRec (Kang & McAuley 2018) for the architecture; "Turning Dross Into Gold Loss: is BERT4Rec
really better than SASRec?" (Klenitskiy & Vasilev 2023) for training it with full cross-entropy, which
beats SASRec's original binary loss by a wide margin; pre-norm blocks as in GPT-2 / nanoGPT.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

PAD = 0  # item index 0 is padding; real items are 1..n_items
GAP_BUCKETS = 22  # 0 unknown, 1 first event, 2 + floor(log2(1 + seconds since the previous event)) up to 21


def event_features(context: np.ndarray) -> np.ndarray:
    """One sequence's [event type code, unix seconds] rows (len, 2) -> model inputs (len, 4):
    type, gap bucket, hour of day + 1 and day of week + 1 (Monday = 1), in UTC; 0 wherever a time
    is unknown (seconds <= 0). Gaps are log-bucketed: seconds apart and weeks apart are different
    behaviour, minutes and minutes-and-a-half are not."""
    context = np.asarray(context, dtype=np.int64).reshape(-1, 2)
    seconds = context[:, 1]
    known = seconds > 0
    gap = np.diff(seconds, prepend=seconds[:1])
    buckets = 2 + np.minimum(GAP_BUCKETS - 3, np.floor(np.log2(1 + np.maximum(gap, 0))).astype(np.int64))
    if len(buckets):
        buckets[0] = 1
    buckets[1:][~(known[1:] & known[:-1])] = 0
    out = np.zeros((len(context), 4), dtype=np.int64)
    out[:, 0] = context[:, 0]
    out[:, 1] = np.where(known, buckets, 0)
    out[:, 2] = np.where(known, 1 + (seconds // 3600) % 24, 0)
    out[:, 3] = np.where(known, 1 + (seconds // 86400 + 3) % 7, 0)  # 1970-01-01 was a Thursday
    return out


@dataclass
class BehaviourConfig:
    n_items: int                  # catalog size (real items; the embedding table has n_items + 1 rows)
    max_len: int = 50             # positions the model looks back
    d_model: int = 64             # width of embeddings and hidden states
    n_layers: int = 2
    n_heads: int = 2
    mlp_ratio: int = 4            # hidden width of the feed-forward block, in multiples of d_model
    dropout: float = 0.2
    n_event_types: int = 16       # 0 = padding / unknown
    n_time_buckets: int = 0       # log-spaced buckets of the gap to the previous event; 0 turns it off
    calendar: bool = False        # hour-of-day and day-of-week embeddings of each event
    content_dim: int = 0          # size of optional per-item content vectors; 0 turns it off
    tied_output: bool = True      # score items with the input item vectors; False gives the head its own
                                  # tables (nn.Embedding), which DP-SGD's ghost clipping needs


class CausalSelfAttention(nn.Module):
    def __init__(self, config: BehaviourConfig):
        super().__init__()
        assert config.d_model % config.n_heads == 0, "d_model must be a multiple of n_heads"
        self.n_heads = config.n_heads
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.proj = nn.Linear(config.d_model, config.d_model)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        """(B, T, C) -> (B, T, C); last_only: the newest position's output alone, (B, 1, C), which
        still attends to every position but computes no query for the others."""
        B, T, C = x.shape
        if last_only:
            q = F.linear(x[:, -1:], self.qkv.weight[:C], self.qkv.bias[:C])
            k, v = F.linear(x, self.qkv.weight[C:], self.qkv.bias[C:]).split(C, dim=2)
            mask = mask[..., -1:, :]
        else:
            q, k, v = self.qkv(x).split(C, dim=2)
        Tq = q.shape[1]
        q = q.view(B, Tq, self.n_heads, C // self.n_heads).transpose(1, 2)  # (B, nh, Tq, hs)
        k = k.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)
        v = v.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, Tq, C)
        return self.resid_dropout(self.proj(y))


class MLP(nn.Module):
    def __init__(self, config: BehaviourConfig):
        super().__init__()
        self.fc = nn.Linear(config.d_model, config.mlp_ratio * config.d_model)
        self.proj = nn.Linear(config.mlp_ratio * config.d_model, config.d_model)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class Block(nn.Module):
    def __init__(self, config: BehaviourConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.d_model)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, last_only: bool = False) -> torch.Tensor:
        x = (x[:, -1:] if last_only else x) + self.attn(self.ln_1(x), mask, last_only)
        return x + self.mlp(self.ln_2(x))


class BehaviourTrunk(nn.Module):
    """Event sequence -> hidden state per position. Shared by every head."""

    def __init__(self, config: BehaviourConfig):
        super().__init__()
        self.config = config
        d = config.d_model
        self.item_emb = nn.Embedding(config.n_items + 1, d, padding_idx=PAD)
        self.type_emb = nn.Embedding(config.n_event_types, d, padding_idx=0)
        self.pos_emb = nn.Embedding(config.max_len, d)
        self.time_emb = nn.Embedding(config.n_time_buckets, d, padding_idx=0) if config.n_time_buckets else None
        self.hour_emb = nn.Embedding(25, d, padding_idx=0) if config.calendar else None
        self.weekday_emb = nn.Embedding(8, d, padding_idx=0) if config.calendar else None
        self.content_proj = nn.Linear(config.content_dim, d, bias=False) if config.content_dim else None
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layers)])
        self.ln_f = nn.LayerNorm(d)
        # Frozen content vectors per item (row 0 = padding); set with set_content().
        self.register_buffer("content", torch.zeros(config.n_items + 1, config.content_dim) if config.content_dim
                             else torch.zeros(0), persistent=True)

    def set_content(self, vectors: torch.Tensor) -> None:
        assert vectors.shape == (self.config.n_items, self.config.content_dim), "one content vector per item"
        self.content[1:] = vectors

    def item_vectors(self) -> torch.Tensor:
        """Item representations used by the next-item head (n_items + 1, d): id plus content."""
        weight = self.item_emb.weight
        if self.content_proj is not None:
            weight = weight + self.content_proj(self.content)
        return weight

    def embed_items(self, items: torch.Tensor) -> torch.Tensor:
        """item_vectors()[items] without projecting the content of the whole catalog."""
        x = self.item_emb(items)
        if self.content_proj is not None:
            x = x + self.content_proj(self.content[items])
        return x

    def forward(self, items: torch.Tensor, context: torch.Tensor | None = None,
                last_only: bool = False) -> torch.Tensor:
        """items (B, T) left-padded; context (B, T, 4) from event_features() or None -> (B, T, d).
        last_only: only the newest position's state, (B, 1, d): the last block then computes keys and
        values for every position but attention and MLP for one (serving needs nothing else)."""
        B, T = items.shape
        assert T <= self.config.max_len, f"sequence of {T} positions, model takes at most {self.config.max_len}"
        x = self.embed_items(items) * math.sqrt(self.config.d_model)         # (B, T, d)
        # Positions count back from the newest event, so a batch trimmed to its longest sequence
        # (left padding removed) gives every event the same position embedding as at full length.
        positions = torch.arange(self.config.max_len - T, self.config.max_len, device=items.device)
        x = x + self.pos_emb(positions.expand(B, T).contiguous())  # batched: per-example gradients see one row each
        if context is not None:
            x = x + self.type_emb(context[..., 0])
            if self.time_emb is not None:
                x = x + self.time_emb(context[..., 1])
            if self.hour_emb is not None:
                x = x + self.hour_emb(context[..., 2]) + self.weekday_emb(context[..., 3])
        x = self.drop(x)
        valid = items != PAD                                                 # (B, T)
        causal = torch.ones(T, T, dtype=torch.bool, device=items.device).tril()
        # A position sees earlier real events and always itself (so padded rows never attend to nothing).
        mask = (causal & valid[:, None, :]) | torch.eye(T, dtype=torch.bool, device=items.device)
        mask = mask[:, None, :, :]                                           # (B, 1, T, T)
        for n, block in enumerate(self.blocks):
            x = block(x, mask, last_only and n == len(self.blocks) - 1)
        return self.ln_f(x)


class NextItemHead(nn.Module):
    """Scores every catalog item for the next event: a dot product with each item's output vector plus
    a per-item bias. Tied (default): the output vectors are the trunk's item vectors, so the head owns
    only the bias. Untied: the head owns its own vector and bias tables as nn.Embedding, so DP-SGD
    can clip per-example gradients of a sampled softmax cheaply (see privacy/dp_training.py)."""

    def __init__(self, trunk: BehaviourTrunk):
        super().__init__()
        config = trunk.config
        # A reference, not a submodule: the trunk's parameters belong to the trunk alone, so each
        # appears once in state_dict() and DP-SGD does not mistake the shared table for tying.
        object.__setattr__(self, "trunk", trunk)
        if config.tied_output:
            self.bias = nn.Parameter(torch.zeros(config.n_items + 1))
        else:
            self.out_vectors = nn.Embedding(config.n_items + 1, config.d_model, padding_idx=PAD)
            self.out_bias = nn.Embedding(config.n_items + 1, 1, padding_idx=PAD)
            # untied with content: the output side reads the same frozen content through its own projection
            self.out_content = nn.Linear(config.content_dim, config.d_model, bias=False) if config.content_dim else None

    def _untied_vectors(self, items: torch.Tensor) -> torch.Tensor:
        vectors = self.out_vectors(items)
        if self.out_content is not None:
            vectors = vectors + self.out_content(self.trunk.content[items])
        return vectors

    def output_vectors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(n_items + 1, d) vectors and (n_items + 1,) biases that score items; row 0 is padding."""
        if self.trunk.config.tied_output:
            return self.trunk.item_vectors(), self.bias
        vectors = self.out_vectors.weight
        if self.out_content is not None:
            vectors = vectors + self.out_content(self.trunk.content)
        return vectors, self.out_bias.weight[:, 0]

    def score_pairs(self, hidden: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """hidden (..., d), items (...) -> the score of each position's own item (...)."""
        if self.trunk.config.tied_output:
            return (hidden * self.trunk.embed_items(items)).sum(-1) + self.bias[items]
        return (hidden * self._untied_vectors(items)).sum(-1) + self.out_bias(items)[..., 0]

    def sampled_logits(self, hidden: torch.Tensor, targets: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
        """hidden (B, T, d), targets (B, T), negatives (B, K) -> logits (B, T, 1 + K), the target first.
        Negatives are looked up per example (B, K) so per-example gradients stay per example; a negative
        equal to the target is masked out."""
        T = targets.shape[1]
        both = torch.cat([targets, negatives], dim=1)  # one lookup per table: DP-SGD's per-example
        if self.trunk.config.tied_output:              # norms need each layer called once per step
            vectors, bias = self.trunk.embed_items(both), self.bias[both]
        else:
            vectors, bias = self._untied_vectors(both), self.out_bias(both)[..., 0]
        pos = (hidden * vectors[:, :T]).sum(-1, keepdim=True) + bias[:, :T, None]  # (B, T, 1)
        neg = torch.einsum("btd,bkd->btk", hidden, vectors[:, T:]) + bias[:, None, T:]  # (B, T, K)
        neg = neg.masked_fill(negatives[:, None, :] == targets[..., None], float("-inf"))
        return torch.cat([pos, neg], dim=-1)

    def forward(self, hidden: torch.Tensor, candidates: torch.Tensor | None = None) -> torch.Tensor:
        """hidden (..., d) -> logits (..., n_items) over items 1..n_items, or (..., C) over `candidates`."""
        vectors, bias = self.output_vectors()
        if candidates is None:
            return hidden @ vectors[1:].T + bias[1:]
        if self.trunk.config.tied_output:
            return hidden @ self.trunk.embed_items(candidates).T + bias[candidates]
        return hidden @ vectors[candidates].T + bias[candidates]


class BehaviourModel(nn.Module):
    """Trunk plus heads. `heads` is a ModuleDict so later issues add 'intent' or 'risk' beside 'next_item'."""

    def __init__(self, config: BehaviourConfig):
        super().__init__()
        self.config = config
        self.trunk = BehaviourTrunk(config)
        self.heads = nn.ModuleDict({"next_item": NextItemHead(self.trunk)})
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()

    def next_item_loss(self, items: torch.Tensor, targets: torch.Tensor, context: torch.Tensor | None = None,
                       n_negatives: int = 0, label_smoothing: float = 0.0) -> torch.Tensor:
        """Cross-entropy of the next item at every real position.

        n_negatives = 0: full softmax over the catalog. Otherwise sampled softmax: the target against
        `n_negatives` items drawn uniformly and shared by the batch (cheaper for very large catalogs)."""
        hidden = self.trunk(items, context)                                  # (B, T, d)
        keep = targets != PAD
        h, y = hidden[keep], targets[keep]                                   # (N, d), (N,)
        head = self.heads["next_item"]
        if n_negatives <= 0:
            return F.cross_entropy(head(h), y - 1, label_smoothing=label_smoothing)
        negatives = torch.randint(1, self.config.n_items + 1, (n_negatives,), device=items.device)
        pos = head.score_pairs(h, y)[:, None]                                # (N, 1)
        neg = head(h, negatives)                                             # (N, n_negatives)
        neg = neg.masked_fill(negatives[None, :] == y[:, None], float("-inf"))  # a sampled target is no negative
        logits = torch.cat([pos, neg], dim=1)
        return F.cross_entropy(logits, torch.zeros(len(y), dtype=torch.long, device=items.device))

    @torch.no_grad()
    def last_hidden(self, items: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """The state after the last event of each (left-padded) sequence: (B, d). The user's 'state'."""
        return self.trunk(items, context, last_only=True)[:, -1, :]

    @torch.no_grad()
    def next_item_scores(self, items: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.heads["next_item"](self.last_hidden(items, context))
