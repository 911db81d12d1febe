"""Spec grammar, :func:`parse`, and ``A+B`` composition.

Grammar (docs/formats.md)::

    spec   := part ("+" part)*                 applied left to right
    part   := base ("@" option)*               options in any order, each once
    base   := a registered form (int4, fp4, e3m2, lloyd3, ternary, noise2,
              sparse50, 2:4, vq2x8) or bf16 / none
    option := absmax | g{G} | h | sr | rh{B} | o{P} | q | 46 | 2d

Canonical spec: bases as registered (``none`` -> ``bf16``), options in the
order absmax, g{G}, 46, 2d, q, sr, then the rotation (h or rh{B}), then o{P}
(``o`` wraps the rotated grid, which wraps the rounded one), parts joined by
``+``. Parsing is cached per string.

Numbers are written canonically or the spec is an error: ASCII digits only
(``int４`` is refused), no leading zeros (``int04``, ``sparse050``, ``@g032``:
the error names the canonical form), no whitespace inside a spec (only around
it); a composite has at most :data:`MAX_PARTS` parts.
"""

from __future__ import annotations

import functools
import math
import re

from raysweep.errors import SpecError

from .base import MAX_PARTS, Identity, ProjectionPlan, Representation, forms, spec_error
from .gaussian import GMSE

SCALAR_FORMS = ("int", "intz", "fp", "float", "lloyd", "ternary")
ROTATABLE_FORMS = SCALAR_FORMS + ("vq",)
SR_FORMS = SCALAR_FORMS + ("mx", "nvfp4")          # forms with a stochastic-rounding option
RANDOM_ROTATABLE_FORMS = ROTATABLE_FORMS + ("mx", "nvfp4")
OUTLIER_FORMS = RANDOM_ROTATABLE_FORMS              # forms that take @o{P}
FORM_OPTIONS = {"46": "nvfp4", "2d": "nvfp4", "q": "mx"}  # one form each (canonical order)
RH_BLOCKS = (16, 32, 64, 128)
_GROUP = re.compile(r"g([0-9]+)\Z", re.ASCII)
_RH = re.compile(r"rh([0-9]+)\Z", re.ASCII)
_OUTLIERS = re.compile(r"o([0-9]+(\.[0-9]+)?)\Z", re.ASCII)
_LEADING_ZERO = re.compile(r"(?<![0-9.])0+(?=[0-9])", re.ASCII)  # 04, 050, 00.5; not 0, 0.5


class Composite(Representation):
    """``A+B``: the parts applied left to right (``sparse50+int4``: prune, then quantize).

    Bits convention: walking left to right, a sparse part adds its mask cost
    (scaled by the density still present) and multiplies the density by its
    keep fraction; the last non-sparse part prices each surviving element
    (bf16 = 16 bits when there is none). ``sparse50+int4`` = 1 + 0.5 * 4 = 3.
    Family: the parts' families joined by ``+`` (``sparse+int``); the fit looks
    at ``parts`` to share per-family parameters. GMSE by Monte Carlo.
    """

    def __init__(self, parts: tuple[Representation, ...]):
        self.parts = parts
        self.spec = "+".join(p.spec for p in parts)
        self.family = "+".join(p.family for p in parts)
        self.is_identity = all(p.is_identity for p in parts)
        self.stochastic = any(p.stochastic for p in parts)
        self.cache_tag = ",".join(p.cache_tag for p in parts)
        self.row_multiple = math.lcm(*(p.row_multiple for p in parts))
        density, mask_bits, value_bits = 1.0, 0.0, 16.0
        for p in parts:
            keep = getattr(p, "keep_fraction", None)
            if keep is not None:
                mask_bits += density * p.mask_bits
                density *= keep
            elif not p.is_identity:
                value_bits = p.bits_per_element
        self.bits_per_element = mask_bits + density * value_bits
        sp = [p.sparsity for p in parts if p.sparsity is not None]
        if len(sp) == 1 and len(parts) == 1:  # pragma: no cover - single parts are not Composite
            self.sparsity = sp[0]

    def _plan(self) -> ProjectionPlan:
        return ProjectionPlan(identity=self.is_identity, parts=self.parts)

    def _project(self, x, r=None):
        """The parts in order; explicit uniforms ``r`` go to every stochastic part."""
        mask = None
        for p in self.parts:
            x, m = p.project_with_uniforms(x, r) if r is not None and p.stochastic else p.project(x)
            if m is not None:
                mask = m if mask is None else mask & m
        return x, mask

    def _gmse(self) -> GMSE:
        real = [p for p in self.parts if not p.is_identity]
        if not real:
            return GMSE(0.0, 0.0, "exact")
        if len(real) == 1:
            return real[0].gmse()
        return super()._gmse()

    def _gmse_rows(self, row_len: int) -> GMSE:
        real = [p for p in self.parts if not p.is_identity]
        if len(real) == 1:
            return real[0].gmse(row_len)
        return super()._gmse_rows(row_len)


