"""``python -m harness``: one training run, or a sweep with ``-m`` (see conf/config.yaml)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from harness.config import register_configs
from harness.sweep import end_parent, job

register_configs()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    return job(cfg)


def cli() -> None:
    """Run Hydra; whatever happens, end a sweep's parent run with the matching status."""
    status = "FAILED"
    try:
        main()
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except SystemExit as exit_:
        status = "FINISHED" if exit_.code in (0, None) else "FAILED"
        raise
    finally:
        end_parent(status)


if __name__ == "__main__":
    cli()
