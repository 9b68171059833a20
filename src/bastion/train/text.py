"""Text for models: a tokenizer trained inside the job, and a small transformer classifier.

Nothing comes from a model hub. The tokenizer is a Hugging Face ``tokenizers`` word-level
tokenizer whose vocabulary the job learns from the training split's texts only (a word that
appears only in held-out rows is not in it: the vocabulary would otherwise tell which rows
were held out), under no network; it is kept as JSON in the model's preprocessing record
(``model.json``), so it is sealed and signed with the weights and serving reads exactly it.
Its vocabulary is chosen in Python, not by the library's WordPiece/BPE trainers: those
returned a different vocabulary on every call for the same texts, and a resumed run must
rebuild the very tokenizer it started with.

Every encoding starts with ``[BOS]`` (an empty text still has one token to attend to) and
is truncated and padded to ``max_length`` with ``[PAD]`` (id 0), which attention and pooling
ignore.

The transformer is built from the layers Opacus computes per-sample gradients for
(``Embedding``, ``Linear``, ``LayerNorm``); attention is ``scaled_dot_product_attention``
over those projections, which mixes positions, never rows, so DP-SGD's per-sample clipping
(ghost clipping by default) holds.
"""

from __future__ import annotations

import functools
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional

from bastion.errors import InvalidInput

__all__ = [
    "PAD_ID",
    "SPECIAL_TOKENS",
    "TextClassifier",
    "TextGenerator",
    "encode",
    "next_token_pairs",
    "render",
    "token_strings",
    "train_tokenizer",
]

#: Special tokens, in id order: padding is 0 (the models rely on it), unknown is 1.
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[BOS]", "[EOS]")
PAD_ID = 0
#: The largest tokenizer a model package may carry (its JSON, in model.json).
MAX_TOKENIZER_BYTES = 8 << 20


def train_tokenizer(texts: Sequence[str], *, vocab_size: int, min_rows: int) -> str:
    """A word-level tokenizer learnt from ``texts``, as JSON.

    Text is NFD-normalised, lower-cased and stripped of accents, split at whitespace and
    punctuation, digits one by one. The vocabulary is the special tokens and the
    ``vocab_size`` - 4 words most rows hold, among those at least ``min_rows`` rows hold
    (ties in alphabetical order): the same texts give the same tokenizer, and a word only a
    few rows hold (a rare surname) never enters a vocabulary that ships with the model;
    it reads as ``[UNK]``.
    """
    from tokenizers import Tokenizer, normalizers, pre_tokenizers  # noqa: PLC0415
    from tokenizers.models import WordLevel  # noqa: PLC0415
    from tokenizers.processors import TemplateProcessing  # noqa: PLC0415

    if not texts:
        raise InvalidInput("no training texts to learn a tokenizer from")
    normalizer = normalizers.Sequence(
        [normalizers.NFD(), normalizers.Lowercase(), normalizers.StripAccents()]
    )
    splitter = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.Digits(individual_digits=True)]
    )
    rows: Counter[str] = Counter()
    for text in texts:
        words = splitter.pre_tokenize_str(normalizer.normalize_str(text))
        rows.update({word for word, _ in words})
    common = sorted(
        (word for word, count in rows.items() if count >= min_rows and word not in SPECIAL_TOKENS),
        key=lambda word: (-rows[word], word),
    )[: vocab_size - len(SPECIAL_TOKENS)]
    vocabulary = {token: index for index, token in enumerate((*SPECIAL_TOKENS, *common))}
    tokenizer = Tokenizer(WordLevel(vocabulary, unk_token=SPECIAL_TOKENS[1]))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = splitter
    bos = SPECIAL_TOKENS.index("[BOS]")
    tokenizer.post_processor = TemplateProcessing(
        single="[BOS] $A", special_tokens=[("[BOS]", bos)]
    )
    serialized: str = tokenizer.to_str()
    if len(serialized.encode()) > MAX_TOKENIZER_BYTES:
        raise InvalidInput(
            f"the tokenizer exceeds {MAX_TOKENIZER_BYTES >> 20} MiB; lower model.vocab_size"
        )
    return serialized


@functools.lru_cache(maxsize=4)
def _loaded(serialized: str, max_length: int) -> Any:
    from tokenizers import Tokenizer  # noqa: PLC0415

    tokenizer = Tokenizer.from_str(serialized)
    tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(length=max_length, pad_id=PAD_ID, pad_token=SPECIAL_TOKENS[PAD_ID])
    return tokenizer


def encode(serialized: str, texts: Sequence[str], *, max_length: int) -> torch.Tensor:
    """Token ids of ``texts``, (rows, max_length) int64: ``[BOS]`` first, padded with 0."""
    if not texts:
        return torch.zeros((0, max_length), dtype=torch.long)
    encoded = _loaded(serialized, max_length).encode_batch(list(texts))
    return torch.tensor([item.ids for item in encoded], dtype=torch.long)


