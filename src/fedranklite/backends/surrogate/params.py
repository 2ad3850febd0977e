"""Parameters of the surrogate backend (`engine.backend: surrogate`), checked when the config loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from pydantic import Field

from fedranklite.backends.registry import BACKENDS, BackendParams
from fedranklite.core.registry import Section


class SurrogateConfig(Section):
    """engine.backend: surrogate (what-if simulation, see src/fedranklite/backends/surrogate/)."""

    calibration: Optional[str] = None  # surrogate.json from `fedranklite calibrate <results dir>`
    rows_per_client: Optional[int] = Field(None, ge=1)  # default: the sizes of the config's real data partition


class SurrogateParams(BackendParams):
    surrogate: SurrogateConfig = SurrogateConfig()

    def problems(self, cfg: Any) -> list[tuple[str, str]]:
        calibration = self.surrogate.calibration
        if not calibration:
            return [
                (
                    "surrogate.calibration",
                    "required for engine.backend: surrogate (a surrogate.json written "
                    "by `fedranklite calibrate <results dir of a real run>`)",
                )
            ]
        if not (Path(calibration).is_file() or (Path(calibration) / "surrogate.json").is_file()):
            return [
                (
                    "surrogate.calibration",
                    f"not found: {calibration} (make it with `fedranklite calibrate <results dir of a real run>`)",
                )
            ]
        return []


BACKENDS.add("surrogate", "fedranklite.backends.surrogate.engine:build_surrogate_engine", SurrogateParams)
