"""A dataset of the user's own: grey (H, W) uint8 images of horizontal (label 0) or vertical (label 1)
stripes at a random phase and period, at 20 px (ldae converts them to 3 channels, its size and [-1, 1])."""

import torch
from torch.utils.data import Dataset


class Stripes(Dataset):
    def __init__(self, split: str, n: int = 96, size: int = 20):
        g = torch.Generator().manual_seed(0 if split == "train" else 1)
        self.labels = torch.randint(0, 2, (n,), generator=g)
        period = torch.randint(3, 7, (n,), generator=g)
        phase = torch.rand(n, generator=g) * 6.283
        r = torch.arange(size).float()
        wave = torch.sin(r[None, :] * 6.283 / period[:, None] + phase[:, None])  # (n, size)
        img = torch.where(self.labels[:, None, None] == 0, wave[:, :, None].expand(-1, -1, size),
                          wave[:, None, :].expand(-1, size, -1))  # (n, size, size)
        self.images = ((img * 0.5 + 0.5) * 255).round().to(torch.uint8)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], int(self.labels[i])
