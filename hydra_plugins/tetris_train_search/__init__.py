"""Hydra finds sweepers in the ``hydra_plugins`` namespace: this one registers ``hydra/sweeper=optuna_search``
and forwards to :mod:`tetris_train.search`, where the search is implemented."""

from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.plugins.sweeper import Sweeper

from tetris_train.search import OptunaSearchConfig, OptunaSearchImpl

ConfigStore.instance().store(
    group="hydra/sweeper", name="optuna_search", node=OptunaSearchConfig, provider="tetris_train"
)


class OptunaSearch(Sweeper):
    """An Optuna search whose trials report their evaluations to a stored study and can be pruned."""

    def __init__(self, **settings: Any):
        self.search = OptunaSearchImpl(**settings)

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        self.search.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list) -> Any:
        return self.search.sweep(arguments)
