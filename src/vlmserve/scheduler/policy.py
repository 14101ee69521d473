"""The scheduler's decision: a pure function from a snapshot of models and waiters to actions.

No engines, clocks or I/O here: `plan` gets plain views and `now`, and answers Admit / Load(+evict) / Unload.
Waiting is the absence of an action; rejections (queue full, never fits, queue timeout) are decided at the
edges by the scheduler itself.

Ordering (`swap-aware`, the default): a loaded model keeps serving its own queue while requests for a model
that is not loaded wait, until the oldest of those has waited `max_swap_wait` seconds; then the loaded model
stops taking new requests, drains, and is swapped out. This replaces "reload on every client switch" with
bounded runs. `fifo` is the plain first-come order (the head of the line blocks everyone), kept for comparison.
Within one model, live requests go before background (batch) ones, and clients take turns (round-robin).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

ModelState = Literal["unloaded", "loading", "loaded", "unloading"]
HOLDS_MEMORY: tuple[ModelState, ...] = ("loading", "loaded", "unloading")  # states that count against the budget


@dataclass(frozen=True, slots=True)
class ModelView:
    name: str
    state: ModelState
    in_flight: int
    parallel: int
    need_bytes: int  # measured when loaded and known, else estimated; 0 for remote engines
    pinned: bool = False
    priority: int = 0  # higher = evicted later
    last_used: float = 0.0
    expires_at: float | None = None  # when an idle loaded model unloads (keep-alive); None = never / busy
    variant: str = ""  # engine options it is loaded with ("" = the catalog's)
    context_size: int = 0  # of the engine it runs (or will run)
    gpu_layers: int = -1


@dataclass(frozen=True, slots=True)
class WaiterView:
    id: int
    model: str
    client: str
    enqueued_at: float
    background: bool = False
    variant: str | None = None  # engine options the request needs, as the key to load them; None = any engine
    context_size: int = 0  # the least context that serves it
    gpu_layers: int | None = None  # the GPU layers it names (None: any)
    need_bytes: int | None = None  # memory its variant takes when loaded (None: the model's need)

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


@dataclass(frozen=True, slots=True)
class Unload:
    model: str
    reason: str


Action = Admit | Load | Unload


@dataclass(frozen=True, slots=True)
class Policy:
    budget_bytes: int
    max_swap_wait: float = 10.0
    ordering: Literal["swap-aware", "fifo"] = "swap-aware"


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


def _need_of(model: ModelView, queue: Sequence[WaiterView]) -> int:
    """Memory a load for this queue takes: its variant's estimate, else the model's own."""
    head = _head_variant(queue)
    return head.need_bytes if head is not None and head.need_bytes is not None else model.need_bytes


def eviction_order(models: Iterable[ModelView]) -> list[ModelView]:
    """Who goes first when memory is needed: unpinned before pinned, low priority first, least recently used."""
    return sorted(models, key=lambda m: (m.pinned, m.priority, m.last_used))


def _used(models: Mapping[str, ModelView]) -> int:
    return sum(m.need_bytes for m in models.values() if m.state in HOLDS_MEMORY)


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


def _plan_swap_aware(
    models: Mapping[str, ModelView],
    by_model: dict[str, list[WaiterView]],
    policy: Policy,
    now: float,
    expiring: set[str],
) -> list[Action]:
    actions: list[Action] = []
    oldest = {name: min(w.enqueued_at for w in ws) for name, ws in by_model.items()}
    pending = sorted((name for name in by_model if models[name].state == "unloaded"), key=lambda n: oldest[n])
    aged = [name for name in pending if now - oldest[name] >= policy.max_swap_wait]
    free = policy.budget_bytes - _used(models)
    draining: set[str] = set()
    for name in aged:  # an overdue model gets memory: whoever holds it stops taking work, then is swapped out
        need = _need_of(models[name], by_model[name]) - free
        for holder in eviction_order(m for m in models.values() if m.state == "loaded" and m.need_bytes > 0):
            if need <= 0:
                break
            draining.add(holder.name)
            need -= holder.need_bytes
    busy: set[str] = set()  # models that got work in this plan: never evicted by it
    for name, queue in by_model.items():
        model = models[name]
        if model.state != "loaded" or name in draining:
            continue
        free_slots = model.parallel - model.in_flight
        if free_slots <= 0:
            continue  # the common case under load: skip ordering a queue nobody leaves now
        fitting = [w for w in queue if w.fits(model)]
        if fitting:
            actions.extend(Admit(w.id) for w in fair_order(fitting)[:free_slots])
            busy.add(name)
        elif model.in_flight == 0 and _need_of(model, queue) <= free + model.need_bytes:
            # only requests for other engine options wait: reload it with theirs (when they fit its memory)
            actions.append(Load(name, (name,), _variant_of(queue)))
            free -= _need_of(model, queue) - model.need_bytes
            busy.add(name)
    reserved = busy | expiring
    for name in pending:
        model = models[name]
        variant = _variant_of(by_model[name])
        need = _need_of(model, by_model[name])
        if need <= free:
            actions.append(Load(name, variant=variant))
            free -= need
            continue
        overdue = name in aged
        idle = [
            m
            for m in models.values()
            if m.state == "loaded"
            and m.in_flight == 0
            and m.need_bytes > 0
            and m.name not in reserved
            and (overdue or m.name not in by_model)
        ]
        evict: list[str] = []
        room = free
        for victim in eviction_order(idle):
            if room >= need:
                break
            evict.append(victim.name)
            room += victim.need_bytes
        if room >= need:
            actions.append(Load(name, tuple(evict), variant))
            reserved.update(evict)
            free = room - need
        elif overdue:
            break  # nothing younger may take memory the overdue model is waiting for
    return actions


def _plan_fifo(
    models: Mapping[str, ModelView], waiters: Sequence[WaiterView], policy: Policy, expiring: set[str]
) -> list[Action]:
    actions: list[Action] = []
    slots = {m.name: m.parallel - m.in_flight for m in models.values() if m.state == "loaded"}
    free = policy.budget_bytes - _used(models)
    admitted: set[str] = set()
    for waiter in sorted(waiters, key=lambda w: (w.enqueued_at, w.id)):
        model = models[waiter.model]
        if model.state == "loaded" and slots.get(model.name, 0) > 0 and waiter.fits(model):
            actions.append(Admit(waiter.id))
            slots[model.name] -= 1
            admitted.add(model.name)
            continue
        need = waiter.need_bytes if waiter.need_bytes is not None else model.need_bytes
        if (
            model.state == "loaded"
            and not waiter.fits(model)
            and model.in_flight == 0
            and model.name not in admitted
            and need <= free + model.need_bytes
        ):
            actions.append(Load(model.name, (model.name,), waiter.variant))
        if model.state == "unloaded":
            idle = [
                m
                for m in models.values()
                if m.state == "loaded" and m.in_flight == 0 and m.need_bytes > 0 and m.name not in expiring | admitted
            ]
            evict, room = [], free
            for victim in sorted(idle, key=lambda m: m.last_used):
                if room >= need:
                    break
                evict.append(victim.name)
                room += victim.need_bytes
            if room >= need:
                actions.append(Load(model.name, tuple(evict), waiter.variant))
        break  # head of the line blocks everyone behind it
    return actions
