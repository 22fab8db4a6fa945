"""Checkpoint cost of the default run: training stall, bytes written and disk, this format beside the
previous one (pickled, the whole buffer rewritten each time), measured in one run.

    python benchmarks/checkpoints.py                  # the default run's schedule: 500,000 steps
    python benchmarks/checkpoints.py --steps 100000   # shorter

The default agent's replay buffer is filled with real transitions (Dellacherie's player with 30 %
random moves, games of the default env) at the speed of the engine rather than of training, and
checkpointed exactly as a run's CheckpointStore does: a periodic checkpoint every 10,000 steps
(the newest 2 kept), ``best`` at the evaluations of 25k, 50k, 75k and 100k steps (a typical run's
best comes early; later evaluations do not beat it) and ``final`` at the end. The previous format is
written at every fifth checkpoint (its size grows linearly with the filled buffer, so the others
are interpolated). At the full buffer, ``--rounds`` interleaved rounds of 10,000 more steps time
both formats' stall, and the loading of each.
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tetris_train import TetrisAgent, TrainingConfig  # noqa: E402
from tetris_train.env import make_env  # noqa: E402
from tetris_train.players import HeuristicPlayer  # noqa: E402
from tetris_train.run_folder import BEST, FINAL, CheckpointStore  # noqa: E402

EVERY = 10_000
BEST_AT = (25_000, 50_000, 75_000, 100_000)
SEARCH_TRIALS = 30


def written_chars() -> int:
    """Bytes this process has passed to write() so far (linked files cost none)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("wchar:"):
            return int(line.split()[1])
    raise OSError("no /proc/self/io")


def folder_bytes(folder: Path) -> int:
    """Disk a folder takes, each hard-linked file counted once."""
    seen, total = set(), 0
    for path in folder.rglob("*"):
        if path.is_file():
            stat = path.stat()
            if (stat.st_dev, stat.st_ino) not in seen:
                seen.add((stat.st_dev, stat.st_ino))
                total += stat.st_size
    return total


class Filler:
    """Adds real transitions to the agent's replay buffer, as training would, without training."""

    def __init__(self, agent: TetrisAgent, seed: int = 0):
        self.agent, self.model = agent, agent.model
        self.env = make_env(agent.config.env)()
        self.player = HeuristicPlayer(self.env.unwrapped)
        self.rng = np.random.default_rng(seed)
        self.obs, self.info = self.env.reset(seed=seed)

    def add(self, steps: int) -> None:
        buffer, env = self.model.replay_buffer, self.env
        for _ in range(steps):
            mask = self.info["action_mask"]
            if self.rng.random() < 0.3:
                action = int(self.rng.choice(np.flatnonzero(mask)))
            else:
                action = int(self.player(self.obs[None], mask[None])[0])
            obs, reward, terminated, truncated, info = env.step(action)
            infos = [{**info, "TimeLimit.truncated": truncated}]
            buffer.add(self.obs[None], obs[None], np.array([action]), np.array([reward]), np.array([terminated]), infos)
            self.obs, self.info = env.reset() if terminated or truncated else (obs, info)
        self.model.num_timesteps += steps


