"""Active search as an Optuna sampler on a persistent study.

Why Optuna: its trial store is the search's memory. Every proposed run is an
Optuna trial with one categorical parameter, ``candidate`` (an index into the
pool), and a user attribute ``run_id``; finished runs are told with their final
loss, failed ones as ``FAIL``, early-stopped ones as ``PRUNED``. With an RDB
storage (a SQLite file by default, any SQLAlchemy URL such as PostgreSQL on a
cluster) an interrupted search reopens the same study, sees its whole history
and goes on from there.

:class:`ActiveSampler` follows Optuna's three-method sampler contract:

- ``infer_relative_search_space`` always returns ``{"candidate": Categorical(0..P-1)}``
  (the pool is fixed, so the space need not be inferred from past trials);
- ``sample_relative`` reads the history (COMPLETE = observed, RUNNING =
  pending, FAIL/PRUNED = failed) and returns the acquisition's next pick
  (:meth:`raysweep.active.acquisition.ActiveDesign.propose`), or ``{}`` when it has none;
- ``sample_independent`` is the fallback when ``sample_relative`` gave nothing:
  a uniformly random candidate that is neither finished, pending nor excluded.

Callers that must not overspend ask :meth:`ActiveSampler.peek` first: it says
whether there is a pick and, if not, why (budget, target reached, pool
exhausted, or waiting for the first runs). The Ray Tune adapter does this.

History is keyed by ``run_id``, not by the index: a study whose grid was
edited between sessions maps old trials onto the new pool, and trials of runs
no longer in the pool are ignored.
"""

from __future__ import annotations

import json
import math

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution
from optuna.samplers import BaseSampler
from optuna.trial import TrialState

from raysweep.active.acquisition import ActiveDesign, Proposal

PARAM = "candidate"
INTERRUPTED = "interrupted_trials"  # study user attr: trial numbers closed by a resume


