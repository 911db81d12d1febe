"""The scaling laws, in log space, with analytic Jacobians.

Every law predicts ``log L`` for each row of a :class:`~raysweep.fit.data.Design`
and returns the Jacobian of that prediction with respect to its internal
parameter vector ``theta``; the fitter minimizes a Huber loss of
``log L_obs - log L_pred`` with L-BFGS-B (:mod:`raysweep.fit.optimize`).

Log-sum-exp parametrization (Epoch AI's Chinchilla replication): with
``a = ln A``, ``b = ln B``, ``e = ln E``,

    log L = LSE(a - alpha (ln N + ln rho), b - beta ln D, e)

which is the law ``A (N rho)^-alpha + B D^-beta + E`` with every term positive
by construction. The laws differ only in ``ln rho`` of a row:

- ``chinchilla``: rho = 1 (dense law);
- ``decoupled``: one free ``ln rho`` per representation label (dense labels 1);
- ``unified``: sum over the row's non-identity parts of
  ``ln L_f + C_f ln tanh(F_f * bits_eff)``, bits_eff = log_{1/4} GMSE (the unified law);
- ``unified-logistic``: parts' ``-ln(1 + B_f GMSE^A_f)``;
- ``unified-logistic2``: parts' ``ln(1 - GMSE^A_f) - ln(1 + B_f GMSE^A_f)``;
- ``kumar`` (Kumar et al. 2024): parts' ``ln(1 - exp(-P / gamma_role))``, P = bits;
- ``frantar`` (Frantar et al. 2023) has its own form, see :class:`Frantar`.

A part's family picks its capacity parameters; a dense row has no parts, so its
rho is exactly 1 (not L).

The published values live here too, for everything that draws from or compares
with the law (the simulated runner, the report, the synthetic tables, the
benchmarks): :data:`PAPER_CAPACITY`, the paper's tanh-curve fit for scalar
quantization ("Unified Scaling Laws for Compressed Representations", section
"Representation capacity"), :data:`EPOCH_CHINCHILLA`, Epoch AI's replication
of Chinchilla's dense law (Besiroglu et al. 2024), and the scalar forms
:func:`tanh_capacity` and :func:`unified_loss`.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from raysweep.errors import FitError
from raysweep.fit.data import ROLES, Design

LN4 = math.log(4.0)

# The paper's published capacity fit (L, F, C) of the tanh curve (scalar quantization).
PAPER_CAPACITY = {"L": 1.0, "F": 0.41, "C": 1.39}
# Epoch AI's replication of Chinchilla's approach 3 (A, alpha, B, beta, E).
EPOCH_CHINCHILLA = {"A": 482.01, "alpha": 0.3478, "B": 2085.43, "beta": 0.3658, "E": 1.82}


def tanh_capacity(gmse: float, L: float = PAPER_CAPACITY["L"], F: float = PAPER_CAPACITY["F"],
                  C: float = PAPER_CAPACITY["C"]) -> float:
    """``rho = L tanh(F log_{1/4} GMSE)^C`` of one part (defaults: the published fit).

    The scalar form of :class:`Unified`'s curve: GMSE >= 1 (the output carries
    nothing) gives 0, GMSE 0 (lossless) gives L.
    """
    if gmse >= 1.0:
        return 0.0
    if gmse <= 0.0:
        return L
    return L * math.tanh(F * -math.log(gmse) / LN4) ** C


def unified_loss(n_params: float, tokens: float, rho: float = 1.0,
                 law: dict[str, float] = EPOCH_CHINCHILLA) -> float:
    """``A (N rho)^-alpha + B D^-beta + E`` (default: Epoch's dense law; N rho floored at 1e-12)."""
    n_eff = max(float(n_params) * rho, 1e-12)
    return (law["A"] * n_eff ** -law["alpha"] + law["B"] * float(tokens) ** -law["beta"]
            + law["E"])
BASE = ("a", "b", "e", "alpha", "beta")
BASE_BOUNDS = ((-5.0, 60.0), (-5.0, 60.0), (-12.0, 3.0), (1e-4, 3.0), (1e-4, 3.0))
# Epoch AI's grid of starts (Besiroglu et al. 2024, "Chinchilla Scaling: A replication
# attempt"): 6 * 6 * 5 * 5 * 5 = 4500 points.
EPOCH_GRID = dict(a=np.arange(0, 26, 5.0), b=np.arange(0, 26, 5.0), e=np.arange(-1, 1.01, 0.5),
                  alpha=np.arange(0, 2.01, 0.5), beta=np.arange(0, 2.01, 0.5))
COARSE_GRID = dict(a=(0.0, 5.0, 10.0, 20.0), b=(0.0, 5.0, 10.0, 20.0), e=(-1.0, 0.0, 0.5),
                   alpha=(0.2, 0.5, 1.0), beta=(0.2, 0.5, 1.0))


def lse_rows(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise log-sum-exp of ``u`` (n x k) and its softmax weights."""
    m = u.max(axis=1, keepdims=True)
    ex = np.exp(u - m)
    s = ex.sum(axis=1, keepdims=True)
    return (m + np.log(s))[:, 0], ex / s


def lse_law(a, b, e, alpha, beta, x: np.ndarray, z: np.ndarray):
    """``ln L = LSE(a - alpha x, b - beta z, e)`` per row and its Jacobian.

    ``x`` is ``ln N + ln rho`` (possibly centred), ``z`` is ``ln D``. Returns
    ``(ln L, J)`` with ``J`` the n x 6 Jacobian in ``(a, b, e, alpha, beta, ln rho)``:
    with w the softmax weights of the three terms, ``d/da = w0``, ``d/db = w1``,
    ``d/de = w2``, ``d/dalpha = -w0 x``, ``d/dbeta = -w1 z``, ``d/dln rho = -alpha w0``.
    The one home of the law's log-space form: the fitter and the active search's
    surrogate both use it.
    """
    u0, u1 = a - alpha * x, b - beta * z
    m = np.maximum(np.maximum(u0, u1), e)
    e0, e1, e2 = np.exp(u0 - m), np.exp(u1 - m), np.exp(e - m)
    s = e0 + e1 + e2
    pred = m + np.log(s)
    J = np.empty((len(x), 6))
    J[:, 0], J[:, 1], J[:, 2] = e0 / s, e1 / s, e2 / s
    J[:, 3] = -J[:, 0] * x
    J[:, 4] = -J[:, 1] * z
    J[:, 5] = -alpha * J[:, 0]
    return pred, J


# capacity_L: "auto" (the rule below), "free" or "fixed" (at L = 1) for every family
CAPACITY_L = ("auto", "free", "fixed")
L_FREE_LEVELS = 4  # a family's L is free by default with this many GMSE levels...
L_FREE_BITS = 6.0  # ...one of them above this many effective bits (log_{1/4} GMSE)


def gmse_levels(design: Design, family: str) -> tuple[int, float]:
    """Distinct GMSE levels of ``family``'s parts in ``design`` and the highest effective
    bits ``log_{1/4} GMSE`` among them (0 when the family has no part)."""
    levels = {round(p.gmse, 12) for parts in design.row_parts for p in parts
              if p.family == family}
    pos = [g for g in levels if g > 0]
    return len(levels), (max(-math.log(g) / LN4 for g in pos) if pos else 0.0)


def grid_points(grid: dict[str, tuple | np.ndarray], names: tuple[str, ...]) -> np.ndarray:
    return np.array(list(itertools.product(*(grid[k] for k in names))), dtype=float)


class Law:
    """``log L = LSE(a - alpha (ln N + ln rho), b - beta ln D, e)``; subclasses give ln rho.

    Instances are bound to the structure of one design (its families or labels)
    and are plain picklable objects, so bootstrap workers can use them.
    """

    name = "chinchilla"
    # internal parameters held at a value (index -> value) and why (reported name -> why);
    # free_why says why a parameter that is fixed by default is free here
    fixed: dict[int, float] = {}
    fixed_why: dict[str, str] = {}
    free_why: dict[str, str] = {}

    def __init__(self, design: Design):
        self.cap_names: tuple[str, ...] = ()
        self.cap_bounds: tuple[tuple[float, float], ...] = ()

    # -- parameter layout -------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        return BASE + self.cap_names

    @property
    def bounds(self) -> tuple[tuple[float, float], ...]:
        """Box of every internal parameter; a fixed one has equal ends (its value)."""
        out = BASE_BOUNDS + self.cap_bounds
        if self.fixed:
            out = tuple((self.fixed[i], self.fixed[i]) if i in self.fixed else b
                        for i, b in enumerate(out))
        return out

    def center_matrix(self, design: Design) -> np.ndarray:
        """``M`` with ``theta = M u``, u the centred coordinates the optimizer moves:
        ``a = a_c + alpha * mean(ln N)``, ``b = b_c + beta * mean(ln D)``
        (:mod:`raysweep.fit.optimize`)."""
        M = np.eye(len(self.names))
        M[0, 3] = float(np.mean(design.log_n))
        M[1, 4] = float(np.mean(design.log_d))
        return M

    def cap_grid(self) -> np.ndarray:
        """Starting points for the capacity parameters (rows), or an empty (1, 0) array."""
        return np.zeros((1, 0))

    def base_grid(self, fine: bool = True) -> np.ndarray:
        return grid_points(EPOCH_GRID if fine else COARSE_GRID, BASE)

    def rows_used(self, design: Design) -> np.ndarray:
        """Rows this law applies to: the dense rows for the dense law, else all."""
        return design.dense if type(self) is Law else np.ones(design.n, dtype=bool)

    # -- the law ----------------------------------------------------------------
    def log_rho(self, cap: np.ndarray, design: Design) -> tuple[np.ndarray, np.ndarray]:
        """Per-row ln rho and its Jacobian (n x len(cap))."""
        return np.zeros(design.n), np.zeros((design.n, 0))

    def predict(self, theta: np.ndarray, design: Design, jac: bool = True):
        """Predicted ln L per row, and (if ``jac``) its Jacobian n x len(theta)."""
        a, b, e, alpha, beta = theta[:5]
        lr, jr = self.log_rho(theta[5:], design)
        pred, j6 = lse_law(a, b, e, alpha, beta, design.log_n + lr, design.log_d)
        if not jac:
            return pred, None
        J = np.empty((design.n, len(theta)))
        J[:, :5] = j6[:, :5]
        J[:, 5:] = j6[:, 5:6] * jr
        return pred, J

    def predict_many(self, thetas: np.ndarray, design: Design) -> np.ndarray:
        """Predicted ln L (k x n) for k parameter vectors at once: broadcast over the
        starts when the law has no capacity parameters (the dense stage's 4500-point
        grid), else one :meth:`predict` per vector."""
        thetas = np.atleast_2d(np.asarray(thetas, float))
        if self.names != BASE or type(self).predict is not Law.predict:
            return np.array([self.predict(t, design, jac=False)[0] for t in thetas])
        lr = self.log_rho(np.zeros(0), design)[0]
        a, b, e, alpha, beta = (thetas[:, j:j + 1] for j in range(5))
        return np.logaddexp(np.logaddexp(a - alpha * (design.log_n + lr), b - beta * design.log_d),
                            e)

    # -- reporting ----------------------------------------------------------------
    def params(self, theta: np.ndarray) -> dict[str, float]:
        a, b, e, alpha, beta = (float(x) for x in theta[:5])
        return {"A": math.exp(a), "alpha": alpha, "B": math.exp(b), "beta": beta,
                "E": math.exp(e)}

    def capacity(self, theta: np.ndarray) -> dict[str, dict[str, float]]:
        return {}

    def rho(self, theta: np.ndarray, design: Design) -> np.ndarray:
        return np.exp(self.log_rho(theta[5:], design)[0])

    def identified_groups(self, design: Design) -> dict[str, str]:
        """Parameter groups that the design cannot pin down, with the reason."""
        return {}


class Decoupled(Law):
    """One free ``ln rho`` per non-dense representation label (the paper's baseline)."""

    name = "decoupled"

    def __init__(self, design: Design):
        dense = design.dense
        self.labels = tuple(sorted({lab for lab, d in zip(design.labels, dense) if not d}))
        self.cap_names = tuple(f"logrho[{lab}]" for lab in self.labels)
        self.cap_bounds = ((-12.0, 1.0),) * len(self.labels)

    def cap_grid(self) -> np.ndarray:
        return np.array([[v] * len(self.labels) for v in (-3.0, -1.0, -0.2)])

    def _index(self, design: Design) -> np.ndarray:
        """Per row: the index of its label in ``self.labels``, -1 for dense rows."""
        index = {lab: i for i, lab in enumerate(self.labels)}
        out = np.full(design.n, -1)
        for r, (lab, parts) in enumerate(zip(design.labels, design.row_parts)):
            if parts:
                if lab not in index:
                    raise FitError(f"decoupled law: format {lab!r} was not in the fitted table "
                                   f"(fitted: {list(self.labels)})")
                out[r] = index[lab]
        return out

    def log_rho(self, cap, design):
        idx = design.memo(("decoupled", self.labels), lambda: self._index(design))
        lr, J = np.zeros(design.n), np.zeros((design.n, len(cap)))
        rows = np.flatnonzero(idx >= 0)
        lr[rows] = cap[idx[rows]]
        J[rows, idx[rows]] = 1.0
        return lr, J


class _PerFamily(Law):
    """Capacity from GMSE through a per-family curve, summed over a row's parts in log."""

    per_family: tuple[str, ...] = ()
    bounds_each: tuple[tuple[float, float], ...] = ()
    grid_each: tuple[tuple[float, ...], ...] = ()

    def __init__(self, design: Design):
        self.families = design.families
        self.cap_names = tuple(f"{f}.{p}" for f in self.families for p in self.per_family)
        self.cap_bounds = self.bounds_each * len(self.families)

    def cap_grid(self) -> np.ndarray:
        # every family starts from the same point: the grid stays small
        k = len(self.families)
        return np.array([list(pt) * k for pt in itertools.product(*self.grid_each)])

    def part_curve(self, p: np.ndarray, g: np.ndarray, aux: np.ndarray):
        """ln rho of parts at GMSE ``g`` with family params ``p`` (parts x k), and d/dp."""
        raise NotImplementedError

    def log_rho(self, cap, design):
        rows, fams, g, roles = design.part_arrays()
        k = len(self.per_family)
        n, m = design.n, len(cap)
        if len(rows) == 0:
            return np.zeros(n), np.zeros((n, m))
        f, flat = design.memo((self.name, self.families), lambda: self._scatter(design, k, m))
        P = cap.reshape(-1, k)[f]
        val, dval = self.part_curve(P, g, self._aux(design, roles))
        lr = np.bincount(rows, weights=val, minlength=n)
        J = np.bincount(flat.ravel(), weights=dval.ravel(), minlength=n * m).reshape(n, m)
        return lr, J

    def _scatter(self, design: Design, k: int, m: int) -> tuple[np.ndarray, np.ndarray]:
        """Per part: its family's index in this law, and the flat (row, column) index of
        each of its k Jacobian entries in the n x m Jacobian (for np.bincount)."""
        rows, fams, _, _ = design.part_arrays()
        f = self._fam_map(design)[fams]
        flat = rows[:, None] * m + f[:, None] * k + np.arange(k)[None, :]
        return f, flat

    def _aux(self, design: Design, roles: np.ndarray) -> np.ndarray:
        return roles

    def _fam_map(self, design: Design) -> np.ndarray:
        index = {f: i for i, f in enumerate(self.families)}
        missing = [f for f in design.families if f not in index]
        if missing:
            raise FitError(f"{self.name} law: family {missing} was not in the fitted table "
                           f"(fitted families: {list(self.families)})")
        return np.array([index[f] for f in design.families] or [0], dtype=int)

    def capacity(self, theta):
        k = len(self.per_family)
        out = {}
        for i, fam in enumerate(self.families):
            out[fam] = self.report_family(theta[5 + i * k: 5 + (i + 1) * k])
        return out

    def report_family(self, p: np.ndarray) -> dict[str, float]:
        return dict(zip(self.per_family, map(float, p)))

    def curve(self, theta: np.ndarray, family: str, g: np.ndarray) -> np.ndarray:
        """rho of a single part of ``family`` at GMSE values ``g`` (for plots)."""
        k = len(self.per_family)
        i = self.families.index(family)
        P = np.tile(theta[5 + i * k: 5 + (i + 1) * k], (len(g), 1))
        return np.exp(self.part_curve(P, np.asarray(g, float), np.zeros(len(g), int))[0])

    def identified_groups(self, design):
        out = {}
        for fam in self.families:
            levels = {round(p.gmse, 12) for parts in design.row_parts for p in parts
                      if p.family == fam}
            i = self.families.index(fam)
            k = len(self.per_family)
            n_free = sum(5 + i * k + j not in self.fixed for j in range(k))
            if len(levels) < n_free:
                out[fam] = (f"family {fam!r} has {len(levels)} distinct GMSE level(s), fewer than "
                            f"its {n_free} free capacity parameters: its curve is not "
                            "identified (the rho of its formats still is)")
        return out


class Unified(_PerFamily):
    """``rho = L tanh(F log_{1/4} GMSE)^C`` per family (paper eq., §1).

    Internal parameters per family: ``logL`` (ln L), ``F``, ``C``. With
    x = -ln(GMSE)/ln 4 and t = tanh(F x): ln rho = ln L + C ln t,
    d/dF = C x (1 - t^2)/t, d/dC = ln t.
    """

    name = "unified"
    per_family = ("logL", "F", "C")
    bounds_each = ((-8.0, 1.0), (1e-3, 20.0), (1e-2, 20.0))
    grid_each = ((0.0, -0.5), (0.2, 0.5, 1.0), (0.7, 1.5, 3.0))

    def __init__(self, design: Design, capacity_L: str = "auto"):
        super().__init__(design)
        if capacity_L not in CAPACITY_L:
            raise FitError(f"capacity_L {capacity_L!r}: allowed: {list(CAPACITY_L)}")
        self.capacity_L = capacity_L
        self.fixed, self.fixed_why, self.free_why = {}, {}, {}
        for i, fam in enumerate(self.families):
            n_levels, bits = gmse_levels(design, fam)
            seen = (f"family {fam!r} has {n_levels} GMSE level(s), the highest at "
                    f"{bits:.3g} effective bits")
            auto_free = n_levels >= L_FREE_LEVELS and bits > L_FREE_BITS
            rule = (f"L is fitted only with >= {L_FREE_LEVELS} levels including one above "
                    f"{L_FREE_BITS:g} bits")
            name, how = f"{fam}.L", ("default" if capacity_L == "auto"
                                     else f"capacity_L={capacity_L}")
            if capacity_L == "fixed" or (capacity_L == "auto" and not auto_free):
                self.fixed[5 + 3 * i] = 0.0
                self.fixed_why[name] = (f"fixed at 1 ({how}): {seen}; {rule} (the paper "
                                        "fixes L = 1 for saturating representations)")
            else:
                self.free_why[name] = (f"free ({how}): {seen}"
                                       + ("" if auto_free else f"; by default {rule}"))

    def part_curve(self, P, g, aux):
        x = np.maximum(-np.log(np.clip(g, 1e-300, None)) / LN4, 1e-12)
        t = np.maximum(np.tanh(P[:, 1] * x), 1e-300)
        lt = np.log(t)
        val = P[:, 0] + P[:, 2] * lt
        d = np.stack([np.ones_like(val), P[:, 2] * x * (1.0 - t * t) / t, lt], axis=1)
        return val, d

    def report_family(self, p):
        return {"L": math.exp(float(p[0])), "F": float(p[1]), "C": float(p[2])}


class Logistic(_PerFamily):
    """Ablation ``rho = (1 + B GMSE^A)^-1`` per family; internal ``logB``, ``A``."""

    name = "unified-logistic"
    per_family = ("logB", "A")
    bounds_each = ((-12.0, 25.0), (1e-2, 10.0))
    grid_each = ((0.0, 3.0, 6.0), (0.5, 1.0, 2.0))

    def part_curve(self, P, g, aux):
        lg = np.log(np.clip(g, 1e-300, None))
        u = P[:, 0] + P[:, 1] * lg
        s = 1.0 / (1.0 + np.exp(-u))
        val = -np.logaddexp(0.0, u)
        return val, np.stack([-s, -s * lg], axis=1)

    def report_family(self, p):
        return {"B": math.exp(float(p[0])), "A": float(p[1])}


class Logistic2(Logistic):
    """Ablation ``rho = (1 - GMSE^A) / (1 + B GMSE^A)`` per family."""

    name = "unified-logistic2"

    def part_curve(self, P, g, aux):
        val, d = super().part_curve(P, g, aux)
        lg = np.log(np.clip(g, 1e-300, None))
        gA = np.minimum(np.exp(P[:, 1] * lg), 1.0 - 1e-12)
        val = val + np.log1p(-gA)
        d[:, 1] += -gA * lg / (1.0 - gA)
        return val, d


class Kumar(Law):
    """Kumar et al. 2024: ``N_eff = N prod_roles (1 - exp(-P_role / gamma_role))``, P = bits.

    Internal parameters: ``log_gamma_<role>`` for each role with compressed rows.
    Sparse parts are outside this law's scope (it models precision only).
    """

    name = "kumar"

    def __init__(self, design: Design):
        present = {p.role for parts in design.row_parts for p in parts if p.family != "sparse"}
        self.roles = tuple(r for r in ROLES if r in present)
        self.cap_names = tuple(f"log_gamma_{r}" for r in self.roles)
        self.cap_bounds = ((-5.0, 5.0),) * len(self.roles)

    def cap_grid(self):
        return np.array([[v] * len(self.roles) for v in (-0.5, 0.5, 1.5)])

    def rows_used(self, design):
        return np.array([all(p.family != "sparse" for p in parts) for parts in design.row_parts])

    def _parts(self, design: Design) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rows, roles, bits = [], [], []
        for r, parts in enumerate(design.row_parts):
            for p in parts:
                if p.family == "sparse":
                    raise FitError("kumar law: sparse rows are outside its scope")
                if p.role not in self.roles or not math.isfinite(p.bits):
                    raise FitError(f"kumar law: needs bits for {p.role} spec {p.spec!r} "
                                   f"(a bits_{p.role} column or a parseable spec)")
                rows.append(r)
                roles.append(self.roles.index(p.role))
                bits.append(p.bits)
        return np.array(rows, int), np.array(roles, int), np.array(bits, float)

    def log_rho(self, cap, design):
        rows, roles, bits = design.memo(("kumar", self.roles), lambda: self._parts(design))
        lr, J = np.zeros(design.n), np.zeros((design.n, len(cap)))
        z = bits / np.exp(cap[roles]) if len(rows) else np.zeros(0)
        np.add.at(lr, rows, np.log(-np.expm1(-z)))
        np.add.at(J, (rows, roles), -z / np.expm1(z))
        return lr, J

    def params(self, theta):
        out = super().params(theta)
        out.update({f"gamma_{r}": math.exp(float(theta[5 + i])) for i, r in enumerate(self.roles)})
        return out


class Frantar(Law):
    """Frantar et al. 2023 sparsity law ``(a_S (1-S)^b_S + c_S) N^-b_N + (a_D/D)^b_D + E``.

    In log space: ``LSE(LSE(la_S + b_S ln(1-S), lc_S) - b_N ln N, b_D (la_D - ln D), e)``.
    Only dense and pure weight-sparsity rows are in scope. Its capacity at
    sparsity S is ``((a_S (1-S)^b_S + c_S) / (a_S + c_S))^(-1/b_N)``.
    """

    name = "frantar"
    F_NAMES = ("la_S", "b_S", "lc_S", "b_N", "la_D", "b_D", "e")

    def __init__(self, design: Design):
        self.cap_names, self.cap_bounds = (), ()

    @property
    def names(self):
        return self.F_NAMES

    @property
    def bounds(self):
        return ((-5.0, 60.0), (-10.0, 10.0), (-5.0, 60.0), (1e-4, 3.0), (-10.0, 200.0),
                (1e-4, 3.0), (-12.0, 3.0))

    def center_matrix(self, design):
        # la_S and lc_S both carry the N term: la_S = la_S,c + b_N mean(ln N), same for lc_S;
        # the D term b_D (la_D - ln D) is centred by its own form
        M = np.eye(len(self.names))
        M[0, 3] = M[2, 3] = float(np.mean(design.log_n))
        return M

    def rows_used(self, design):
        return np.array([all(p.family == "sparse" and p.role == "weights" for p in parts)
                         and len(parts) <= 1 for parts in design.row_parts])

    def _l1ms(self, design: Design) -> np.ndarray:
        return design.memo("frantar", lambda: self._l1ms_rows(design))

    def _l1ms_rows(self, design: Design) -> np.ndarray:
        out = np.zeros(design.n)
        for r, parts in enumerate(design.row_parts):
            for p in parts:
                if not (p.family == "sparse" and math.isfinite(p.sparsity)):
                    raise FitError(f"frantar law: row {r} spec {p.spec!r} is not a weight "
                                   "sparsity with a known fraction (sparse{P} or n:m)")
                out[r] = math.log1p(-p.sparsity)
        return out

    def predict(self, theta, design, jac=True):
        laS, bS, lcS, bN, laD, bD, e = theta
        l1ms = self._l1ms(design)
        v, q = lse_rows(np.stack([laS + bS * l1ms, np.full(design.n, lcS)], axis=1))
        u = np.stack([v - bN * design.log_n, bD * (laD - design.log_d), np.full(design.n, e)], 1)
        pred, w = lse_rows(u)
        if not jac:
            return pred, None
        J = np.stack([w[:, 0] * q[:, 0], w[:, 0] * q[:, 0] * l1ms, w[:, 0] * q[:, 1],
                      -w[:, 0] * design.log_n, w[:, 1] * bD, w[:, 1] * (laD - design.log_d),
                      w[:, 2]], axis=1)
        return pred, J

    def params(self, theta):
        laS, bS, lcS, bN, laD, bD, e = (float(x) for x in theta)
        return {"a_S": math.exp(laS), "b_S": bS, "c_S": math.exp(lcS), "b_N": bN,
                "a_D": math.exp(laD), "b_D": bD, "E": math.exp(e)}

    def rho(self, theta, design):
        laS, bS, lcS, bN = theta[:4]
        l1ms = self._l1ms(design)
        num = np.logaddexp(laS + bS * l1ms, lcS)
        return np.exp(-(num - np.logaddexp(laS, lcS)) / bN)

    def from_dense(self, base: np.ndarray) -> np.ndarray:
        """Starts derived from a dense chinchilla fit (a, b, e, alpha, beta)."""
        a, b, e, alpha, beta = base
        starts = []
        for frac in (0.5, 0.9):
            for bS in (-2.0, -1.0, -0.5, 0.5):
                starts.append([a + math.log(frac), bS, a + math.log(1 - frac), alpha,
                               b / beta, beta, e])
        return np.array(starts)


LAWS: dict[str, type[Law]] = {
    cls.name: cls for cls in (Law, Decoupled, Unified, Logistic, Logistic2, Kumar, Frantar)
}


def make_law(name: str, design: Design, capacity_L: str = "auto") -> Law:
    """The law ``name`` bound to ``design``; ``capacity_L`` applies to the unified law."""
    if name not in LAWS:
        raise FitError(f"unknown law {name!r}; allowed: {sorted(LAWS)}")
    if LAWS[name] is Unified:
        return Unified(design, capacity_L)
    return LAWS[name](design)
