"""EnvConfig: every setting of the Tetris environment, with defaults and validation."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Optional

from ..validation import check, is_int, is_number

OBSERVATION_MODES = ("afterstates", "board")
RANDOMIZERS = ("bag", "uniform")
RENDER_MODES = ("ansi", "rgb_array")
MIN_SIZE = 4  # the I piece lies 4 wide and stands 4 tall
MAX_WIDTH = 32  # a row is an int64 bit mask with room for the two walls


@dataclass
class EnvConfig:
    """Settings of :class:`~tetris_train.env.TetrisEnv`.

    Reward per placement is ``piece_reward + line_rewards[lines]``; a placement that does not fit
    ends the game with reward ``-game_over_penalty``. ``randomizer``: ``bag`` deals the seven pieces
    in a shuffled bag of seven (the modern game), ``uniform`` draws each piece independently and
    uniformly (the game of the research literature, with ``preview: 0``).

    Attributes:
        width: board columns.
        height: board rows.
        preview: upcoming pieces the agent sees (0: the current piece only).
        randomizer: bag (7-bag, the modern game) or uniform (independent draws, the literature's).
        max_pieces: pieces after which a game stops (truncated).
        observation: afterstates (features of each placement's result) or board (the grid).
        hole_features: add rows_with_holes and hole_depth to the afterstate features (env=classic* sets it).
        piece_reward: reward per placed piece.
        line_rewards: reward for clearing 0, 1, 2, 3 and 4 lines at once.
        game_over_penalty: subtracted when a piece does not fit.
        render_mode: null, ansi or rgb_array.
    """

    width: int = 10
    height: int = 20
    preview: int = 1
    randomizer: str = "bag"
    max_pieces: int = 10_000
    observation: str = "afterstates"
    hole_features: bool = False
    piece_reward: float = 1.0
    line_rewards: tuple[float, ...] = (0.0, 10.0, 40.0, 90.0, 160.0)
    game_over_penalty: float = 10.0
    render_mode: Optional[str] = None

    def __post_init__(self) -> None:
        def _check(ok: bool, name: str, value: Any, allowed: str) -> None:
            check(ok, "EnvConfig", name, value, allowed)

        given = self.line_rewards
        numbers = isinstance(given, (list, tuple)) and all(is_number(v) for v in given)
        _check(
            numbers and len(given) == 5,
            "line_rewards",
            given,
            "5 numbers, the reward for clearing 0, 1, 2, 3 and 4 lines",
        )
        self.line_rewards = tuple(float(v) for v in given)
        _check(
            is_int(self.width) and MIN_SIZE <= self.width <= MAX_WIDTH,
            "width",
            self.width,
            f"an integer from {MIN_SIZE} to {MAX_WIDTH}",
        )
        _check(is_int(self.height) and self.height >= MIN_SIZE, "height", self.height, f"an integer >= {MIN_SIZE}")
        _check(is_int(self.preview) and self.preview >= 0, "preview", self.preview, "an integer >= 0")
        _check(self.randomizer in RANDOMIZERS, "randomizer", self.randomizer, f"one of {', '.join(RANDOMIZERS)}")
        _check(is_int(self.max_pieces) and self.max_pieces >= 1, "max_pieces", self.max_pieces, "an integer >= 1")
        _check(is_number(self.piece_reward), "piece_reward", self.piece_reward, "a number")
        _check(isinstance(self.hole_features, bool), "hole_features", self.hole_features, "true or false")
        _check(
            self.observation in OBSERVATION_MODES,
            "observation",
            self.observation,
            f"one of {', '.join(OBSERVATION_MODES)}",
        )
        _check(
            is_number(self.game_over_penalty) and self.game_over_penalty >= 0,
            "game_over_penalty",
            self.game_over_penalty,
            "a number >= 0 (it is subtracted)",
        )
        _check(
            self.render_mode is None or self.render_mode in RENDER_MODES,
            "render_mode",
            self.render_mode,
            f"None or one of {', '.join(RENDER_MODES)}",
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["line_rewards"] = list(self.line_rewards)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EnvConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"EnvConfig has no field {unknown[0]!r}; allowed: {', '.join(sorted(known))}")
        return cls(**data)
