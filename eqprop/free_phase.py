"""The fast engine's free-phase methods beyond the fixed step count (EulerConfig.free_method).

Measured on MNIST nets (issue 15, docs/free-phase.md): the free phase's examples converge at very
different speeds (median 460-490 Euler steps to |ds| < 1e-6, p90 920-1000, some never), so a
fixed count or a stop on the worst example of a batch wastes most of the work.

* ``per_example``: the reference Euler steps, each example stopping at the first check where
  its own max |ds| < tol, exactly as it would relaxing alone; finished examples drop out of
  the products (the batch is compacted), so they cost nothing further.
* ``hybrid``: after a prefix of the reference's own Euler steps (which picks the basin the
  reference would reach), projected SOR, s_g <- clip(s_g + omega (h_g - s_g)) over groups of
  layers (LayerDrive: the odd layers, then the even ones) with the newest activities of the others,
  the batch's last examples finished by a face solve. Its fixed points are the Euler map's
  (s = clip(h) either way); it reaches them in tens of sweeps instead of hundreds of steps.
  SOR alone from the particles lands in another local minimum for 3-26 % of the examples;
  the prefix is what keeps it faithful.

Both return, per (trial, example), the Euler steps and SOR sweeps used, and the fixed-point
residual max_i |s_i - clip(h_i)| reached (one extra drive per call).
"""
from __future__ import annotations

import dataclasses
from collections import OrderedDict

import torch

from .couplings import free_layer_pairs, free_offsets
from .dynamics import clip_


class ActiveRows:
    """The examples still relaxing, per trial: (T, A) batch indices, live first, compacted as they finish.

    Trials finish different examples; a trial with fewer live rows than another is padded
    with its finished rows (computed again, never read back).
    """

    def __init__(self, T: int, B: int, device):
        self.idx = torch.arange(B, device=device).expand(T, B).clone()
        self.live = torch.ones(T, B, dtype=torch.bool, device=device)
        self._tt = torch.arange(T, device=device)[:, None]

    @property
    def A(self) -> int:
        return self.idx.shape[1]

    def coords(self, rows: torch.Tensor):
        """(trial, batch row) of the marked active rows (T, A)."""
        return self._tt.expand_as(self.idx)[rows], self.idx[rows]

    def finish(self, done: torch.Tensor, *tensors: torch.Tensor) -> list[torch.Tensor]:
        """Mark ``done`` rows finished; drop rows no trial needs; the tensors (T, A, ...) gathered alike."""
        self.live &= ~done
        keep = int(self.live.sum(1).max())
        if keep == self.A:
            return list(tensors)
        order = torch.argsort((~self.live).to(torch.int8), dim=1, stable=True)[:, :keep]
        self.idx, self.live = self.idx.gather(1, order), self.live.gather(1, order)
        return [t.gather(1, order[..., None].expand(-1, -1, t.shape[-1])) for t in tensors]


# Skips this sparse (connections / the two layers' possible pairs) may join layers updated together. Measured
# (bench_free_phase, 10 batches, 2 passes, MNIST): 784-100x5-10 SW p 0.1 (its skip pairs 2-3 % connected) in
# 2 groups instead of 6: hybrid 2.4-2.8x the fixed steps against 1.7-1.8x, every example still within 1e-4
# of s*; 784-500x3-10 SW p 0.1 (layers 1-3 8 % connected) in 2 groups: slower (0.9-1.1x) and 5 % of the
# examples not at s* (sweep cap hit), so it keeps one layer per group.
SKIP_LAG_DENSITY = 0.05


@dataclasses.dataclass
class SweepLayout:
    """LayerDrive's groups for one set of topologies (weights aside): group order ``perm`` (None: the natural
    order) and its inverse, each group's columns and sources in group order (a slice, or an index to gather),
    and the natural-order rows and columns of its weight block; ``source_runs``, ``row_runs`` and ``col_runs``:
    the same indices as runs of consecutive units (whole layers), so each is gathered by copying slices (on
    784-500x3-10 SW a tenth of index_select's time, the same values)."""

    perm: torch.Tensor | None
    inv: torch.Tensor | None
    groups: list
    sources: list
    rows: list
    cols: list
    source_runs: list
    row_runs: list
    col_runs: list


def index_runs(idx: torch.Tensor) -> list[slice]:
    """A 1-d index as the slices of its runs of consecutive values, in its order."""
    if not len(idx):
        return []
    v = idx.tolist()
    starts = [0] + [i for i in range(1, len(v)) if v[i] != v[i - 1] + 1]
    return [slice(v[a], v[b - 1] + 1) for a, b in zip(starts, starts[1:] + [len(v)])]


_LAYOUTS: OrderedDict = OrderedDict()


def sweep_layout(sizes, topologies, device) -> SweepLayout:
    """The groups of ``LayerDrive``, made once per set of topology objects and device (reading the masks'
    blocks cost 6 ms per batch on 784-100x5-10 SW, a sixth of a hybrid batch); the cache keeps the
    topologies alive, so an id is never reused while its entry exists."""
    key = (tuple(id(t) for t in topologies), tuple(sizes), str(device))
    hit = _LAYOUTS.get(key)
    if hit is None:
        hit = (_layout(sizes, topologies, torch.device(device)), list(topologies))
        _LAYOUTS[key] = hit
        while len(_LAYOUTS) > 16:
            _LAYOUTS.popitem(last=False)
    _LAYOUTS.move_to_end(key)
    return hit[0]


def _layout(sizes, topologies, device) -> SweepLayout:
    off = free_offsets(sizes)
    L = len(off) - 1
    nbr = {l: set() for l in range(L)}
    for a, c in free_layer_pairs(topologies):
        nbr[c].add(a)
    dense = set()  # free-layer pairs whose couplings a group may not lag: adjacent, or skips above the density
    for topo in topologies:
        for blk in topo.blocks():
            if blk.src and (blk.dst == blk.src + 1 or blk.count > SKIP_LAG_DENSITY * sizes[blk.src] * sizes[blk.dst]):
                dense |= {(blk.src - 1, blk.dst - 1), (blk.dst - 1, blk.src - 1)}
    colour: dict[int, int] = {}
    for l in range(L):
        used = {colour[m] for m in nbr[l] if m in colour and (m, l) in dense}
        colour[l] = min(set(range(L + 1)) - used)
    order = sorted(range(L), key=lambda l: (colour[l], l))
    units = [torch.arange(off[l], off[l + 1]) for l in order]
    perm = torch.cat(units).to(device) if units else torch.zeros(0, dtype=torch.long, device=device)
    identity = order == list(range(L))
    at, p = {}, 0  # each layer's slice in group order
    for l in order:
        at[l] = slice(p, p + off[l + 1] - off[l])
        p = at[l].stop
    groups, sources, rows_nat, cols_nat = [], [], [], []
    for g in sorted(set(colour.values())):
        members = [l for l in order if colour[l] == g]
        cols = slice(at[members[0]].start, at[members[-1]].stop)
        S = sorted(set().union(*(nbr[l] for l in members)), key=lambda m: at[m].start)
        rows = (torch.cat([torch.arange(at[m].start, at[m].stop) for m in S]) if S
                else torch.zeros(0, dtype=torch.long)).to(device)
        contiguous = bool(S) and all(at[a].stop == at[b].start for a, b in zip(S, S[1:]))
        groups.append(cols)
        sources.append(slice(at[S[0]].start, at[S[-1]].stop) if contiguous else rows)
        c = torch.arange(cols.start, cols.stop, device=device)
        rows_nat.append(rows if identity else perm[rows])
        cols_nat.append(c if identity else perm[c])
    return SweepLayout(None if identity else perm, None if identity else torch.argsort(perm), groups, sources,
                       rows_nat, cols_nat, [None if isinstance(src, slice) else index_runs(src) for src in sources],
                       [index_runs(r) for r in rows_nat], [index_runs(c) for c in cols_nat])


class LayerDrive:
    """h_g = b_g + rho(x) W[in, g] + sum_m rho(s_m) W[m, g], for one group g of free layers at a time (for SOR
    and residuals).

    Groups: the layers coloured greedily, in layer order, so that no two layers share a colour where they
    are adjacent or joined by skips denser than SKIP_LAG_DENSITY: a layered net's groups are the odd
    layers, then the even ones, and do not drive themselves, so updating a group in one product is
    Gauss-Seidel over the layers in that order. Sparser skips may join layers of one group; those
    couplings, like intralayer ones, are read from the state before the group's update (Jacobi inside
    the group).
    The free units are held in group order (``pack``/``unpack``) so each group's columns are one slice.
    One product per group against the rows of W that can reach it: its connected layers only (its own rows
    only with intralayer connections), copied contiguous once per call. Where those rows are one slice of
    s the product reads a view of it, otherwise they are gathered into a kept buffer first. Fewer groups
    mean fewer launches (784-100x5-10 at batch 20: the launches, not the flops, are what a sweep costs);
    leaving out a layer's own zero block reads 43 % fewer weights per sweep on 784-500x3-10.
    """

    def __init__(self, kernel, sizes, topologies):
        n, W = kernel.n_in, kernel.W
        lay = sweep_layout(sizes, topologies, W.device)
        self.perm, self.inv, self.groups, self.sources = lay.perm, lay.inv, lay.groups, lay.sources
        self.source_runs = lay.source_runs
        Wf = W[:, n:, n:]
        # each block copied from its (row run, column run) pieces: only the block's own weights are read (two
        # index_selects read the rows' whole width first; 30 ms per batch on 784-500x3-10 SW, 3 ms this way)
        self.W = [torch.cat([torch.cat([Wf[:, a, b] for b in c], 2) for a in r], 1) if r and c
                  else Wf.index_select(1, ri).index_select(2, ci).contiguous()
                  for r, c, ri, ci in zip(lay.row_runs, lay.col_runs, lay.rows, lay.cols)]
        self.Wff = Wf  # a view, in natural order: the face solve's couplings

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        """(..., Nf) in natural order -> group order (a new tensor)."""
        return t.clone() if self.perm is None else t.index_select(-1, self.perm)

    def unpack(self, t: torch.Tensor) -> torch.Tensor:
        return t if self.inv is None else t.index_select(-1, self.inv)

    def _source(self, s: torch.Tensor, g: int) -> torch.Tensor:
        src = self.sources[g]
        return s[..., src] if isinstance(src, slice) else s.index_select(-1, src)

    def __call__(self, s: torch.Tensor, c0: torch.Tensor, g: int) -> torch.Tensor:
        """Group g's drive h from packed s and c0."""
        return torch.baddbmm(c0[..., self.groups[g]], self._source(s, g), self.W[g])

    def plan(self, s: torch.Tensor, c0: torch.Tensor) -> list:
        """Per group (its view of packed s, views of its sources' runs or None, their view of s or a gather
        buffer, its c0, its W rows, an h buffer): a sweep's operands made once per batch shape (at a few live rows,
        slicing per sweep cost as much as the products)."""
        out = []
        for cols, src, runs, W in zip(self.groups, self.sources, self.source_runs, self.W):
            buf = s[..., src] if runs is None else s.new_empty(*s.shape[:-1], len(src))
            parts = None if runs is None else [s[..., r] for r in runs]  # views: s is updated in place
            out.append((s[..., cols], parts, buf, c0[..., cols], W, torch.empty_like(c0[..., cols])))
        return out

    def residual(self, s: torch.Tensor, c0: torch.Tensor) -> torch.Tensor:
        """max_i |s_i - clip(h_i)| per (trial, example), s and c0 in natural order: 0 exactly at a fixed point
        of the clipped dynamics."""
        s, c0 = self.pack(s), self.pack(c0)
        r = torch.zeros(s.shape[:-1], dtype=s.dtype, device=s.device)
        for g, cols in enumerate(self.groups):
            torch.maximum(r, (s[..., cols] - self(s, c0, g).clamp_(0, 1)).abs().amax(-1), out=r)
        return r


def per_example(kernel, s0: torch.Tensor, steps: int, tol: float, every: int, live: torch.Tensor | None = None):
    """Euler steps from s0 (T, B, Nf), each example stopping on its own.
    Returns (s, steps used (T, B), converged (T, B): stopped by tol rather than by the step count).
    live: (T, B) the examples to relax (default all); the others are returned as s0 with 0 steps."""
    T, B, _ = s0.shape
    rows = ActiveRows(T, B, s0.device)
    result, used = s0.clone(), torch.full((T, B), steps, dtype=torch.long)
    cur, nxt, c, t = s0.clone(), torch.empty_like(s0), kernel.c, 0
    if live is not None:
        used[~live.cpu()] = 0
        cur, c = rows.finish(~live.to(s0.device), cur, c)
        nxt = torch.empty_like(cur)
    while t < steps and rows.A:
        n = min(every, steps - t)
        for _ in range(n):
            kernel.free_step(cur, c, nxt)
            clip_(nxt)
            cur, nxt = nxt, cur
        t += n
        if n < every:
            break  # the remainder is never checked, as in the reference
        done = ((cur - nxt).abs().amax(-1) < tol) & rows.live  # nxt: the state one step before
        if bool(done.any()):
            tt, bb = rows.coords(done)
            result[tt, bb], used[tt.cpu(), bb.cpu()] = cur[done], t
            cur, c = rows.finish(done, cur, c)
            nxt = torch.empty_like(cur)
    converged = torch.ones(T, B, dtype=torch.bool)
    tt, bb = rows.coords(rows.live)
    result[tt, bb] = cur[rows.live]
    converged[tt.cpu(), bb.cpu()] = False
    return result, used, converged


# The face solve is tried on an example once a sweep moves it < FACE_FROM, and only while at most FACE_ROWS rows
# of the batch are live: with that few, a sweep costs its launches and weight reads whatever the rows, and the
# batch's slowest examples (hundreds of sweeps) set its time. Measured on MNIST (784-100x5-10 and 784-500x3-10
# MLFF, batch 20): trying it on every example costs more than the sweeps it saves (|U| ~ 90-290 units, ~1-3 ms
# a solve); at <= 4 rows, 90 % of the tries are accepted and a batch costs 5-17 % less.
FACE_FROM = 1e-3
FACE_ROWS = 4
FACE_TRIES = 3


def face_solve(Wff: torch.Tensor, c: torch.Tensor, s: torch.Tensor, tol: float) -> torch.Tensor | None:
    """The fixed point of s = clip(c + s Wff) on the face s lies near, solved exactly; None if not found.

    Wff (Nf, Nf) one trial's free couplings, c (Nf,) the example's constant drive, s (Nf,) its state. The face:
    units with 0 < h < 1 are free (U), the others held at the bound h is beyond (H: h >= 1 at 1, the rest at 0);
    on it the fixed point is linear, (I - Wff[U, U]^T) s_U = c_U + sum_{j in H} Wff[j, U], solved in float64.
    The answer is kept only if it is a fixed point of the clipped map itself (max |s - clip(h)| below tol, or
    below the dtype's rounding of h where that is larger), else the face is re-read from its h (FACE_TRIES).
    Near a strict local minimum its face holds one fixed point, the one the sweeps were converging to, reached
    exactly instead of within tol per sweep.
    """
    floor = max(tol, 64 * torch.finfo(s.dtype).eps)  # a float32 h carries ~1e-6 of rounding on these nets
    h = torch.addmv(c, Wff.T, s)
    for _ in range(FACE_TRIES):
        high = h >= 1
        u, hi = torch.nonzero((h > 0) & ~high).squeeze(1), torch.nonzero(high).squeeze(1)
        rows = Wff.index_select(1, u)
        A = -rows.index_select(0, u).T.double()
        A.diagonal().add_(1.0)
        rhs = c.index_select(0, u) + rows.index_select(0, hi).sum(0)
        out = high.to(s.dtype)
        out[u] = torch.linalg.solve(A, rhs.double()).to(s.dtype)
        h = torch.addmv(c, Wff.T, out)
        if float((out - h.clamp(0, 1)).abs().max()) < floor:
            return out
    return None


def hybrid_sor(drive: LayerDrive, s0: torch.Tensor, c0: torch.Tensor, omega: float, omega_from: float, tol: float,
               max_sweeps: int, every: int = 1, face: bool = False):
    """Projected SOR over the drive's layer groups from s0 (T, B, Nf) until a sweep moves an example < tol
    (checked every ``every`` sweeps). Returns (s, sweeps used (T, B), converged (T, B), finished by a face
    solve (T, B)).

    Each example sweeps as projected Gauss-Seidel (omega 1: each layer's exact minimiser when it
    has no intralayer couplings) until a sweep moves it less than ``omega_from``, i.e. it is in
    the basin it will settle in; only then is it over-relaxed with ``omega``. Over-relaxing
    from the start sends some examples into another local minimum (measured on MNIST nets;
    so does switching once a sweep moves < 3e-2, where 1e-2 and 1e-3 do not).
    face: the batch's last few examples (FACE_ROWS) are finished by ``face_solve`` once a sweep moves them
    < FACE_FROM, where it finds their fixed point.
    """
    T, B, _ = s0.shape
    rows = ActiveRows(T, B, s0.device)
    s0, c0 = drive.pack(s0), drive.pack(c0)  # sweeps run in the drive's group order
    result, sweeps = s0.clone(), torch.full((T, B), max_sweeps, dtype=torch.long)
    faced = torch.zeros(T, B, dtype=torch.bool)
    cur, prev = s0.clone(), torch.empty_like(s0)
    om = torch.ones(T, B, 1, dtype=s0.dtype, device=s0.device) if omega != 1 else None
    plan = drive.plan(cur, c0)
    for k in range(1, max_sweeps + 1):
        check = k % every == 0 or k == max_sweeps
        if check:
            prev.copy_(cur)
        for layer, parts, span, c, W, h in plan:
            if parts is not None:  # copies of slices: ~5x faster than index_select at 20 rows, the same values
                torch.cat(parts, -1, out=span)
            torch.baddbmm(c, span, W, out=h)
            if om is None:
                torch.clamp(h, 0.0, 1.0, out=layer)
            else:  # in place: each entry reads its own old value only
                torch.lerp(layer, h, om, out=layer)
                layer.clamp_(0.0, 1.0)
        if not check:
            continue
        moved = (cur - prev).abs_().amax(-1)
        if om is not None:
            om.masked_fill_((moved < omega_from).unsqueeze(-1), omega)
        done = (moved < tol) & rows.live
        if face and rows.A <= FACE_ROWS:
            for t, a in torch.nonzero((moved < FACE_FROM) & rows.live & ~done).tolist():
                got = face_solve(drive.Wff[t], drive.unpack(c0[t, a]), drive.unpack(cur[t, a]), tol)
                if got is not None:
                    cur[t, a], done[t, a] = drive.pack(got), True
                    faced[t, int(rows.idx[t, a])] = True
        if bool(done.any()):
            tt, bb = rows.coords(done)
            result[tt, bb], sweeps[tt.cpu(), bb.cpu()] = cur[done], k
            cur, c0, *o = rows.finish(done, cur, c0, *([om] if om is not None else []))
            if not rows.A:
                break
            if cur.shape[1] != prev.shape[1]:  # compacted: new tensors, new views
                om, prev, plan = (o[0] if o else None), torch.empty_like(cur), drive.plan(cur, c0)
    converged = torch.ones(T, B, dtype=torch.bool)
    if bool(rows.live.any()):
        tt, bb = rows.coords(rows.live)
        result[tt, bb] = cur[rows.live]
        converged[tt.cpu(), bb.cpu()] = False
    return drive.unpack(result), sweeps, converged, faced


class FreePhaseLog:
    """Per-trial totals of the free phases since the last report (one epoch's lines in metrics.json)."""

    def __init__(self):
        self._t: dict | None = None

    def add(self, steps, sweeps, converged, residual, faced=None, fell_back=None) -> None:
        """One relaxation's (T, B) steps, sweeps, converged flags, residuals, face-solve flags and Euler
        fallbacks after the sweep cap (host tensors)."""
        faced = torch.zeros_like(converged) if faced is None else faced
        fell_back = torch.zeros_like(converged) if fell_back is None else fell_back
        new = {"examples": torch.full((steps.shape[0],), steps.shape[1], dtype=torch.long),
               "steps": steps.sum(1), "sweeps": sweeps.sum(1), "unconverged": (~converged).sum(1),
               "faced": faced.sum(1), "fell_back": fell_back.sum(1)}
        peaks = {"steps_max": steps.amax(1), "sweeps_max": sweeps.amax(1), "residual_max": residual.double().amax(1)}
        if self._t is None or len(self._t["examples"]) != steps.shape[0]:
            self._t = {**new, **peaks}
            return
        for k, v in new.items():
            self._t[k] += v
        for k, v in peaks.items():
            self._t[k] = torch.maximum(self._t[k], v)

    def report(self) -> dict:
        """Per trial: the free phases' examples, mean and max Euler steps and SOR sweeps per example, examples
        that hit the step cap (after the sweep cap's fallback: the hybrid's examples that hit max_sweeps go on
        with the reference's Euler steps from the prefix's end, counted as free_sweep_fallbacks), examples
        finished by a face solve, and the largest fixed-point residual reached; then cleared."""
        t, self._t = self._t, None
        if t is None:
            return {}
        n = t["examples"].double()
        return {"free_examples": t["examples"].tolist(), "free_steps_mean": (t["steps"] / n).tolist(),
                "free_steps_max": t["steps_max"].tolist(),
                "free_sweeps_mean": (t["sweeps"] / n).tolist(), "free_sweeps_max": t["sweeps_max"].tolist(),
                "free_unconverged": t["unconverged"].tolist(), "free_face_solves": t["faced"].tolist(),
                "free_sweep_fallbacks": t["fell_back"].tolist(),
                "free_residual_max": t["residual_max"].tolist()}
