"""Lightning modules: pretraining and the linear probe."""

from ldae.lit.pretrain import PretrainModule, build_objective
from ldae.lit.probe import LinearProbe

__all__ = ["PretrainModule", "LinearProbe", "build_objective"]
