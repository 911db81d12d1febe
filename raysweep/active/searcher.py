"""Ray Tune adapter: the active search as a ``ray.tune.search.Searcher``.

Why an own adapter rather than ``ray.tune.search.optuna.OptunaSearch``
(docs/decisions.md, "Active search"): OptunaSearch builds configs from an
Optuna search space, while a trial here is a whole pool config (nested
``training``/``simulated`` dicts, a run id) chosen by index; it reports every
trial Tune ends without error, an ASHA-stopped one included, as COMPLETE with
its last intermediate metric; and it cannot say "the budget is spent" (return
``Searcher.FINISHED``) or "wait for the runs in flight" (return ``None``). This
adapter does all three in ~100 lines, on the same persistent Optuna study.

Flow: ``suggest`` asks the sampler whether it has a pick (``peek``); with one,
it opens an Optuna trial (RUNNING = pending for the next picks) and returns a
copy of that pool config; ``on_trial_complete`` closes the Optuna trial with
:func:`raysweep.active.sampler.tell_result`: COMPLETE only for the trainer's
final result row (``status == "ok"``, finite ``loss``, full ``tokens``), never
on Tune's ``done`` flag, which Tune also sets on trials ASHA stops early.
At most ``batch`` trials run at once.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from ray.tune.search import Searcher

from raysweep.active.options import parse_options
from raysweep.active.sampler import ActiveSampler, ask, open_study, tell_result

STOP_REASONS = ("budget", "target_std", "exhausted", "converged")


class ActiveSearcher(Searcher):
    """Hands out pool configs chosen by :class:`ActiveSampler`; ends when the budget is spent.

    Args:
        study: the persistent Optuna study (:func:`raysweep.active.sampler.open_study`).
        sampler: its :class:`ActiveSampler`.
        pool: the trial configs, in the sampler's order.
        batch: most trials in flight at once.
        metric, mode: passed to Tune (the final validation ``loss``, minimized).
    """

    def __init__(self, study, sampler: ActiveSampler, pool: list[dict], batch: int = 4,
                 metric: str = "loss", mode: str = "min"):
        super().__init__(metric=metric, mode=mode)
        self.study = study
        self.sampler = sampler
        self.pool = pool
        self.batch = int(batch)
        self.live: dict[str, tuple[int, int]] = {}  # Tune trial id -> (Optuna trial, index)
        self.told: dict[str, str] = {}  # Tune trial id -> state told to Optuna
        self.last_reason = ""

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        # The pool defines the space; accept Tune's metric/mode if it sets them.
        self._metric = metric or self._metric
        self._mode = mode or self._mode
        return True

    def suggest(self, trial_id: str):
        if len(self.live) >= self.batch:
            return None
        prop = self.sampler.peek(self.study)
        self.last_reason = prop.reason
        if not prop.picks:
            return Searcher.FINISHED if prop.reason in STOP_REASONS else None
        trial, idx = ask(self.study, self.sampler)
        self.live[trial_id] = (trial.number, idx)
        return copy.deepcopy(self.pool[idx])

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        pass  # intermediate results are not observations

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        entry = self.live.pop(trial_id, None)
        if entry is None:
            return
        number, idx = entry
        self.told[trial_id] = tell_result(self.study, number, result, error,
                                          planned_tokens=self.pool[idx].get("tokens"))

    def save(self, checkpoint_path: str) -> None:
        # The history lives in the Optuna storage; only the in-flight map is local.
        from raysweep.atomic import atomic_write_text

        atomic_write_text(checkpoint_path, json.dumps({"live": self.live, "told": self.told}))

    def restore(self, checkpoint_path: str) -> None:
        state = json.loads(Path(checkpoint_path).read_text())
        self.live = {k: tuple(v) for k, v in state["live"].items()}
        self.told = state["told"]


def default_storage(out_dir: str | Path) -> str:
    """SQLite URL of the Optuna study inside the study's output directory."""
    p = Path(out_dir).resolve()
    p.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{p / 'active.db'}"


def make_searcher(study, pool: list[dict], out_dir: str | Path):
    """The Ray Tune Searcher of ``search: {strategy: active}`` (the sweep's entry point).

    ``study``: a :class:`raysweep.sweep.study.Study` (only ``name`` and ``search`` are
    read); ``pool``: its trial configs (:func:`raysweep.sweep.study.expand`);
    ``out_dir``: the study's output directory (holds ``active.db``). The
    searcher hands out configs from ``pool`` (copies) and returns
    ``Searcher.FINISHED`` when the budget is spent; run the Tuner with
    ``num_samples=-1`` (or ``len(pool)``) and let the searcher end the run.
    """
    # validated once, at load (Study.active); a hand-made study object is validated here
    opts = getattr(study, "active", None) or parse_options(dict(study.search), pool)
    storage = opts.storage or default_storage(out_dir)
    ostudy, sampler = open_study(study.name, pool, opts, storage)
    return ActiveSearcher(ostudy, sampler, pool, batch=opts.batch)
