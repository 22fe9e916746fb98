"""RLlib callback that logs predator–prey episode statistics (capture rate, first capture)."""

from __future__ import annotations

from typing import Any

from ray.rllib.callbacks.callbacks import RLlibCallback

from bioflux.rollout import capture_rate


class EpisodeStatsCallback(RLlibCallback):
    """Logs the env's end-of-episode summary (``infos[agent]["episode"]``) as custom metrics."""

    def on_episode_end(self, *, episode: Any, metrics_logger: Any = None, **kwargs: Any) -> None:
        stats = None
        for info in episode.get_infos(-1).values():
            stats = info.get("episode") if isinstance(info, dict) else None
            if stats:
                break
        if not stats or metrics_logger is None:
            return
        rate = float(capture_rate(stats["captures"], stats["prey_total"]))
        metrics_logger.log_value("capture_rate", rate, reduce="mean")
        metrics_logger.log_value("captures", stats["captures"], reduce="mean")
        if stats["first_capture_step"] is not None:
            metrics_logger.log_value(
                "first_capture_step", stats["first_capture_step"], reduce="mean"
            )
