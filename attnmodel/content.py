"""Item content features (categorical tags and title tokens) for the model's content embeddings."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ItemContent:
    tags: np.ndarray  # (n_items + 1, max_tags) int64, 0 = empty slot
    tokens: np.ndarray  # (n_items + 1, max_tokens) int64, 0 = empty slot
    tag_vocab: list  # tag_vocab[i] is the name of tag id i (index 0 = "<pad>")
    token_vocab: list

    def config_kwargs(self) -> dict:
        """The ModelConfig fields that size the content embeddings."""
        return {"n_tags": len(self.tag_vocab), "max_tags": self.tags.shape[1],
                "n_tokens": len(self.token_vocab), "max_tokens": self.tokens.shape[1]}


def _pack(lists: list, width: int) -> np.ndarray:
    out = np.zeros((len(lists), max(width, 1)), dtype=np.int64)
    for i, ids in enumerate(lists):
        ids = ids[:width]
        out[i, : len(ids)] = ids
    return out


def build_content(item_tags: dict, item_titles: dict, n_items: int, min_token_count: int = 2, max_tokens: int = 8) -> ItemContent:
    """item_tags: {item_idx: [tag, ...]}, item_titles: {item_idx: title}; tokens seen fewer than min_token_count times are dropped."""
    tag_vocab = ["<pad>"] + sorted({t for ts in item_tags.values() for t in ts})
    tag_id = {t: i for i, t in enumerate(tag_vocab)}
    toks = {i: re.findall(r"[a-z0-9]+", title.lower()) for i, title in item_titles.items()}
    counts: dict = {}
    for ws in toks.values():
        for w in set(ws):
            counts[w] = counts.get(w, 0) + 1
    token_vocab = ["<pad>"] + sorted(w for w, c in counts.items() if c >= min_token_count)
    token_id = {w: i for i, w in enumerate(token_vocab)}
    tag_lists, tok_lists = [[] for _ in range(n_items + 1)], [[] for _ in range(n_items + 1)]
    for i, ts in item_tags.items():
        if 1 <= i <= n_items:
            tag_lists[i] = [tag_id[t] for t in ts]
    for i, ws in toks.items():
        if 1 <= i <= n_items:
            tok_lists[i] = list(dict.fromkeys(token_id[w] for w in ws if w in token_id))
    width = max((len(t) for t in tag_lists), default=1)
    return ItemContent(_pack(tag_lists, width), _pack(tok_lists, max_tokens), tag_vocab, token_vocab)


# SASRec's ML-1M item ids -> MovieLens movie ids (see ../shared/data/README.md); read from beside movies.dat
ML1M_MAPPING_FILE = "ml1m_sasrec_with_orig_ids_partial_ts.parquet"


def mapping_beside(movies_path: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(movies_path)), ML1M_MAPPING_FILE)


def load_movielens_content(movies_path: str, mapping_path: str, n_items: int) -> ItemContent:
    """ML-1M genres + release decade (tags) and title words (tokens), joined sas_item -> orig_movie."""
    import pyarrow.parquet as pq

    m = pq.read_table(mapping_path, columns=["sas_item", "orig_movie"])
    sas = m.column("sas_item").to_numpy()
    orig = m.column("orig_movie").to_numpy()
    pairs = np.unique(np.stack([sas, orig], 1), axis=0)
    orig_to_item = {int(o): int(s) for s, o in pairs}
    tags, titles = {}, {}
    with open(movies_path, encoding="iso-8859-1") as f:
        for line in f:
            parts = line.rstrip("\n").split("::")
            if len(parts) != 3 or int(parts[0]) not in orig_to_item:
                continue
            item = orig_to_item[int(parts[0])]
            title, genres = parts[1], parts[2]
            year = re.search(r"\((\d{4})\)\s*$", title)
            tags[item] = [f"genre:{g}" for g in genres.split("|") if g] + ([f"decade:{year.group(1)[:3]}0s"] if year else [])
            titles[item] = re.sub(r"\(\d{4}\)\s*$", "", title)
    return build_content(tags, titles, n_items)
