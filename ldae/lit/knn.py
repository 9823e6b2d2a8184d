"""Weighted kNN classifier on frozen features: a cheap monitor of a representation (InstDisc / DINO style).

Cosine similarity to every training feature, the k nearest vote for their class with weight exp(s / T)
(T = 0.07, the usual temperature), and the class with the largest total wins. No training, no lr.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


@torch.no_grad()
def knn_predict(train_f: torch.Tensor, train_y: torch.Tensor, query_f: torch.Tensor, num_classes: int,
                k: int = 20, temperature: float = 0.07, chunk: int = 1024) -> torch.Tensor:
    """train_f (N, D), train_y (N,), query_f (M, D) -> predicted classes (M,)."""
    train_f = F.normalize(train_f.float(), dim=1)
    k = min(k, train_f.shape[0])
    preds = []
    for q in F.normalize(query_f.float(), dim=1).split(chunk):
        sim, idx = (q @ train_f.T).topk(k, dim=1)  # (m, k) cosine similarities of the k nearest
        votes = torch.zeros(q.shape[0], num_classes, dtype=sim.dtype)  # (m, C)
        votes.scatter_add_(1, train_y[idx], (sim / temperature).exp())
        preds.append(votes.argmax(1))
    return torch.cat(preds)


def knn_top1(train_f, train_y, val_f, val_y, num_classes: int, k: int = 20, temperature: float = 0.07) -> float:
    """Top-1 (%) of the weighted kNN classifier on the validation features."""
    pred = knn_predict(train_f, train_y, val_f, num_classes, k, temperature)
    return 100.0 * float((pred == val_y).double().mean())