def save_previous_format(agent: TetrisAgent, path: Path) -> int:
    """The checkpoint as the previous format wrote it: SB3's model.save, the pickled replay buffer
    and a pickled training state, fsynced. Returns its size."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    agent.model.save(path / "model.zip")
    agent.model.save_replay_buffer(path / "replay_buffer.pkl")
    with open(path / "training_state.pkl", "wb") as f:
        pickle.dump(agent._capture_state(), f, protocol=pickle.HIGHEST_PROTOCOL)
    for file in path.iterdir():
        with open(file, "rb") as f:
            os.fsync(f.fileno())
    return folder_bytes(path)


def load_previous_format(agent: TetrisAgent, path: Path) -> None:
    from tetris_train.afterstate import AfterstateDQN

    model = AfterstateDQN.load(path / "model.zip", env=make_env(agent.config.env)(), device="cpu")
    model.load_replay_buffer(path / "replay_buffer.pkl")
    with open(path / "training_state.pkl", "rb") as f:
        pickle.load(f)


def timed(function, *args) -> tuple[float, object]:
    started = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - started, result


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):7.3f} s (min {min(values):.3f}, max {max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=TrainingConfig().schedule.max_timesteps)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--folder", type=Path, default=None, help="where to write (default: a temporary folder)")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="ckpt-bench-", dir=args.folder))
    config = TrainingConfig()
    agent = TetrisAgent(make_env(config.env)(), config)
    filler = Filler(agent)
    store = CheckpointStore(root / "run", config.schedule.checkpoint_dir, config.schedule.keep_last)
    previous = root / "previous"
    stalls, previous_sizes, new_written = [], {}, 0
    print(
        f"default config: buffer {config.agent.buffer_size:,}, a checkpoint every {EVERY:,} steps, "
        f"{args.steps:,} steps; writing into {root}",
        flush=True,
    )
    for step in range(EVERY, args.steps + 1, EVERY):
        filler.add(EVERY)
        before = written_chars()
        seconds, _ = timed(store.save_periodic, agent)
        if step in BEST_AT:
            seconds += timed(store.save_named, agent, BEST)[0]
        stalls.append(seconds)
        new_written += written_chars() - before
        if (step // EVERY) % 5 == 0:
            previous_sizes[step] = save_previous_format(agent, previous / "checkpoint")
        if (step // EVERY) % 10 == 0:
            print(f"  step {step:>7,}: checkpoint {seconds:.3f} s", flush=True)
    before = written_chars()
    stalls[-1] += timed(store.save_named, agent, FINAL)[0]
    new_written += written_chars() - before
    run_folder = folder_bytes(root / "run")
    buffer_bytes = sum(
        (root / "run" / config.schedule.checkpoint_dir / FINAL / "replay").joinpath(name).stat().st_size
        for name in os.listdir(root / "run" / config.schedule.checkpoint_dir / FINAL / "replay")
    )

    # the previous format: sizes at every fifth checkpoint, the rest interpolated
    steps_known, sizes_known = zip(*sorted(previous_sizes.items()))
    every_step = list(range(EVERY, args.steps + 1, EVERY))
    previous_each = np.interp(every_step, steps_known, sizes_known)
    best_steps = [s for s in BEST_AT if s <= args.steps]
    previous_written = float(previous_each.sum() + np.interp(best_steps, steps_known, sizes_known).sum())
    previous_written += previous_each[-1]  # final
    kept = previous_each[-2:].sum() if len(previous_each) > 1 else previous_each[-1]
    previous_folder = float(kept + previous_each[-1] + np.interp(best_steps[-1:], steps_known, sizes_known).sum())

    # interleaved rounds at the full buffer: stall and load of each format
    new_stall, old_stall, new_load, old_load = [], [], [], []
    for _ in range(args.rounds):
        filler.add(EVERY)
        new_stall.append(timed(store.save_periodic, agent)[0])
        old_stall.append(timed(save_previous_format, agent, previous / "checkpoint")[0])
        newest = max((root / "run" / config.schedule.checkpoint_dir).glob("step_*"))
        new_load.append(timed(TetrisAgent.load_checkpoint, newest, make_env(config.env)())[0])
        old_load.append(timed(load_previous_format, agent, previous / "checkpoint")[0])

    gb = 1e9
    print()
    print(f"{'':38s}{'this format':>24s}{'previous format':>26s}{'ratio':>8s}")
    rows = [
        ("stall per checkpoint, full buffer", statistics.median(new_stall), statistics.median(old_stall), "s"),
        ("load at full buffer", statistics.median(new_load), statistics.median(old_load), "s"),
        ("bytes written during the run", new_written / gb, previous_written / gb, "GB"),
        ("finished run folder", run_folder / gb, previous_folder / gb, "GB"),
        (
            f"disk for a {SEARCH_TRIALS}-trial search",
            SEARCH_TRIALS * run_folder / gb,
            SEARCH_TRIALS * previous_folder / gb,
            "GB",
        ),
    ]
    for name, new, old, unit in rows:
        print(f"{name:38s}{new:>20.3f} {unit:2s}{old:>22.3f} {unit:2s}{new / old:>9.3f}")
    print()
    print(f"stall, {args.rounds} interleaved rounds: this format {spread(new_stall)}; previous {spread(old_stall)}")
    print(f"load,  {args.rounds} interleaved rounds: this format {spread(new_load)}; previous {spread(old_load)}")
    print(
        f"stall over the run (periodic + best + final): median {statistics.median(stalls):.3f} s, "
        f"max {max(stalls):.3f} s over {len(stalls)} checkpoints"
    )
    print(
        f"final buffer on disk (compressed chunks): {buffer_bytes / gb:.3f} GB; bytes written / that: "
        f"{new_written / buffer_bytes:.2f} (goal <= 2)"
    )
    goals = {
        "stall <= 1 s": statistics.median(new_stall) <= 1 and max(stalls) <= 1,
        "run folder <= 1.5 GB": run_folder <= 1.5 * gb,
        "written <= 2 x final buffer": new_written <= 2 * buffer_bytes,
    }
    print("goals: " + "; ".join(f"{k}: {v}" for k, v in goals.items()))
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
