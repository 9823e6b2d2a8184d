"""A CSV logger that keeps a run's curve across a resume: rows before the resume stay, no step appears twice.

Lightning's CSV writer deletes `metrics.csv` when it finds one in its folder, so a resumed run used to start
its curve afresh. This writer keeps the old file and, at its first save, drops only the old rows that the
resumed run logs again (steps at or after its first row: the killed attempt's steps past the checkpoint,
or a whole stage that restarts from step 0, such as the probe). Rows are written at every step, so the
row of the step a checkpoint holds is on disk before the next step starts.
"""

from __future__ import annotations

import csv
import io

from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment

from ldae.utils.io import atomic_write_text


def _step(row: dict) -> int | None:
    try:
        return int(float(row.get("step") or ""))
    except (TypeError, ValueError):
        return None  # a torn last line of a killed write


class AppendingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        self._old_keys: list[str] = []
        self._old_rows: list[dict] | None = None
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                reader = csv.DictReader(f)
                self._old_rows = [r for r in reader if _step(r) is not None]
                self._old_keys = list(reader.fieldnames or [])

    def save(self) -> None:
        if self._old_rows is not None and self.metrics:
            first = min(int(m["step"]) for m in self.metrics)
            kept = [{k: v for k, v in r.items() if k is not None and v not in (None, "")}
                    for r in self._old_rows if _step(r) < first]
            self.metrics_keys = sorted(set(self._old_keys) | set().union(*self.metrics) | set(self.metrics_keys))
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(kept)
            atomic_write_text(self.metrics_file_path, buf.getvalue())
            self._old_rows = None  # from here on Lightning's append (and its header rewrite on new keys)
        super().save()


class AppendingCSVLogger(CSVLogger):
    def __init__(self, save_dir, name: str = "csv", version: str | None = None):
        super().__init__(save_dir, name=name, version=version, flush_logs_every_n_steps=1)

    @property
    @rank_zero_experiment
    def experiment(self) -> AppendingWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingWriter(log_dir=self.log_dir)
        return self._experiment
