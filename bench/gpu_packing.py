"""GPU packing: the same request trace on simulated GPUs, placed three ways, in virtual time (no sleeps, no GPU).

- all-or-nothing: a model goes whole onto the GPU with most free memory, or whole onto the CPU when it is
  larger than every GPU; when it does not fit, idle models are evicted least recently used first, wherever
  they are (the simple VRAM-limit wrappers; Ollama itself also offloads part of a model that fits no GPU).
- vlmserve, whole models: the real `policy.plan`, but no partial offload (device-aware eviction only).
- vlmserve: the real `policy.plan` with partial offload (as many layers as fit the best GPU, the rest on CPU).

A request's service time is its model's GPU time x (share of the model on GPUs + CPU_SLOWDOWN x share on the
CPU); a load takes LOAD_BASE + size / LOAD_RATE. Requests that wait longer than QUEUE_TIMEOUT are dropped
(unserved). Two machines, each with a trace of phases (every PHASE seconds some GPU models become hot, the others
come at a tenth of their rate; the CPU models all the time), five seeds each. Printed per seed: requests
served, loads, p95 wait; then each policy's mean ratio to all-or-nothing (and its range over the seeds).

    .venv/bin/python bench/gpu_packing.py [--minutes 60] [--seeds 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import heapq
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from vlmserve.scheduler import policy as pol
from vlmserve.scheduler.placement import RAM, Layout, Placement, fits, placements, plus

GB = 2**30
CPU_SLOWDOWN = 10.0  # decoding on the CPU vs on a GPU, for a memory-bound LLM (order of magnitude)
LOAD_BASE, LOAD_RATE = 1.0, 2 * GB  # seconds per load + bytes per second from the page cache
QUEUE_TIMEOUT = 120.0
KEEP_ALIVE = 300.0


@dataclass(frozen=True)
class ModelDef:
    name: str
    size: int  # bytes, weights + KV cache
    gpu_seconds: float  # one request, all on a GPU
    rate: float  # requests per second in the trace
    gpu: bool = True  # False: a CPU-only engine (OCR, embeddings)

    def layout(self) -> Layout:
        if not self.gpu:
            return Layout(self.size)
        return Layout(GB // 2, (self.size // 40,) * 40, gpu_context=GB // 2, offload=True)


PHASE = 600.0  # seconds
COLD = 0.1  # rate of a GPU model outside its hot phases, relative to its own


@dataclass(frozen=True)
class Scenario:
    name: str
    caps: dict[int, int]  # what our models may hold per device (GPUs at a 90% budget)
    models: list[ModelDef]
    hot: int  # GPU models hot at a time


SCENARIOS = [
    Scenario(
        "24 + 16 GB GPUs, 48 GB RAM, 4 GPU models (2 hot at a time) + OCR + embeddings",
        {RAM: 48 * GB, 0: int(0.9 * 24 * GB), 1: int(0.9 * 16 * GB)},
        [
            ModelDef("vlm-7b", 8 * GB, 2.0, 0.25),
            ModelDef("llm-14b", 14 * GB, 4.0, 0.10),
            ModelDef("coder-14b", 13 * GB, 4.0, 0.10),
            ModelDef("llm-32b", 26 * GB, 8.0, 0.03),  # larger than either GPU
            ModelDef("ocr", 1 * GB, 0.5, 0.20, gpu=False),
            ModelDef("embed", GB // 2, 0.1, 0.40, gpu=False),
        ],
        2,
    ),
    Scenario(
        "one 16 GB GPU, 64 GB RAM: a 26 GB model and a 7B VLM (1 hot at a time) + OCR",
        {RAM: 64 * GB, 0: int(0.9 * 16 * GB)},
        [
            ModelDef("llm-32b", 26 * GB, 8.0, 0.05),
            ModelDef("vlm-7b", 8 * GB, 2.0, 0.25),
            ModelDef("ocr", 1 * GB, 0.5, 0.20, gpu=False),
        ],
        1,
    ),
]


@dataclass
class Sim:
    model: ModelDef
    state: pol.ModelState = "unloaded"
    in_flight: int = 0
    last_used: float = 0.0
    expires_at: float | None = None
    placement: Placement | None = None
    held: dict[int, int] = field(default_factory=dict)

    def view(self, layout: Layout) -> pol.ModelView:
        return pol.ModelView(
            self.model.name, self.state, self.in_flight, 1, self.held.get(RAM, 0), last_used=self.last_used,
            expires_at=self.expires_at, gpu={d: b for d, b in self.held.items() if d != RAM}, layout=layout,
        )  # fmt: skip


Planner = Callable[[Mapping[str, pol.ModelView], Sequence[pol.WaiterView], float], list[pol.Action]]


def vlmserve(whole: bool) -> Callable[[Scenario], Planner]:
    def make(scenario: Scenario) -> Planner:
        caps = scenario.caps
        policy = pol.Policy(caps[RAM], max_swap_wait=10.0, gpu_caps={d: c for d, c in caps.items() if d != RAM})
        return lambda models, waiters, now: _plan(policy, whole, models, waiters, now)

    return make


def _plan(
    policy: pol.Policy,
    whole: bool,
    models: Mapping[str, pol.ModelView],
    waiters: Sequence[pol.WaiterView],
    now: float,
) -> list[pol.Action]:
    if whole:
        models = {n: dataclasses.replace(m, layout=_whole(m.layout)) for n, m in models.items()}
    return pol.plan(models, waiters, policy, now)


def _whole(layout: Layout | None) -> Layout | None:
    return dataclasses.replace(layout, whole=True) if layout is not None and layout.offload else layout


def all_or_nothing(scenario: Scenario) -> Planner:
    return lambda models, waiters, now: _all_or_nothing(scenario.caps, models, waiters, now)


def _all_or_nothing(
    caps: dict[int, int], models: Mapping[str, pol.ModelView], waiters: Sequence[pol.WaiterView], now: float
) -> list[pol.Action]:
    """Whole on the GPU with most room (CPU when larger than every GPU); LRU eviction anywhere; FIFO loads."""
    actions: list[pol.Action] = [
        pol.Unload(m.name, "keep_alive") for m in models.values()
        if m.state == "loaded" and m.in_flight == 0 and m.expires_at is not None and now >= m.expires_at
        and not any(w.model == m.name for w in waiters)
    ]  # fmt: skip
    gone = {a.model for a in actions if isinstance(a, pol.Unload)}
    room = dict(caps)
    for m in models.values():
        if m.state in pol.HOLDS_MEMORY and m.name not in gone:
            room = plus(room, m.held, -1)
    for gone_name in gone:
        room = plus(room, {k: 0 for k in models[gone_name].held})
    slots = {m.name: m.parallel - m.in_flight for m in models.values() if m.state == "loaded"}
    for waiter in sorted(waiters, key=lambda w: (w.enqueued_at, w.id)):
        model = models[waiter.model]
        if model.state == "loaded" and slots.get(model.name, 0) > 0:
            actions.append(pol.Admit(waiter.id))
            slots[model.name] -= 1
            continue
        if model.state != "unloaded":
            continue
        layout = model.layout or Layout(model.need_bytes)
        # whole on one GPU: one with room now first (most room first), else the one with most room to evict on
        whole_gpu = [p for p in placements(_whole(layout) or layout, caps, room) if p.kind == "gpu"]
        target = next((p for p in whole_gpu if fits(p.memory, room)), whole_gpu[0] if whole_gpu else None)
        if target is None or not layout.offload:
            target = placements(Layout(layout.cpu_bytes), {RAM: caps[RAM]})[0]  # larger than every GPU: CPU
        evict: list[str] = []
        idle = sorted((m for m in models.values() if m.state == "loaded" and m.in_flight == 0 and m.name not in gone),
                      key=lambda m: m.last_used)  # fmt: skip
        free = dict(room)
        while not fits(target.memory, free) and idle:
            victim = idle.pop(0)
            evict.append(victim.name)
            free = plus(free, victim.held)
        if not fits(target.memory, free):
            break  # the head of the line waits; nobody behind it loads
        actions.append(pol.Load(model.name, tuple(evict), None, target))
        for name in evict:
            gone.add(name)
        room = plus(free, target.memory, -1)
        break
    return actions


def trace(scenario: Scenario, minutes: float, seed: int) -> list[tuple[float, str]]:
    """Poisson arrivals; the CPU models all the time, the GPU models hot `scenario.hot` at a time, by phase."""
    rng = random.Random(seed)
    gpu_models = [m for m in scenario.models if m.gpu]
    arrivals: list[tuple[float, str]] = []
    start = 0.0
    while start < minutes * 60:
        hot = {m.name for m in rng.sample(gpu_models, scenario.hot)}
        end = min(start + PHASE, minutes * 60)
        for model in scenario.models:
            rate = model.rate if not model.gpu or model.name in hot else model.rate * COLD
            t = start
            while (t := t + rng.expovariate(rate)) < end:
                arrivals.append((t, model.name))
        start = end
    return sorted(arrivals)


def service_seconds(model: ModelDef, placement: Placement | None) -> float:
    if not model.gpu or placement is None:
        return model.gpu_seconds
    memory = placement.memory
    on_gpu = sum(b for d, b in memory.items() if d != RAM)
    share = on_gpu / max(1, on_gpu + memory.get(RAM, 0))
    return model.gpu_seconds * (share + CPU_SLOWDOWN * (1 - share))


def run(planner: Planner, scenario: Scenario, arrivals: list[tuple[float, str]]) -> dict[str, float]:
    sims = {m.name: Sim(m) for m in scenario.models}
    layouts = {m.name: m.layout() for m in scenario.models}
    events: list[tuple[float, int, str, str]] = [(t, i, "arrive", name) for i, (t, name) in enumerate(arrivals)]
    heapq.heapify(events)
    waiting: dict[int, pol.WaiterView] = {}
    waits: list[float] = []
    served = loads = dropped = 0
    seq = len(events)
    horizon = arrivals[-1][0] if arrivals else 0.0
    while events:
        now, _, kind, payload = heapq.heappop(events)
        if kind == "arrive":
            waiting[seq] = pol.WaiterView(seq, payload, "c", now)
            seq += 1
        elif kind == "done":
            sim = sims[payload]
            sim.in_flight -= 1
            sim.last_used = now
            served += 1
            if sim.in_flight == 0:
                sim.expires_at = now + KEEP_ALIVE
        elif kind == "loaded":
            sims[payload].state = "loaded"
        for wid, waiter in list(waiting.items()):
            if now - waiter.enqueued_at > QUEUE_TIMEOUT:
                del waiting[wid]
                dropped += 1
                waits.append(QUEUE_TIMEOUT)
        views = {n: s.view(layouts[n]) for n, s in sims.items()}
        for action in planner(views, list(waiting.values()), now):
            if isinstance(action, pol.Admit):
                waiter = waiting.pop(action.waiter_id)
                sim = sims[waiter.model]
                sim.in_flight += 1
                sim.expires_at = None
                waits.append(now - waiter.enqueued_at)
                seq += 1
                heapq.heappush(events, (now + service_seconds(sim.model, sim.placement), seq, "done", sim.model.name))
            elif isinstance(action, pol.Load):
                for victim in action.evict:
                    sims[victim].state, sims[victim].held, sims[victim].placement = "unloaded", {}, None
                sim = sims[action.model]
                placement = action.placement or Placement(0, footprint={RAM: sim.model.size})
                sim.state, sim.placement, sim.held = "loading", placement, dict(placement.memory)
                loads += 1
                seq += 1
                size = sum(placement.memory.values())
                heapq.heappush(events, (now + LOAD_BASE + size / LOAD_RATE, seq, "loaded", sim.model.name))
            elif isinstance(action, pol.Unload):
                sims[action.model].state, sims[action.model].held = "unloaded", {}
                sims[action.model].placement = None
        if not events and waiting:  # nothing will happen again: whoever still waits times out
            dropped += len(waiting)
            waits.extend(min(QUEUE_TIMEOUT, horizon - w.enqueued_at) for w in waiting.values())
            waiting.clear()
    waits.sort()
    p95 = waits[int(0.95 * (len(waits) - 1))] if waits else 0.0
    return {"requests": len(arrivals), "served": served, "dropped": dropped, "loads": loads, "p95": p95}


POLICIES: dict[str, Callable[[Scenario], Planner]] = {
    "all-or-nothing": all_or_nothing,
    "vlmserve, whole models": vlmserve(whole=True),
    "vlmserve": vlmserve(whole=False),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    print(
        f"CPU {CPU_SLOWDOWN:.0f}x slower than a GPU; load {LOAD_BASE:.0f}s + size / {LOAD_RATE // GB} GB/s; "
        f"queue timeout {QUEUE_TIMEOUT:.0f}s; keep-alive {KEEP_ALIVE:.0f}s; {args.minutes:.0f} min per run"
    )
    for scenario in SCENARIOS:
        print(f"\n{scenario.name}: " + ", ".join(f"{m.name} {m.size / GB:.1f} GB" for m in scenario.models))
        print(f"{'seed':>4} {'policy':<24} {'requests':>8} {'served':>7} {'loads':>6} {'p95 wait s':>11}")
        ratios: dict[str, list[tuple[float, float, float]]] = {name: [] for name in POLICIES}
        for seed in range(1, args.seeds + 1):
            arrivals = trace(scenario, args.minutes, seed)
            results = {name: run(make(scenario), scenario, arrivals) for name, make in POLICIES.items()}
            base = results["all-or-nothing"]
            for name, r in results.items():
                print(f"{seed:>4} {name:<24} {r['requests']:>8.0f} {r['served']:>7.0f} {r['loads']:>6.0f} "
                      f"{r['p95']:>11.1f}")  # fmt: skip
                ratios[name].append((r["served"] / max(1, base["served"]), r["loads"] / max(1, base["loads"]),
                                     r["p95"] / max(1e-9, base["p95"])))  # fmt: skip
        print("vs all-or-nothing, mean [min..max] over the seeds:  served | loads | p95 wait")
        for name, values in ratios.items():
            cols = []
            for i in range(3):
                column = [v[i] for v in values]
                cols.append(f"{sum(column) / len(column):.2f}x [{min(column):.2f}..{max(column):.2f}]")
            print(f"  {name:<24} " + " | ".join(cols))


if __name__ == "__main__":
    main()