class ActiveSampler(BaseSampler):
    """Optuna sampler proposing pool indices by expected target-variance reduction per FLOP.

    Args:
        pool: the trial configs (dicts with ``run_id``, ``n_params``, ``tokens``
            and ``format`` or ``weights``/``activations``).
        budget_flops: FLOPs the search may commit (finished + pending + failed).
        **design: keyword options of :class:`ActiveDesign` (``target``,
            ``cost_exponent``, ``ensemble``, ``noise``, ``target_std``,
            ``max_failures``, ``seed``).
    """

    def __init__(self, pool: list[dict], budget_flops: float, **design):
        self.pool = pool
        self.design = ActiveDesign(pool, budget_flops, **design)
        self.index = {r["run_id"]: i for i, r in enumerate(pool) if "run_id" in r}
        self.distribution = CategoricalDistribution(tuple(range(len(pool))))
        self._rng = np.random.default_rng(design.get("seed", 0))

    # ------------------------------------------------------------ history

    def history(self, study: optuna.Study, skip: int | None = None):
        """(observed {idx: loss}, pending [idx], failed {idx: count}) from the study."""
        interrupted = set(study.user_attrs.get(INTERRUPTED, []))
        observed, pending, failed = {}, [], {}
        for t in study.get_trials(deepcopy=False):
            if t.number == skip:
                continue
            i = self._idx(t)
            if i is None:
                continue
            if t.state == TrialState.COMPLETE and t.value is not None and math.isfinite(t.value):
                observed[i] = float(t.value)
            elif t.state == TrialState.RUNNING:
                pending.append(i)
            elif t.state in (TrialState.FAIL, TrialState.PRUNED) and t.number not in interrupted:
                failed[i] = failed.get(i, 0) + 1
        return observed, pending, failed

    def _idx(self, t) -> int | None:
        rid = t.user_attrs.get("run_id")
        if rid is not None:
            return self.index.get(rid)
        i = t.params.get(PARAM)
        return int(i) if i is not None and 0 <= int(i) < len(self.pool) else None

    def peek(self, study: optuna.Study, skip: int | None = None) -> Proposal:
        """The next pick without creating a trial (empty picks: see ``reason``)."""
        observed, pending, failed = self.history(study, skip)
        return self.design.propose(observed, pending, failed, n=1)

    # ------------------------------------------------------------ the contract

    def infer_relative_search_space(self, study, trial):
        return {PARAM: self.distribution}

    def sample_relative(self, study, trial, search_space):
        if PARAM not in search_space:
            return {}
        prop = self.peek(study, skip=trial.number)
        return {PARAM: prop.picks[0]} if prop.picks else {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        observed, pending, failed = self.history(study, skip=trial.number)
        busy = set(observed) | set(pending) | {
            i for i, k in failed.items() if k >= self.design.max_failures}
        free = [i for i in range(len(self.pool)) if i not in busy]
        choices = free or list(range(len(self.pool)))
        return int(choices[self._rng.integers(len(choices))])


def open_study(name: str, pool: list[dict], opts, storage: str):
    """Create or reopen the persistent Optuna study of an active search.

    ``opts``: :class:`raysweep.active.options.ActiveOptions`. Trials left RUNNING by a
    previous, interrupted session are closed as FAIL and listed in the study's
    ``interrupted_trials`` attribute, so their runs count neither as pending nor
    as failures and are proposed again if still worth it.
    Returns (optuna.Study, ActiveSampler).
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = ActiveSampler(pool, opts.budget_flops, **opts.design_kwargs())
    study = optuna.create_study(study_name=f"raysweep-active-{name}", storage=storage,
                                sampler=sampler, direction="minimize", load_if_exists=True)
    stale = [t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
    if stale:
        study.set_user_attr(INTERRUPTED, sorted(set(study.user_attrs.get(INTERRUPTED, []))
                                                | set(stale)))
        for n in stale:
            study.tell(n, state=TrialState.FAIL)
    return study, sampler


def ask(study: optuna.Study, sampler: ActiveSampler) -> tuple[optuna.Trial, int]:
    """Start an Optuna trial for the sampler's next pick; returns (trial, pool index)."""
    trial = study.ask()
    idx = int(trial.suggest_categorical(PARAM, sampler.distribution.choices))
    rid = sampler.pool[idx].get("run_id")
    if rid is not None:
        trial.set_user_attr("run_id", rid)
    return trial, idx


def tell_result(study: optuna.Study, number: int, result: dict | None, error: bool,
                planned_tokens: float | None = None) -> str:
    """Close trial ``number`` from a run's last result; returns the state told.

    Only the trainer's final *result row* is an observation (COMPLETE): a
    finite ``loss`` with ``status == "ok"`` (the row's status field, which the
    intermediate eval reports lack) and, when ``tokens`` is in the row and
    ``planned_tokens`` is given, the full token count reached. The sweep's
    trainable (:func:`raysweep.sweep.runners.trainable`) reports the row as
    ``row_json`` (status ``ok`` when the row has none) and a deterministic
    failure as ``failed_json``; a flat result with ``loss``/``status``/``tokens``
    works too. Tune's own
    ``done`` flag is not trusted: Tune sets it on the last result of any trial
    it ends, including one stopped early by ASHA or a stopper, whose last result
    is an intermediate eval (this is how OptunaSearch ends up reporting
    ASHA-stopped trials as complete). An errored run is FAIL; a final row with
    another status (``diverged``) is FAIL; anything else (stopped early) is
    PRUNED. FAIL and PRUNED runs are not observations and count as failures.
    """
    result = result or {}
    row = result
    if "failed_json" in result:  # raysweep.sweep.runners.trainable: a deterministic failure
        error = True
    elif "row_json" in result:  # raysweep.sweep.runners.trainable: the final result row
        row = {"status": "ok", "loss": result.get("loss"), **json.loads(result["row_json"])}
    loss = row.get("loss")
    status = row.get("status")
    final = (isinstance(loss, (int, float)) and math.isfinite(loss) and status == "ok")
    if final and planned_tokens is not None and row.get("tokens") is not None:
        final = float(row["tokens"]) >= 0.999 * float(planned_tokens)
    if error or (status is not None and status != "ok"):
        study.tell(number, state=TrialState.FAIL)
        return "FAIL"
    if final:
        study.tell(number, float(loss))
        return "COMPLETE"
    study.tell(number, state=TrialState.PRUNED)
    return "PRUNED"
