"""The pure decision function: eviction order, pinning, fairness, the swap bound, FIFO for comparison."""

from __future__ import annotations

from vlmserve.scheduler.policy import (
    Admit,
    Load,
    ModelView,
    Policy,
    Unload,
    WaiterView,
    eviction_order,
    fair_order,
    plan,
)

GB = 2**30


def model(
    name: str,
    state: str = "unloaded",
    *,
    need: int = GB,
    in_flight: int = 0,
    parallel: int = 1,
    pinned: bool = False,
    priority: int = 0,
    last_used: float = 0.0,
    expires_at: float | None = None,
) -> ModelView:
    return ModelView(name, state, in_flight, parallel, need, pinned, priority, last_used, expires_at)  # type: ignore[arg-type]


def waiter(wid: int, name: str, at: float, client: str = "c", background: bool = False) -> WaiterView:
    return WaiterView(wid, name, client, at, background)


def models(*views: ModelView) -> dict[str, ModelView]:
    return {v.name: v for v in views}


def test_admits_up_to_free_slots() -> None:
    state = models(model("a", "loaded", parallel=2, in_flight=1))
    actions = plan(state, [waiter(1, "a", 0), waiter(2, "a", 1)], Policy(4 * GB), now=5)
    assert actions == [Admit(1)]


def test_loads_when_it_fits_without_evicting() -> None:
    state = models(model("a", "loaded"), model("b"))
    assert plan(state, [waiter(1, "b", 0)], Policy(2 * GB), now=1) == [Load("b")]


def test_eviction_order_pinned_last_then_priority_then_lru() -> None:
    views = [
        model("pinned", pinned=True, last_used=0),
        model("hi", priority=5, last_used=0),
        model("old", last_used=1),
        model("new", last_used=9),
    ]
    assert [m.name for m in eviction_order(views)] == ["old", "new", "hi", "pinned"]


def test_evicts_idle_model_with_no_queue_for_a_new_one() -> None:
    state = models(model("a", "loaded", last_used=3), model("p", "loaded", pinned=True, last_used=1), model("b"))
    actions = plan(state, [waiter(1, "b", 0)], Policy(2 * GB), now=1)
    assert actions == [Load("b", ("a",))]  # the pinned one stays although it was used longer ago


def test_busy_model_is_never_evicted() -> None:
    state = models(model("a", "loaded", in_flight=1), model("b"))
    assert plan(state, [waiter(1, "b", 0)], Policy(1 * GB), now=100) == []


def test_swap_bound_loaded_model_keeps_its_run_until_the_other_waits_too_long() -> None:
    state = models(model("a", "loaded"), model("b"))
    queue = [waiter(1, "b", 0.0), waiter(2, "a", 0.5), waiter(3, "a", 0.6)]
    policy = Policy(1 * GB, max_swap_wait=10)
    assert plan(state, queue, policy, now=1.0) == [Admit(2)]  # keep serving a: no reload yet
    # once b has waited past the bound, a takes no new work and is swapped out as soon as it is idle
    assert plan(state, queue, policy, now=10.5) == [Load("b", ("a",))]
    busy = models(model("a", "loaded", in_flight=1), model("b"))
    assert plan(busy, queue, policy, now=10.5) == []  # draining: nobody else is admitted to a


def test_fifo_reloads_on_every_switch() -> None:
    state = models(model("a", "loaded"), model("b"))
    queue = [waiter(1, "b", 0.0), waiter(2, "a", 0.5)]
    assert plan(state, queue, Policy(1 * GB, ordering="fifo"), now=1.0) == [Load("b", ("a",))]


def test_fair_share_round_robin_between_clients() -> None:
    queue = [
        waiter(1, "a", 0, "greedy"),
        waiter(2, "a", 1, "greedy"),
        waiter(3, "a", 2, "greedy"),
        waiter(4, "a", 3, "polite"),
    ]
    assert [w.id for w in fair_order(queue)] == [1, 4, 2, 3]
    state = models(model("a", "loaded", parallel=2))
    assert plan(state, queue, Policy(4 * GB), now=4) == [Admit(1), Admit(4)]


