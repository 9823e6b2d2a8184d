"""Corruption and objectives: pure tensor functions, no Lightning."""

from ldae.diffusion.noise import keyed_normal, keyed_uniform_int
from ldae.diffusion.objectives import Objective
from ldae.diffusion.schedules import NoiseSchedule, build_schedule

__all__ = ["NoiseSchedule", "build_schedule", "Objective", "keyed_normal", "keyed_uniform_int"]
