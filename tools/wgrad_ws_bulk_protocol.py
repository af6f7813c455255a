"""The bulk-copy producer of kernels/guide_wgrad.cu's wgrad_wgmma_ws_kernel (KPNT_WS_BULK), modelled on a CPU.

tools/wgrad_ws_protocol.py models the specialized kernel's hand-over with its producer warp group as one agent,
which is right for cp.async (each thread waits on its own copies, then the group meets at a barrier).  The bulk form
(session 44, written after its device time ran out) counts every producer thread's copies on an mbarrier, two of
them by the row's parity, and drops that barrier, so its correctness depends on the producer threads one by one:
each expects its bytes before it copies and arrives after, every thread waits on row y's mbarrier before it writes
its part of B from the whole of gh's row, positions outside the image are zeroed by plain stores.  This script runs
that sequence for several producer threads (each with its share of a row's items), the three multiplying warp
groups and the copies in flight (each lands at a random later moment, counting down its mbarrier's bytes), over
random runs of lines and random interleavings, and fails on:

- a deadlock;
- an agent arriving twice at one named-barrier instance, or at an mbarrier phase other than the one its row means;
- a write (store, copy issue or copy landing) into a buffer another agent is reading or a copy is landing in;
- a read of a buffer that holds another row's data.

It checks the protocol, not the CUDA code: keep the two in step when either changes.

    python tools/wgrad_ws_bulk_protocol.py                  # prints "ok" and the operations checked
    python tools/wgrad_ws_bulk_protocol.py --break no-wait  # a deliberately broken protocol: must fail
"""
import argparse
import random

SLOTS = 5            # the ring of z rows
Z_PARTS = 2          # a z row's items (positions), shared out over the producer threads
G_PARTS = 2          # gh's
BREAKS = ("no-wait", "no-producer-barrier", "arrive-first", "no-empty-wait", "no-drain")


def bulk_rows(j, m, z_rows, gy, mb, use, height, brk):
    """Producer thread j's share (of m) of one hand-over's copies: z rows `z_rows` and gh row gy, on mbarrier mb,
    its use-th phase (what the thread means to arrive at)."""
    items = [("z", r, k) for r in z_rows for k in range(Z_PARTS)] + [("g", gy, k) for k in range(G_PARTS)]
    mine = items[j::m]
    if brk == "arrive-first":
        yield ("mb_arrive", mb, use)
    for kind, row, k in mine:
        buf = ("z", row % SLOTS, k) if kind == "z" else ("g", row & 1, k)
        tag = (kind, row, k)
        outside = kind == "z" and (row < 0 or row >= height or (k == Z_PARTS - 1 and row % 3 == 0))
        if outside:
            yield ("store", buf, tag)
        else:
            yield ("mb_expect", mb, use)
            yield ("copy", buf, tag, mb)
    if brk != "arrive-first":
        yield ("mb_arrive", mb, use)


def producer(j, m, strips, height, brk):
    uses = [0, 0]                                          # phases of each mbarrier this thread has used
    def next_use(b):
        uses[b] += 1
        return uses[b] - 1
    for (y0, y1) in strips:
        yield from bulk_rows(j, m, [y0 - 1, y0, y0 + 1], y0, y0 & 1, next_use(y0 & 1), height, brk)
        for y in range(y0, y1):
            if y - 2 >= y0 and brk != "no-empty-wait":
                yield ("sync", ("E", y & 1))
            if brk != "no-producer-barrier":
                yield ("sync", ("PR",))
            if y + 1 < y1:
                b = (y + 1) & 1
                yield from bulk_rows(j, m, [y + 2], y + 1, b, next_use(b), height, brk)
            if brk != "no-wait":
                yield ("mb_wait", y & 1)
            # B's part j from the whole of gh's row y
            yield ("begin_read", [(("g", y & 1, k), ("g", y, k)) for k in range(G_PARTS)])
            yield ("store", ("B", y & 1, j), ("B", y, j))
            yield ("end_read",)
            yield ("arrive", ("F", y & 1))
        if brk != "no-drain":
            for y in range(max(y0, y1 - 2), y1):
                yield ("sync", ("E", y & 1))


def consumer(ky, m, strips):
    for (y0, y1) in strips:
        for y in range(y0, y1):
            yield ("sync", ("F", y & 1))
            r = y + ky - 1
            reads = [(("z", r % SLOTS, k), ("z", r, k)) for k in range(Z_PARTS)]
            reads += [(("B", y & 1, j), ("B", y, j)) for j in range(m)]
            yield ("begin_read", reads)
            yield ("end_read",)
            yield ("arrive", ("E", y & 1))