def token_strings(serialized: str, ids: Sequence[int]) -> list[str]:
    """The tokens of ``ids`` as text (special tokens left out)."""
    tokenizer = _loaded(serialized, 8)
    special = set(range(len(SPECIAL_TOKENS)))
    return [str(tokenizer.id_to_token(int(i))) for i in ids if int(i) not in special]


def render(tokens: Sequence[str]) -> tuple[str, list[int]]:
    """Tokens joined back into text, and where each starts: a space between two words,
    none next to punctuation or between two digits (``jane.doe@example.org``, ``555-0143``
    come back whole, so a span finder sees them)."""
    parts: list[str] = []
    starts: list[int] = []
    at = 0
    for index, token in enumerate(tokens):
        if index and _spaced(tokens[index - 1], token):
            parts.append(" ")
            at += 1
        starts.append(at)
        parts.append(token)
        at += len(token)
    return "".join(parts), starts


def _spaced(before: str, after: str) -> bool:
    if not (_wordlike(before, -1) and _wordlike(after, 0)):
        return False
    return not (before.isdigit() and after.isdigit())


def _wordlike(token: str, end: int) -> bool:
    """A word, a number or a placeholder (``[PHONE]``) at that end of the token."""
    placeholder = token.startswith("[") and token.endswith("]") and len(token) > 2
    return placeholder or token[end:][:1].isalnum()


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, h: torch.Tensor, keep: torch.Tensor, *, causal: bool = False) -> torch.Tensor:
        rows, length, dim = h.shape
        qkv = self.qkv(h).view(rows, length, 3, self.heads, dim // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        mask = keep[:, None, None, :]
        if causal:  # each position sees itself and those before it ([BOS] always)
            before = torch.ones(length, length, dtype=torch.bool, device=h.device).tril()
            mask = mask & before
        mixed = functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out: torch.Tensor = self.out(mixed.transpose(1, 2).reshape(rows, length, dim))
        return out


class _Block(nn.Module):
    """A pre-norm transformer encoder block."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = _Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.up = nn.Linear(dim, 4 * dim)
        self.down = nn.Linear(4 * dim, dim)

    def forward(self, h: torch.Tensor, keep: torch.Tensor, *, causal: bool = False) -> torch.Tensor:
        h = h + self.attention(self.norm1(h), keep, causal=causal)
        out: torch.Tensor = h + self.down(functional.gelu(self.up(self.norm2(h))))
        return out


class _Stack(nn.Module):
    """Token and position embeddings, ``layers`` blocks, a final norm and a linear head."""

    def __init__(
        self, *, vocab_size: int, max_length: int, dim: int, layers: int, heads: int, outputs: int
    ) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, dim)
        self.positions = nn.Embedding(max_length, dim)
        self.blocks = nn.ModuleList(_Block(dim, heads) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, outputs)
        _small_weights(self)

    def encoded(self, ids: torch.Tensor, *, causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Every position's final hidden state, and which positions hold a token."""
        ids = ids.long()
        keep = ids != PAD_ID
        rows, length = ids.shape
        # Contiguous: Opacus's embedding norm sampler views its input flat.
        places = torch.arange(length, device=ids.device).repeat(rows, 1)
        h = self.tokens(ids) + self.positions(places)
        for block in self.blocks:
            h = block(h, keep, causal=causal)
        out: torch.Tensor = self.norm(h)
        return out, keep


class TextClassifier(_Stack):
    """Encoder blocks, mean pooling over the text's tokens, a linear head over the classes
    (``outputs``). ``features(ids)`` is the pooled vector."""

    def features(self, ids: torch.Tensor) -> torch.Tensor:
        h, keep = self.encoded(ids, causal=False)
        weights = keep.to(h.dtype)[..., None]
        pooled: torch.Tensor = (h * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return pooled

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.features(ids))
        return out


class TextGenerator(_Stack):
    """A small decoder-only language model: the same stack with causal attention and a head
    over the vocabulary (``outputs``: the vocabulary size) at every position.
    ``forward(ids)`` gives logits as (rows, vocabulary, positions): position t predicts
    token t + 1, in the layout PyTorch's cross-entropy takes with targets of (rows,
    positions)."""

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h, _ = self.encoded(ids, causal=True)
        out: torch.Tensor = self.head(h).transpose(1, 2)
        return out


def _small_weights(model: nn.Module) -> None:
    """Small initial weights, as in BERT and GPT-2."""
    for module in model.modules():
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)


def next_token_pairs(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A language model's inputs and targets from token ids: each position predicts the next
    token; positions whose next token is padding count for nothing (-100)."""
    inputs, targets = ids[:, :-1].contiguous(), ids[:, 1:].clone()
    targets[targets == PAD_ID] = -100
    return inputs, targets


def parameters_in_millions(model: nn.Module) -> float:
    """The model's size, for the job's log."""
    return sum(math.prod(p.shape) for p in model.parameters()) / 1e6
