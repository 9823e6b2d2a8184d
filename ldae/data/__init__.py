"""Data: datasets that yield (image, label, index) and the Lightning datamodule."""

from ldae.data.datamodule import LDAEDataModule
from ldae.data.datasets import DATASETS, DataError, build_dataset, data_fingerprint

__all__ = ["LDAEDataModule", "build_dataset", "data_fingerprint", "DataError", "DATASETS"]
