"""Metrics: one JSON line per record in RUN/metrics.jsonl, mirrored to TensorBoard or W&B if asked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tinyminds.errors import UserError
from tinyminds.files import to_json


class MetricsLog:
    """Appends records to ``metrics.jsonl``; only the main process writes."""

    def __init__(
        self,
        run_dir: Path,
        *,
        enabled: bool,
        tensorboard: bool,
        wandb: bool,
        wandb_project: str,
        config: dict[str, Any],
    ) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.enabled = enabled
        self._tensorboard = None
        self._wandb = None
        if not enabled:
            return
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise UserError(
                    "tensorboard=true needs the tensorboard package: pip install tensorboard"
                ) from None
            self._tensorboard = SummaryWriter(str(run_dir / "tensorboard"))
        if wandb:
            try:
                import wandb as wandb_module
            except ImportError:
                raise UserError("wandb=true needs the wandb package: pip install wandb") from None
            self._wandb = wandb_module.init(project=wandb_project, config=config, dir=str(run_dir))

    def truncate_after(self, step: int) -> None:
        """Drop records past ``step`` (a resumed run logs those steps again)."""
        if not self.enabled or not self.path.exists():
            return
        kept = [
            line
            for line in self.path.read_text(encoding="utf-8").splitlines()
            if line.strip() and _complete(line) and json.loads(line)["step"] <= step
        ]
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        tmp.replace(self.path)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(to_json(record, indent=None) + "\n")
        scalars = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
        kind = record.get("kind", "train")
        if self._tensorboard is not None:
            for key, value in scalars.items():
                self._tensorboard.add_scalar(f"{kind}/{key}", value, record["step"])
        if self._wandb is not None:
            self._wandb.log({f"{kind}/{k}": v for k, v in scalars.items()}, step=record["step"])

    def close(self) -> None:
        if self._tensorboard is not None:
            self._tensorboard.close()
        if self._wandb is not None:
            self._wandb.finish()


def _complete(line: str) -> bool:
    """A process killed mid-write can leave a partial last line: skip it."""
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return False
    return True


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """All complete records of a run's metrics.jsonl."""
    path = run_dir / "metrics.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return [json.loads(line) for line in lines if line.strip() and _complete(line)]