class Model:
    """The shared state: named barriers, mbarriers, buffers, copies in flight."""

    def __init__(self, m, n_agents):
        self.m = m
        self.size = {("F", 0): n_agents, ("F", 1): n_agents, ("E", 0): n_agents, ("E", 1): n_agents, ("PR",): m}
        self.arrived = {bid: set() for bid in self.size}
        self.blocked = {}                                  # agent -> what it waits on
        self.content = {}                                  # buffer -> tag
        self.reading = {}                                  # agent -> buffers
        self.flight = []                                   # copies: (buffer, tag, mbarrier)
        self.mb = [{"phase": 0, "pending": m, "tx": 0, "arrived": set()} for _ in range(2)]

    def barrier(self, agent, bid, wait):
        s = self.arrived[bid]
        assert agent not in s, f"{agent} arrives twice at {bid}"
        s.add(agent)
        if len(s) == self.size[bid]:
            self.arrived[bid] = set()
            for a, b in list(self.blocked.items()):
                if b == bid:
                    del self.blocked[a]
        elif wait:
            self.blocked[agent] = bid

    def write_check(self, agent, buf, copy_landing=False):
        for b, _, _ in self.flight:
            if b == buf and not copy_landing:
                raise AssertionError(f"{agent} writes {buf} while a copy into it is in flight")
        for a, bufs in self.reading.items():
            if a != agent and buf in bufs:
                raise AssertionError(f"{agent} writes {buf} while {a} reads it")

    def mb_phase_check(self, agent, mb, use):
        st = self.mb[mb]
        assert st["phase"] == use, f"{agent} meant phase {use} of mbarrier {mb}, which is at {st['phase']}"

    def mb_complete(self, mb):
        st = self.mb[mb]
        if st["pending"] == 0 and st["tx"] == 0:
            st.update(phase=st["phase"] + 1, pending=self.m, arrived=set())
            for a, b in list(self.blocked.items()):
                if b == ("mb", mb):
                    del self.blocked[a]

    def land(self, rng):
        buf, tag, mb = self.flight.pop(rng.randrange(len(self.flight)))
        self.write_check("copy", buf, copy_landing=True)
        self.content[buf] = tag
        self.mb[mb]["tx"] -= 1
        self.mb_complete(mb)

    def step(self, agent, op, waits_parity):
        kind = op[0]
        if kind == "sync":
            self.barrier(agent, op[1], wait=True)
        elif kind == "arrive":
            self.barrier(agent, op[1], wait=False)
        elif kind == "store":
            self.write_check(agent, op[1])
            self.content[op[1]] = op[2]
        elif kind == "copy":
            self.write_check(agent, op[1])
            self.content[op[1]] = ("landing", op[2])
            self.flight.append((op[1], op[2], op[3]))
        elif kind == "mb_expect":
            self.mb_phase_check(agent, op[1], op[2])
            self.mb[op[1]]["tx"] += 1
        elif kind == "mb_arrive":
            st = self.mb[op[1]]
            self.mb_phase_check(agent, op[1], op[2])
            assert agent not in st["arrived"], f"{agent} arrives twice at mbarrier {op[1]} phase {st['phase']}"
            st["arrived"].add(agent)
            st["pending"] -= 1
            self.mb_complete(op[1])
        elif kind == "mb_wait":
            b = op[1]
            parity = waits_parity[agent][b]
            waits_parity[agent][b] ^= 1
            if (self.mb[b]["phase"] & 1) == parity:        # the phase of that parity has not completed yet
                self.blocked[agent] = ("mb", b)
        elif kind == "begin_read":
            for buf, want in op[1]:
                got = self.content.get(buf)
                assert got == want, f"{agent} reads {buf} holding {got}, wants {want}"
            self.reading[agent] = [b for b, _ in op[1]]
        elif kind == "end_read":
            self.reading.pop(agent)


def run(strips, height, m, seed, brk=None):
    rng = random.Random(seed)
    agents = {f"P{j}": producer(j, m, strips, height, brk) for j in range(m)}
    agents.update({f"C{ky}": consumer(ky, m, strips) for ky in range(3)})
    model = Model(m, len(agents))
    waits_parity = {a: [0, 0] for a in agents}
    done, steps = set(), 0
    while len(done) < len(agents) or model.flight:
        runnable = [a for a in agents if a not in done and a not in model.blocked]
        if not runnable and not model.flight:
            raise AssertionError(f"deadlock: blocked {model.blocked}")
        if model.flight and (not runnable or rng.random() < 0.3):
            model.land(rng)
            continue
        a = rng.choice(runnable)
        op = next(agents[a], None)
        if op is None:
            done.add(a)
            continue
        model.step(a, op, waits_parity)
        steps += 1
    assert not model.blocked and all(not s for s in model.arrived.values()), (model.blocked, model.arrived)
    assert all(st["pending"] == m and st["tx"] == 0 for st in model.mb), model.mb
    return steps


def strips_for(rng):
    """A block's run of lines over strips of a random height, as the kernel's next_strip walks them."""
    out, height = [], rng.randint(1, 9)
    r = rng.randint(0, 3 * height)
    n = rng.randint(1, 4 * height)
    while n > 0:
        y0 = r % height
        take = min(n, height - y0)
        out.append((y0, y0 + take))
        r += take
        n -= take
    return out, height


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--break", dest="brk", choices=BREAKS, help="break the protocol on purpose (must fail)")
    parser.add_argument("--cases", type=int, default=1500)
    args = parser.parse_args()
    rng = random.Random(1)
    total = 0
    for case in range(args.cases):
        strips, height = strips_for(rng)
        for m in (1, 3):
            for seed in range(3):
                total += run(strips, height, m, seed * 7919 + case, args.brk)
    print(f"ok: {args.cases * 6} interleavings of {args.cases} random runs of lines (1 and 3 producer threads), "
          f"{total} operations, no deadlock or hazard")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
