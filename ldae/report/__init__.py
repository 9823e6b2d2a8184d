"""Experiment reports built from run folders: statistics over seeds, the claims suite (PAPER.md section 3)."""