def _options(part: str, opts: list[str]) -> dict:
    out = {"absmax": False, "group": None, "h": False, "sr": False, "rh": None,
           "outliers": None, **{k: False for k in FORM_OPTIONS}}
    seen = set()
    for o in opts:
        grp, rh, outl = _GROUP.match(o), _RH.match(o), _OUTLIERS.match(o)
        if o in ("g", "rh", "o"):
            raise spec_error(part, {"g": "option @g needs a group size G = 2..65536, e.g. @g32",
                                    "rh": "option @rh needs a block size B = 16, 32, 64 or "
                                          "128, e.g. @rh32",
                                    "o": "option @o needs a percentage 0 < P < 100, e.g. @o1"}[o])
        key = "g{G}" if grp else "rh{B}" if rh else "o{P}" if outl else o
        if key in seen:
            raise spec_error(part, f"option @{o} given twice")
        seen.add(key)
        if o in ("absmax", "h", "sr") or o in FORM_OPTIONS:
            out[o] = True
        elif grp:
            g = int(grp.group(1))
            if not 2 <= g <= 65536:
                raise spec_error(part, f"group size @g{g} out of range 2..65536")
            out["group"] = g
        elif rh:
            b = int(rh.group(1))
            if b not in RH_BLOCKS:
                raise spec_error(part, f"random Hadamard block @rh{b}: allowed 16, 32, 64, 128")
            out["rh"] = b
        elif outl:
            p = float(outl.group(1))
            if not 0.0 < p < 100.0:
                raise spec_error(part, f"outlier percentage @o{outl.group(1)} out of range "
                                       "0 < P < 100")
            out["outliers"] = p
        else:
            raise spec_error(part, f"unknown option @{o} (allowed: @absmax, @g{{G}}, @h, @sr, "
                                   f"@rh{{B}}, @o{{P}}; @q for mx; @46, @2d for nvfp4)")
    if out["h"] and out["rh"]:
        raise spec_error(part, "@h and @rh{B} are two rotations: give one")
    return out


def _canonical_options(o: dict) -> str:
    s = "@absmax" if o["absmax"] else ""
    s += f"@g{o['group']}" if o["group"] else ""
    s += "".join(f"@{k}" for k in FORM_OPTIONS if o.get(k))
    s += "@sr" if o["sr"] else ""
    return s


def _check_text(part: str) -> None:
    """Refuse what is not a canonical spec string: whitespace, non-ASCII, leading zeros."""
    if any(c.isspace() for c in part):
        raise spec_error(part, "spaces are not allowed inside a spec")
    odd = next((c for c in part if not c.isascii()), None)
    if odd is not None:
        raise spec_error(part, f"non-ASCII character {odd!r} (U+{ord(odd):04X}); a spec is "
                               "ASCII, numbers in the digits 0-9")
    if _LEADING_ZERO.search(part):
        fixed = _LEADING_ZERO.sub("", part)
        try:
            fixed = _parse_part(fixed).spec
        except SpecError:
            pass
        raise spec_error(part, f"a number with a leading zero is not canonical; "
                               f"write {fixed!r}")


def _parse_part(part: str) -> Representation:
    if not part:
        raise spec_error(part, "empty part (a dangling '+' or an empty spec)")
    _check_text(part)
    base, *opts = part.split("@")
    o = _options(part, opts)
    if base in ("bf16", "none"):
        if opts:
            raise spec_error(part, "the identity (bf16/none) takes no options")
        return Identity()
    for form in forms().values():
        m = form.pattern.match(base)
        if m is None:
            continue
        if (o["absmax"] or o["group"]) and form.name not in SCALAR_FORMS:
            raise spec_error(part, f"@absmax/@g apply to scalar grids only, not {form.name}")
        if o["h"] and form.name not in ROTATABLE_FORMS:
            raise spec_error(part, f"@h applies to scalar grids and vq only, not {form.name}")
        if o["sr"] and form.name not in SR_FORMS:
            raise spec_error(part, f"@sr applies to scalar grids, mx and nvfp4 only, "
                                   f"not {form.name}")
        if o["rh"] and form.name not in RANDOM_ROTATABLE_FORMS:
            raise spec_error(part, f"@rh{{B}} applies to scalar grids, vq, mx and nvfp4 only, "
                                   f"not {form.name}")
        if o["outliers"] is not None and form.name not in OUTLIER_FORMS:
            raise spec_error(part, f"@o{{P}} applies to scalar grids, vq, mx and nvfp4 only, "
                                   f"not {form.name}")
        for k, owner in FORM_OPTIONS.items():
            if o[k] and form.name != owner:
                raise spec_error(part, f"@{k} applies to {owner} only, not {form.name}")
        o["spec"] = base + _canonical_options(o)
        rep = form.build(m, o)
        if o["h"] or o["rh"]:
            from .hadamard import Rotated

            rep = Rotated(rep, random_block=o["rh"])
        if o["outliers"] is not None:
            from .outliers import KeptOutliers

            rep = KeptOutliers(rep, o["outliers"])
        return rep
    raise spec_error(part, f"unknown representation {base!r}")


@functools.lru_cache(maxsize=512)
def parse(spec: str) -> Representation:
    """The representation named by ``spec`` (cached); raises SpecError on a bad spec."""
    if not isinstance(spec, str):
        raise spec_error(str(spec), f"a spec is a string, got {type(spec).__name__}")
    spec = spec.strip()
    if not spec:
        raise spec_error(spec, "empty spec")
    pieces = spec.split("+")
    if "" in pieces:
        raise spec_error(spec, "dangling '+' (every part of A+B must be a spec)")
    if len(pieces) > MAX_PARTS:
        raise spec_error(spec, f"{len(pieces)} parts; a composite has at most {MAX_PARTS} "
                               "parts (A+B+C+D)")
    parts = tuple(_parse_part(p) for p in pieces)
    return parts[0] if len(parts) == 1 else Composite(parts)
