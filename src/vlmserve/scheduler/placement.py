"""Where a model's memory goes: per-device footprints and the placements the planner may choose (pure).

Memory is counted per device: `RAM` (-1) and each GPU by its index (0, 1, ... in NVML's PCI bus order, which is
the order runners see with CUDA_DEVICE_ORDER=PCI_BUS_ID). A `Layout` says what a model takes by part, before it
is placed: blocks that can move to a GPU (weights + their KV cache), the output head, the multimodal projector,
a compute buffer, and what stays in RAM whatever happens. `placements` turns it into the candidates of the
best tier that is possible at all (on an empty machine with these capacities):

1. the whole model on one GPU (most room first), or split over `devices` / `tensor_split` when configured, or
   split over all GPUs when it fits none alone;
2. as many blocks as fit the best GPU's capacity, the rest in RAM (llama.cpp offloads the last blocks first,
   the output head with the last one: n_gpu_layers = blocks + 1 is everything);
3. the CPU alone.

A worse tier is used only when every better one is impossible (the model is larger than every device), never
because the better one is busy now: a model that can run on a GPU waits for it (or evicts idle models there).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

RAM = -1  # the device key of system memory
Memory = Mapping[int, int]  # bytes per device key


@dataclass(frozen=True, slots=True)
class Layout:
    """What a model takes, by part (bytes), and what its catalog entry allows (GPU layers, devices, split)."""

    host: int  # RAM wherever the blocks go: the runner process, its engine, tensors that stay on the CPU
    blocks: tuple[int, ...] = ()  # offloadable blocks, first to last (weights + each block's KV cache)
    output: int = 0  # the output head: offloaded after every block
    tied_head: int = 0  # a head tied to the token embeddings: copied to the GPU when the head is offloaded
    mmproj: int = 0  # multimodal projector: on the main GPU when anything is offloaded, else in RAM
    compute: int = 0  # compute buffer: in RAM while any block runs on the CPU, and on each GPU used
    gpu_context: int = 0  # what each GPU a runner uses takes before any tensor (CUDA context, cuBLAS workspace)
    gpu_host: int = 0  # RAM a runner that uses a GPU adds (CUDA runtime, pinned staging buffers)
    cpu_only: int = 0  # RAM the CPU-only placement adds (transformers loads float32 there, bf16 on CUDA)
    offload: bool = False  # False: CPU only (ONNX engines, device: cpu, no GPU managed)
    whole: bool = False  # all or nothing on the GPU (a transformers model without device_map)
    forced: int | None = None  # gpu_layers the entry fixes (-1: all); None = auto
    devices: tuple[int, ...] = ()  # GPUs it may use (empty: any); several = split over them
    split: tuple[float, ...] = ()  # tensor_split: share of the blocks per device of `devices`
    ram_scale: float = 1.0  # measured / estimated RAM of earlier loads (bounded), applied to every footprint
    gpu_scale: float = 1.0  # the same for GPU memory

    @property
    def units(self) -> int:
        """n_gpu_layers that puts everything on GPUs: every block, plus one for the output head."""
        return len(self.blocks) + 1

    @property
    def cpu_bytes(self) -> int:
        parts = self.host + sum(self.blocks) + self.output + self.mmproj + self.compute + self.cpu_only
        return int(self.ram_scale * parts)


@dataclass(frozen=True, slots=True)
class Placement:
    gpu_layers: int  # n_gpu_layers for the engine (0: CPU only; `units`: everything)
    devices: tuple[int, ...] = ()  # GPUs it uses, main first
    split: tuple[float, ...] = ()  # share of the offloaded blocks per device (empty: all on the one device)
    footprint: Mapping[int, int] | None = None  # bytes per device (RAM included)
    complete: bool = False  # every unit is on GPUs (nothing of the model runs on the CPU)

    @property
    def memory(self) -> Memory:
        return self.footprint or {}

    @property
    def kind(self) -> str:
        if not self.devices or self.gpu_layers == 0:
            return "cpu"
        return "split" if len(self.devices) > 1 else "gpu"


def fits(need: Memory, room: Memory) -> bool:
    return all(bytes_ <= room.get(device, 0) for device, bytes_ in need.items() if bytes_ > 0)


def short_of(need: Memory, room: Memory) -> dict[int, int]:
    """Bytes missing per device for `need` to fit `room` (only devices that are short)."""
    return {d: b - room.get(d, 0) for d, b in need.items() if b > 0 and b > room.get(d, 0)}


def plus(a: Memory, b: Memory, sign: int = 1) -> dict[int, int]:
    out = dict(a)
    for device, bytes_ in b.items():
        out[device] = out.get(device, 0) + sign * bytes_
    return out


def footprint(layout: Layout, units: int, devices: Sequence[int] = (), split: Sequence[float] = ()) -> dict[int, int]:
    """Bytes per device with the last `units` offloadable units (blocks, then the output head) on `devices`,
    corrected by the layout's measured scales."""
    raw = raw_footprint(layout, units, devices, split)
    return {d: int(b * (layout.ram_scale if d == RAM else layout.gpu_scale)) for d, b in raw.items()}


