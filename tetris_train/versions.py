"""The versions of the packages a run or a checkpoint was made with."""

from __future__ import annotations

import platform


def package_versions() -> dict[str, str]:
    import gymnasium
    import numpy
    import stable_baselines3
    import torch

    from . import __version__

    return {
        "tetris_train": __version__,
        "stable_baselines3": stable_baselines3.__version__,
        "torch": torch.__version__,
        "gymnasium": gymnasium.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }
