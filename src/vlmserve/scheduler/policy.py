"""The scheduler's decision: a pure function from a snapshot of models and waiters to actions.

No engines, clocks or I/O here: `plan` gets plain views and `now`, and answers Admit / Load(+evict) / Unload.
Waiting is the absence of an action; rejections (queue full, never fits, queue timeout) are decided at the
edges by the scheduler itself.

Ordering (`swap-aware`, the default): a loaded model keeps serving its own queue while requests for a model
that is not loaded wait, until the oldest of those has waited `max_swap_wait` seconds; then the loaded model
stops taking new requests, drains, and is swapped out. This replaces "reload on every client switch" with
bounded runs. `fifo` is the plain first-come order (the head of the line blocks everyone), kept for comparison.
Within one model, live requests go before background (batch) ones, and clients take turns (round-robin).

Memory is counted per device (RAM and each GPU, see placement.py): a model loads when every device its
placement uses has room; eviction takes idle models that hold memory on the devices that are short, never
ones that would free memory only elsewhere.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from vlmserve.scheduler.placement import RAM, Layout, Memory, Placement, fits, placements, plus, short_of

ModelState = Literal["unloaded", "loading", "loaded", "unloading"]
HOLDS_MEMORY: tuple[ModelState, ...] = ("loading", "loaded", "unloading")  # states that count against the budget


@dataclass(frozen=True, slots=True)
class ModelView:
    name: str
    state: ModelState
    in_flight: int
    parallel: int
    need_bytes: int  # RAM: measured when loaded and known, else estimated; 0 for remote engines
    pinned: bool = False
    priority: int = 0  # higher = evicted later
    last_used: float = 0.0
    expires_at: float | None = None  # when an idle loaded model unloads (keep-alive); None = never / busy
    variant: str = ""  # engine options it is loaded with ("" = the catalog's)
    context_size: int = 0  # of the engine it runs (or will run)
    gpu_layers: int | str = "auto"  # of the engine it runs: what a request's num_gpu is compared with
    gpu: Mapping[int, int] = field(default_factory=dict)  # bytes held per GPU (measured, else estimated)
    layout: Layout | None = None  # what a load takes, by part (None: need_bytes of RAM, CPU only)

    @property
    def held(self) -> dict[int, int]:
        return {RAM: self.need_bytes, **self.gpu}


@dataclass(frozen=True, slots=True)
class WaiterView:
    id: int
    model: str
    client: str
    enqueued_at: float
    background: bool = False
    variant: str | None = None  # engine options the request needs, as the key to load them; None = any engine
    context_size: int = 0  # the least context that serves it
    gpu_layers: int | str | None = None  # the GPU layers it names (None: any)
    need_bytes: int | None = None  # RAM its variant takes when loaded (None: the model's need)
    layout: Layout | None = None  # what its variant takes, by part (None: need_bytes, or the model's)

    def fits(self, model: ModelView) -> bool:
        if self.variant is None:
            return True
        return model.context_size >= self.context_size and self.gpu_layers in (None, model.gpu_layers)


@dataclass(frozen=True, slots=True)
class Admit:
    waiter_id: int


@dataclass(frozen=True, slots=True)
class Load:
    model: str
    evict: tuple[str, ...] = ()
    variant: str | None = None  # load with these engine options (None: as it is); evicting itself = "reload"
    placement: Placement | None = field(default=None, compare=False)  # where its memory goes


@dataclass(frozen=True, slots=True)
class Unload:
    model: str
    reason: str


Action = Admit | Load | Unload


@dataclass(frozen=True, slots=True)
class Policy:
    budget_bytes: int  # RAM for our models
    max_swap_wait: float = 10.0
    ordering: Literal["swap-aware", "fifo"] = "swap-aware"
    gpu_caps: Mapping[int, int] = field(default_factory=dict)  # per GPU: what our models may hold there now

    @property
    def caps(self) -> dict[int, int]:
        return {RAM: self.budget_bytes, **self.gpu_caps}


def fair_order(waiters: Iterable[WaiterView]) -> list[WaiterView]:
    """One model's waiters: live before background, then clients in turns, each client's own in arrival order."""
    ordered: list[WaiterView] = []
    for background in (False, True):
        per_client: OrderedDict[str, list[WaiterView]] = OrderedDict()
        for waiter in sorted((w for w in waiters if w.background == background), key=lambda w: (w.enqueued_at, w.id)):
            per_client.setdefault(waiter.client, []).append(waiter)
        queues = list(per_client.values())
        while queues:
            ordered.extend(queue.pop(0) for queue in queues)
            queues = [queue for queue in queues if queue]
    return ordered


def _head_variant(queue: Sequence[WaiterView]) -> WaiterView | None:
    """The request whose engine options a load uses: the first in fair order that names any."""
    for waiter in fair_order(queue):
        if waiter.variant is not None:
            return waiter
    return None


def _variant_of(queue: Sequence[WaiterView]) -> str | None:
    head = _head_variant(queue)
    return head.variant if head is not None else None


def _layout_of(model: ModelView, queue: Sequence[WaiterView]) -> Layout:
    """What a load for this queue takes: its variant's layout (or RAM need), else the model's own."""
    head = _head_variant(queue)
    if head is not None and head.layout is not None:
        return head.layout
    if head is not None and head.need_bytes is not None:
        return Layout(head.need_bytes)
    return model.layout if model.layout is not None else Layout(model.need_bytes)


def _eviction_key(model: ModelView) -> tuple[bool, int, float]:
    return (model.pinned, model.priority, model.last_used)


def eviction_order(models: Iterable[ModelView]) -> list[ModelView]:
    """Who goes first when memory is needed: unpinned before pinned, low priority first, least recently used."""
    return sorted(models, key=_eviction_key)


def _room(models: Mapping[str, ModelView], caps: Memory) -> dict[int, int]:
    """What is free on each device: its capacity less what models hold there."""
    room = dict(caps)
    for m in models.values():
        if m.state in HOLDS_MEMORY:
            room = plus(room, m.held, -1)
    return room


def _holds_any(model: ModelView, devices: Iterable[int] | None = None) -> bool:
    held = model.held
    return any(held.get(d, 0) > 0 for d in (held if devices is None else devices))


def victims_for(need: Memory, room: Memory, idle: Iterable[ModelView]) -> list[str] | None:
    """Idle models to evict, in eviction order, until `need` fits; only those holding memory on a device that
    is short are taken (evicting one that frees memory only elsewhere would not help). None: it cannot fit."""
    short = short_of(need, room)
    chosen: list[str] = []
    for victim in eviction_order(idle):
        if not short:
            break
        if not _holds_any(victim, short):
            continue
        chosen.append(victim.name)
        room = plus(room, victim.held)
        short = short_of(need, room)
    return None if short else chosen


def degraded(layout: Layout, caps: Memory) -> bool:
    """The model can never run whole on one GPU here (larger than every GPU's capacity): it takes a split, some
    layers or the CPU, from the room there is, rather than evicting GPU models for a placement that stays
    degraded anyway (that made two such models take turns on a GPU forever: bench/gpu_packing.py)."""
    if not layout.offload or layout.forced is not None or not any(d != RAM for d in caps):
        return False
    best = placements(layout, caps)
    return not best or not (best[0].complete and len(best[0].devices) == 1)


def _choose(
    layout: Layout, room: Memory, caps: Memory, idle: Sequence[ModelView], stale: Sequence[ModelView]
) -> tuple[Placement, tuple[str, ...]] | None:
    """The best placement that fits now, else the best that fits after evicting idle models; None: wait.

    A degraded model (see `degraded`) is placed with the room there is now plus what `stale` idle models (not
    used for max_swap_wait) hold; other idle models are part of the working set and stay."""
    if degraded(layout, caps):
        reachable = dict(room)
        for model in stale:
            reachable = plus(reachable, model.held)
        candidates = placements(layout, {d: min(c, reachable.get(d, 0)) for d, c in caps.items()}, room)
        idle = stale
    else:
        candidates = placements(layout, caps, room)
    for candidate in candidates:
        if fits(candidate.memory, room):
            return candidate, ()
    # evict for the candidate whose most valuable victim is worth least (pinned, priority, then least recently
    # used): a model that only fits one GPU must not push out the hot model there when another GPU has a cold one
    by_name = {m.name: m for m in idle}
    options: list[tuple[tuple[bool, int, float], int, Placement, tuple[str, ...]]] = []
    for order, candidate in enumerate(candidates):
        victims = victims_for(candidate.memory, room, idle)
        if victims is not None:
            worth = max((_eviction_key(by_name[v]) for v in victims), default=(False, 0, 0.0))
            options.append((worth, order, candidate, tuple(victims)))
    if not options:
        return None
    best = min(options, key=lambda o: (o[0], o[1]))
    return best[2], best[3]


def plan(models: Mapping[str, ModelView], waiters: Sequence[WaiterView], policy: Policy, now: float) -> list[Action]:
    by_model: dict[str, list[WaiterView]] = {}
    for waiter in waiters:
        by_model.setdefault(waiter.model, []).append(waiter)
    actions: list[Action] = [
        Unload(m.name, "keep_alive")
        for m in models.values()
        if m.state == "loaded"
        and m.in_flight == 0
        and m.name not in by_model
        and m.expires_at is not None
        and now >= m.expires_at
    ]
    expiring = {a.model for a in actions if isinstance(a, Unload)}
    if policy.ordering == "fifo":
        return actions + _plan_fifo(models, waiters, policy, expiring)
    return actions + _plan_swap_aware(models, by_model, policy, now, expiring)


def _stale(model: ModelView, policy: Policy, now: float) -> bool:
    """Loaded, idle and unused for max_swap_wait: not part of the working set any more."""
    return model.state == "loaded" and model.in_flight == 0 and now - model.last_used >= policy.max_swap_wait


def _drainers(target: Memory, room: Memory, models: Mapping[str, ModelView]) -> set[str]:
    """Loaded models that must stop taking work so that `target` gets its memory: holders on the devices that
    are short, in eviction order, until enough would be freed."""
    drain: set[str] = set()
    short = short_of(target, room)
    for holder in eviction_order(m for m in models.values() if m.state == "loaded" and _holds_any(m)):
        if not short:
            break
        if _holds_any(holder, short):
            drain.add(holder.name)
            room = plus(room, holder.held)
            short = short_of(target, room)
    return drain


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """What every step of the swap-aware plan reads: the models, their waiters, the policy and the time."""

    models: Mapping[str, ModelView]
    by_model: Mapping[str, list[WaiterView]]
    policy: Policy
    now: float


def _plan_swap_aware(
    models: Mapping[str, ModelView],
    by_model: dict[str, list[WaiterView]],
    policy: Policy,
    now: float,
    expiring: set[str],
) -> list[Action]:
    """Loaded models serve their queues (except those draining for an overdue model), then waiting models load."""
    snap = _Snapshot(models, by_model, policy, now)
    pending, aged = _pending(snap)
    room = _room(models, policy.caps)
    actions, room, busy = _serve_loaded(snap, room, _draining_for(snap, aged, room))
    return actions + _load_pending(snap, pending, aged, room, busy | expiring)


def _pending(snap: _Snapshot) -> tuple[list[str], list[str]]:
    """Unloaded models with waiters, the longest-waiting first; and those of them that are overdue (their oldest
    request has waited max_swap_wait)."""
    oldest = {name: min(w.enqueued_at for w in ws) for name, ws in snap.by_model.items()}
    pending = sorted((n for n in snap.by_model if snap.models[n].state == "unloaded"), key=lambda n: oldest[n])
    return pending, [name for name in pending if snap.now - oldest[name] >= snap.policy.max_swap_wait]


def _draining_for(snap: _Snapshot, aged: Sequence[str], room: Memory) -> set[str]:
    """An overdue model gets memory: whoever holds it stops taking work, then is swapped out. A degraded one
    takes the room there is: nobody drains for it."""
    caps = snap.policy.caps
    draining: set[str] = set()
    for name in aged:
        layout = _layout_of(snap.models[name], snap.by_model[name])
        target = placements(layout, caps, room)
        if target and not degraded(layout, caps):
            draining |= _drainers(target[0].memory, room, snap.models)
    return draining


def _serve_loaded(
    snap: _Snapshot, room: dict[int, int], draining: set[str]
) -> tuple[list[Action], dict[int, int], set[str]]:
    """Each loaded model that is not draining admits its fitting waiters, in fair order, into its free slots; an
    idle one whose waiters all want other engine options reloads with theirs (when they fit its memory).
    Returns the actions, the room left, and the models that got work (never evicted by this plan)."""
    actions: list[Action] = []
    busy: set[str] = set()
    for name, queue in snap.by_model.items():
        model = snap.models[name]
        if model.state != "loaded" or name in draining:
            continue
        free_slots = model.parallel - model.in_flight
        if free_slots <= 0:
            continue  # the common case under load: skip ordering a queue nobody leaves now
        fitting = [w for w in queue if w.fits(model)]
        if fitting:
            actions.extend(Admit(w.id) for w in fair_order(fitting)[:free_slots])
            busy.add(name)
        elif model.in_flight == 0:
            own = plus(room, model.held)
            layout = _layout_of(model, queue)
            fitting_now = [p for p in placements(layout, snap.policy.caps, own) if fits(p.memory, own)]
            if fitting_now:
                actions.append(Load(name, (name,), _variant_of(queue), fitting_now[0]))
                room = plus(own, fitting_now[0].memory, -1)
                busy.add(name)
    return actions, room, busy


def _evictable(snap: _Snapshot, name: str, aged: Sequence[str], reserved: set[str]) -> list[ModelView]:
    """Idle loaded models holding memory that `name`'s load may evict: not reserved by this plan, and, unless
    `name` is overdue, none with waiters of its own."""
    return [
        m
        for m in snap.models.values()
        if m.state == "loaded"
        and m.in_flight == 0
        and _holds_any(m)
        and m.name not in reserved
        and (name in aged or m.name not in snap.by_model)
    ]


def _load_pending(
    snap: _Snapshot, pending: Sequence[str], aged: Sequence[str], room: dict[int, int], reserved: set[str]
) -> list[Action]:
    """Waiting models load, the longest-waiting first, into the room left or by evicting idle models (`_choose`);
    an overdue model that cannot load yet stops the younger ones from taking the memory it waits for."""
    actions: list[Action] = []
    reserved = set(reserved)
    for name in pending:
        idle = _evictable(snap, name, aged, reserved)
        stale = [m for m in idle if _stale(m, snap.policy, snap.now)]
        choice = _choose(_layout_of(snap.models[name], snap.by_model[name]), room, snap.policy.caps, idle, stale)
        if choice is not None:
            placement, evict = choice
            actions.append(Load(name, evict, _variant_of(snap.by_model[name]), placement))
            reserved.update(evict)
            for victim in evict:
                room = plus(room, snap.models[victim].held)
            room = plus(room, placement.memory, -1)
        elif name in aged:
            break  # nothing younger may take memory the overdue model is waiting for
    return actions


def _plan_fifo(
    models: Mapping[str, ModelView], waiters: Sequence[WaiterView], policy: Policy, expiring: set[str]
) -> list[Action]:
    actions: list[Action] = []
    caps = policy.caps
    slots = {m.name: m.parallel - m.in_flight for m in models.values() if m.state == "loaded"}
    room = _room(models, caps)
    admitted: set[str] = set()
    for waiter in sorted(waiters, key=lambda w: (w.enqueued_at, w.id)):
        model = models[waiter.model]
        if model.state == "loaded" and slots.get(model.name, 0) > 0 and waiter.fits(model):
            actions.append(Admit(waiter.id))
            slots[model.name] -= 1
            admitted.add(model.name)
            continue
        layout = _layout_of(model, [waiter] if waiter.variant is not None else [])
        if model.state == "loaded" and not waiter.fits(model) and model.in_flight == 0 and model.name not in admitted:
            own = plus(room, model.held)
            fitting_now = [p for p in placements(layout, caps, own) if fits(p.memory, own)]
            if fitting_now:
                actions.append(Load(model.name, (model.name,), waiter.variant, fitting_now[0]))
        if model.state == "unloaded":
            idle = [
                m
                for m in models.values()
                if m.state == "loaded" and m.in_flight == 0 and _holds_any(m) and m.name not in expiring | admitted
            ]
            choice = _choose(layout, room, caps, idle, idle)
            if choice is not None:
                actions.append(Load(model.name, choice[1], waiter.variant, choice[0]))
        break  # head of the line blocks everyone behind it
    return actions