def test_background_work_goes_after_live_requests() -> None:
    queue = [waiter(1, "a", 0, background=True), waiter(2, "a", 5)]
    assert [w.id for w in fair_order(queue)] == [2, 1]


def test_keep_alive_expiry_unloads_idle_model_without_waiters() -> None:
    state = models(model("a", "loaded", expires_at=10), model("b", "loaded", expires_at=10))
    assert plan(state, [waiter(1, "b", 0)], Policy(4 * GB), now=11) == [Unload("a", "keep_alive"), Admit(1)]
    assert plan(state, [], Policy(4 * GB), now=9) == []


def test_remote_models_take_no_memory() -> None:
    state = models(model("remote", "loaded", need=0), model("a", need=GB))
    assert plan(state, [waiter(1, "a", 0), waiter(2, "remote", 0)], Policy(GB), now=0) == [Admit(2), Load("a")]


def test_overdue_model_blocks_younger_loads_from_taking_its_memory() -> None:
    state = models(model("a", "loaded", in_flight=1, need=GB), model("b", need=GB), model("c", need=GB // 2))
    queue = [waiter(1, "b", 0.0), waiter(2, "c", 20.0)]
    actions = plan(state, queue, Policy(int(1.5 * GB), max_swap_wait=10), now=21)
    assert actions == []  # c would fit now, but b has waited longest and needs that memory next


def test_requests_for_other_engine_options_reload_only_when_idle() -> None:
    loaded = ModelView("a", "loaded", 0, 1, GB, variant="", context_size=4096)
    bigger = WaiterView(1, "a", "c", 0.0, variant="context_size=8192", context_size=8192)
    queue = [bigger, WaiterView(2, "a", "c", 0.1)]
    # a request that takes any engine (no engine options) runs first on the loaded one: no reload for it
    assert plan({"a": loaded}, queue, Policy(2 * GB), now=1) == [Admit(2)]
    # once only the other options wait and the model is idle: reload it with them
    assert plan({"a": loaded}, queue[:1], Policy(2 * GB), now=1) == [Load("a", ("a",), "context_size=8192")]
    busy = ModelView("a", "loaded", 1, 2, GB, context_size=4096)
    assert plan({"a": busy}, queue[:1], Policy(2 * GB), now=1) == []  # never under a running request
    assert plan({"a": model("a")}, queue[:1], Policy(2 * GB), now=1) == [Load("a", (), "context_size=8192")]


def test_a_smaller_context_or_other_threads_never_reload() -> None:
    loaded = ModelView("a", "loaded", 0, 1, GB, variant="context_size=8192", context_size=8192)
    smaller = WaiterView(1, "a", "c", 0.0, variant="", context_size=2048)
    threads = WaiterView(2, "a", "c", 0.0, variant="context_size=8192,threads=1", context_size=8192)
    assert plan({"a": loaded}, [smaller], Policy(2 * GB), now=1) == [Admit(1)]
    assert plan({"a": loaded}, [threads], Policy(2 * GB), now=1) == [Admit(2)]
    gpu = WaiterView(3, "a", "c", 0.0, variant="gpu_layers=0", context_size=2048, gpu_layers=0)
    assert plan({"a": loaded}, [gpu], Policy(2 * GB), now=1) == [Load("a", ("a",), "gpu_layers=0")]


def test_a_variant_is_loaded_only_when_its_own_need_fits() -> None:
    big = WaiterView(1, "a", "c", 0.0, variant="context_size=65536", context_size=65536, need_bytes=3 * GB)
    loaded = ModelView("a", "loaded", 0, 1, GB, context_size=4096)
    assert plan({"a": loaded}, [big], Policy(2 * GB), now=1) == []  # waits (the scheduler refuses never-fits)
    assert plan({"a": model("a", need=GB)}, [big], Policy(2 * GB), now=1) == []
    assert plan({"a": model("a", need=GB)}, [big], Policy(4 * GB), now=1) == [Load("a", (), "context_size=65536")]