def raw_footprint(
    layout: Layout, units: int, devices: Sequence[int] = (), split: Sequence[float] = ()
) -> dict[int, int]:
    """The files' estimate of `footprint`, before measurements corrected it."""
    n_blocks = len(layout.blocks)
    units = max(0, min(units, layout.units)) if devices else 0
    on_gpu = min(units, n_blocks)
    cpu_blocks = layout.blocks[: n_blocks - on_gpu]
    gpu_blocks = layout.blocks[n_blocks - on_gpu :]
    output_on_gpu = units > n_blocks
    ram = layout.host + sum(cpu_blocks) + (0 if output_on_gpu else layout.output)
    if units == 0:
        return {RAM: ram + layout.mmproj + layout.compute + layout.cpu_only}
    if cpu_blocks:
        ram += layout.compute
    ram += layout.gpu_host
    out = {RAM: ram}
    start = 0
    for i, (device, count) in enumerate(
        zip(devices, _counts(len(gpu_blocks), _shares(len(devices), split)), strict=True)
    ):
        mine = sum(gpu_blocks[start : start + count])
        start += count
        extra = layout.gpu_context + layout.compute + (layout.mmproj if i == 0 else 0)
        head = layout.output + layout.tied_head if output_on_gpu and i == len(devices) - 1 else 0
        out[device] = out.get(device, 0) + mine + extra + head
    return out


def _shares(n: int, split: Sequence[float]) -> list[float]:
    if n <= 0:
        return []
    if len(split) == n and sum(split) > 0:
        return [s / sum(split) for s in split]
    return [1.0 / n] * n


def _counts(n_items: int, shares: Sequence[float]) -> list[int]:
    """`n_items` blocks dealt out by share, contiguous, the remainder to the largest shares."""
    counts = [int(n_items * share) for share in shares]
    order = sorted(range(len(shares)), key=lambda i: -shares[i])
    for i in range(n_items - sum(counts)):
        counts[order[i % len(order)]] += 1
    return counts


def max_units(layout: Layout, room: int | Memory, devices: Sequence[int], split: Sequence[float] = ()) -> int:
    """The most units that fit `room` (bytes on every device, or per device) on `devices` (0: not one block)."""
    rooms = room if isinstance(room, Mapping) else dict.fromkeys(devices, room)
    best = 0
    for units in range(1, layout.units + 1):
        need = footprint(layout, units, devices, split)
        if any(need.get(device, 0) > rooms.get(device, 0) for device in devices):
            break
        best = units
    return best


def _place(layout: Layout, units: int, devices: Sequence[int], split: Sequence[float] = ()) -> Placement:
    devices = tuple(devices) if units > 0 else ()
    shares = tuple(split) if len(devices) > 1 else ()
    complete = bool(devices) and units >= layout.units
    return Placement(units, devices, shares, footprint(layout, units, devices, shares), complete)


def placements(layout: Layout, caps: Memory, rooms: Memory | None = None) -> list[Placement]:
    """The candidates of the best tier that fits `caps` (each device's capacity for our models, RAM too) on an
    empty machine, best first; devices with more room now (`rooms`) come first. Empty: it can never fit."""
    rooms = caps if rooms is None else rooms
    cpu = _place(layout, 0, ())
    gpus = [d for d in caps if d != RAM and (not layout.devices or d in layout.devices)]
    gpus.sort(key=lambda d: (-rooms.get(d, 0), d))
    if not layout.offload or not gpus or layout.forced == 0:
        return [cpu] if fits(cpu.memory, caps) else []
    configured = [d for d in layout.devices if d in gpus]
    if layout.forced is not None:
        units = layout.units if layout.forced < 0 else min(layout.forced, layout.units)
        targets = [configured] if len(configured) > 1 else [[d] for d in gpus]
        forced = [_place(layout, units, t, layout.split) for t in targets]
        return [p for p in forced if fits(p.memory, caps)][:1]
    for tier in _tiers(layout, caps, gpus, configured):
        possible = [p for p in tier if fits(p.memory, caps)]
        if possible:
            return possible
    return []


def _tiers(layout: Layout, caps: Memory, gpus: list[int], configured: list[int]) -> Iterable[list[Placement]]:
    if len(configured) > 1:  # a split the entry asks for: over those devices, or CPU
        yield [_place(layout, layout.units, configured, layout.split)]
        if not layout.whole:
            room = min(caps.get(d, 0) for d in configured)
            yield [_place(layout, max_units(layout, room, configured, layout.split), configured, layout.split)]
        yield [_place(layout, 0, ())]
        return
    yield [_place(layout, layout.units, [d]) for d in gpus]
    usable = [d for d in gpus if caps[d] > layout.gpu_context + layout.compute]  # room for a block after those
    total = sum(caps[d] for d in usable) or 1
    shares = tuple(round(caps[d] / total, 4) for d in usable)
    if len(usable) > 1:  # fits no GPU alone: split over all of them by capacity
        yield [_place(layout, layout.units, usable, shares)]
    if not layout.whole:  # the most layers on one GPU, or over all of them; the rest on the CPU
        partial = [_place(layout, max_units(layout, caps[d], [d]), [d]) for d in gpus]
        if len(usable) > 1:
            partial.append(_place(layout, max_units(layout, caps, usable, shares), usable, shares))
        yield sorted((p for p in partial if p.gpu_layers > 0), key=lambda p: (-p.gpu_layers, len(p.devices)))
    yield [_place(layout, 0, ())]
