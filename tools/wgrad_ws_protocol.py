"""The protocol of kernels/guide_wgrad.cu's wgrad_wgmma_ws_kernel (session 43), modelled and checked on a CPU.

The kernel's producer warp group and its three multiplying warp groups hand rows over through named barriers
(kFull + (y & 1), kEmpty + (y & 1)) and share buffers (a ring of five z rows, two gh rows, two B rows).  This script
runs the same sequence of barrier operations and buffer reads and writes (each cp.async a write that lands by the
next row's wait_group 1) for random runs of lines and random interleavings of the four agents, and fails on a
deadlock, an agent arriving twice at one barrier instance, a write into a buffer another agent is reading or a copy
is landing in, or a read of a buffer that holds another row's data.  It checks the protocol, not
the CUDA code: keep the two in step when either changes.  Each of :data:`BREAKS` leaves one step of the protocol out,
so that a test can show the model catching a broken hand-over.

    python tools/wgrad_ws_protocol.py            # prints "ok" and the operations checked
"""
import random

#: Deliberate breaks of the producer's side: no wait for the multipliers before refilling a row's buffers, no wait
#: for its copies before writing B, the "full" arrival before B is written, no wait for the last two rows at a
#: strip's end.
BREAKS = ("no-empty-wait", "no-copy-wait", "arrive-first", "no-drain")

def producer(strips, brk=None):
    for (y0, y1) in strips:
        # prologue loads: z rows y0-1..y0+1, gh y0
        for r in (y0 - 1, y0, y0 + 1):
            yield ("wbegin", ("z", (r + 5) % 5), ("z", r, "raw"))
        yield ("wbegin", ("g", y0 & 1), ("g", y0))
        yield ("commit", None)
        for y in range(y0, y1):
            if y - 2 >= y0 and brk != "no-empty-wait":
                yield ("sync", ("E", y & 1))
            if y + 1 < y1:
                yield ("wbegin", ("z", (y + 2 + 5) % 5), ("z", y + 2, "raw"))
                yield ("wbegin", ("g", (y + 1) & 1), ("g", y + 1))
            yield ("commit", None)
            if brk != "no-copy-wait":
                yield ("wait1", None)
            if brk == "arrive-first":
                yield ("arrive", ("F", y & 1))
            # B from gh row y (z is rounded by the multipliers as they load it: session 44)
            yield ("readwrite", ("g", y & 1), ("g", y), ("B", y & 1), ("B", y))
            if brk != "arrive-first":
                yield ("arrive", ("F", y & 1))
        for y in range(max(y0, y1 - 2), y1 if brk != "no-drain" else y0):
            yield ("sync", ("E", y & 1))

def consumer(strips, ky):
    for (y0, y1) in strips:
        for y in range(y0, y1):
            yield ("sync", ("F", y & 1))
            r = y + ky - 1
            yield ("begin_read", [(("z", (r + 5) % 5), ("z", r, "raw")), (("B", y & 1), ("B", y))])
            yield ("end_read", None)
            yield ("arrive", ("E", y & 1))

def run(strips, seed, brk=None):
    """Operations run for one random interleaving of the four agents over ``strips``; AssertionError on a
    deadlock or a hazard.  ``brk``: one of :data:`BREAKS`, or None for the protocol as the kernel runs it."""
    assert brk is None or brk in BREAKS, brk
    rng = random.Random(seed)
    agents = {"P": producer(strips, brk), "C0": consumer(strips, 0), "C1": consumer(strips, 1), "C2": consumer(strips, 2)}
    blocked = {}                                  # agent -> barrier id it waits on
    arrived = {}                                  # barrier id -> set of agents arrived in the current instance
    content = {}                                  # buffer -> tag
    reading = {}                                  # agent -> list of buffers being read
    done = set()
    groups = []        # the producer's commit groups: lists of (buffer, tag) in flight
    current = []
    def arrive(agent, bid):
        s = arrived.setdefault(bid, set())
        assert agent not in s, f"{agent} arrives twice at {bid}"
        s.add(agent)
        if len(s) == 4:
            arrived[bid] = set()
            for a, b in list(blocked.items()):
                if b == bid:
                    del blocked[a]
            return True
        return False
    def write_check(agent, buf):
        for g in groups + [current]:
            for b, _ in g:
                if b == buf:
                    raise AssertionError(f"{agent} writes {buf} while a copy into it is in flight")
        for a, bufs in reading.items():
            if a != agent and buf in bufs:
                raise AssertionError(f"{agent} writes {buf} while {a} reads it")
    steps = 0
    while len(done) < 4:
        runnable = [a for a in agents if a not in done and a not in blocked]
        if not runnable:
            raise AssertionError(f"deadlock: blocked {blocked}")
        a = rng.choice(runnable)
        op = next(agents[a], None)
        if op is None:
            done.add(a)
            continue
        kind = op[0]
        if kind == "sync":
            if not arrive(a, op[1]):
                blocked[a] = op[1]
        elif kind == "arrive":
            arrive(a, op[1])
        elif kind == "wbegin":
            write_check(a, op[1]); content[op[1]] = ("landing", op[2]); current.append((op[1], op[2]))
        elif kind == "commit":
            groups.append(current); current = []
        elif kind == "wait1":
            while len(groups) > 1:
                for buf, tag in groups.pop(0):
                    content[buf] = tag
        elif kind == "write":
            write_check(a, op[1]); content[op[1]] = op[2]
        elif kind == "readwrite":
            assert content.get(op[1]) == op[2], f"{a} reads {op[1]} holding {content.get(op[1])}, wants {op[2]}"
            write_check(a, op[3]); content[op[3]] = op[4]
        elif kind == "begin_read":
            for buf, want in op[1]:
                assert content.get(buf) == want, f"{a} reads {buf} holding {content.get(buf)}, wants {want}"
            reading[a] = [b for b, _ in op[1]]
        elif kind == "end_read":
            # the data must still be what it read
            reading.pop(a)
        steps += 1
    assert not blocked and all(not s for s in arrived.values()), (blocked, arrived)
    return steps

def strips_for(rng):
    out, H = [], rng.randint(1, 9)
    r = rng.randint(0, 3 * H); n = rng.randint(1, 4 * H)
    # a run of lines over strips of height H
    while n > 0:
        y0 = r % H; take = min(n, H - y0); out.append((y0, y0 + take)); r += take; n -= take
    return out

def main() -> int:
    rng = random.Random(1)
    total = 0
    for case in range(3000):
        strips = strips_for(rng)
        for seed in range(5):
            total += run(strips, seed * 7919 + case)
    print(f"ok: 15000 interleavings of 3000 random runs of lines, {total} operations, no deadlock or hazard")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
