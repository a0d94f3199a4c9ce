"""``python -m harness``: one training run, or a sweep with ``-m`` (see conf/config.yaml)."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from harness.config import register_configs
from harness.sweep import job

register_configs()


def config_dir() -> str:
    """The primary config directory: ``harness/conf`` in an installed wheel (the build ships the repository's
    ``conf/`` and ``experiments/`` there), else the repository's own ``conf/`` (a source checkout or an
    editable install). Absolute, so Hydra finds it whether the harness runs as ``python -m harness`` or as
    the ``harness`` script, from any directory."""
    package = Path(__file__).resolve().parent
    shipped = package / "conf"
    return str(shipped if shipped.is_dir() else package.parent / "conf")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def main(cfg: DictConfig) -> float:
    return job(cfg)


def _terminate(signum: int, frame: object) -> None:
    # A scheduler or `kill` stops a sweep with SIGTERM: treat it as Ctrl-C, so runs end KILLED.
    raise KeyboardInterrupt(f"signal {signum}")


def cli() -> None:
    """Run Hydra. Ctrl-C (SIGINT) or SIGTERM: the running job ends KILLED, then (as the process exits, see
    ``harness.sweep.Sweep.watch``) a sweep's parent and any child left RUNNING by a killed worker; exit status 130.
    """
    signal.signal(signal.SIGTERM, _terminate)
    try:
        main()
    except KeyboardInterrupt:
        print("harness: interrupted; ending unfinished runs KILLED", file=sys.stderr)
        raise SystemExit(130) from None


if __name__ == "__main__":
    cli()
