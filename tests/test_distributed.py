"""Data-parallel training: two gloo processes on the CPU reach the weights of
one process that draws both shards itself (DESIGN.md section 6)."""
import gc
import json
import socket
from datetime import timedelta

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from kpnt.cli.train import main as train_main
from kpnt.errors import KpntError
from kpnt.model import KPNT
from kpnt.train.distributed import DistContext, local_shards, parse_devices, shard_seed, shutdown
from kpnt.train.loop import CHECKPOINT_NAME, Trainer, TrainConfig
from kpnt.train.photos import PhotoSource
from kpnt.train.synthesis import CameraModel, random_cfa, synthesize

XYZ_TO_CAM = np.array([[0.7, -0.1, -0.05], [-0.4, 1.2, 0.2], [-0.05, 0.1, 0.6]])
NOISE = np.array([[[2e-3, 1e-3, 1.5e-3], [4e-6, 2e-6, 3e-6]]])
STEPS = 3


def _trainer(out, ctx=None, shards=None, grad_sync="ddp", poison_call=None):
    """A tiny Bayer run: 1 tile of 32 px per shard, validation every step.

    ``poison_call``: the source puts a NaN into the input of its n-th call.
    """
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:64] / 64
    photos = PhotoSource([torch.from_numpy(np.stack([0.5 + 0.4 * np.sin(2 * np.pi * (rng.uniform(1, 4) * xx + rng.uniform(0, 3) * yy)) for _ in range(3)]).astype(np.float32)) for _ in range(3)])
    cams = [CameraModel("test cam", XYZ_TO_CAM, NOISE)]
    calls = {"n": 0}

    def source(gen):
        batch = synthesize(photos.sample(1, 32, gen), random_cfa("bayer", gen), cams, gen)
        calls["n"] += 1
        if calls["n"] == poison_call:
            batch.x[0, 0, 5, 5] = float("nan")
        return batch

    vgen = torch.Generator().manual_seed(7)
    val = [synthesize(photos.centre_tiles(32)[i : i + 1], random_cfa("bayer", torch.Generator().manual_seed(i)), cams, vgen) for i in range(3)]
    cfg = TrainConfig(steps=STEPS, val_every=1, ckpt_every=2, shards=shards, grad_sync=grad_sync)
    return Trainer(KPNT("bayer"), cfg, source, val, out, {"data": "test"}, ctx)


def _worker(rank, world, port, root):
    """One of two gloo processes: DDP and all-reduce runs, an interrupted
    run to resume elsewhere, and a run whose rank 1 meets a NaN."""
    torch.set_num_threads(1)  # same kernels as the single-process reference
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world, timeout=timedelta(seconds=60))
    ok = False
    ctx = DistContext(rank=rank, world_size=world, local_rank=rank, local_world_size=world)
    try:
        _worker_runs(rank, ctx, root)   # its trainers are out of scope when shutdown collects them, as in kpnt-train
        ok = True
    finally:
        shutdown(ctx, wait=ok)
    # The finished trainers' DDP wrappers (which hold the process group) must
    # be gone by now, not left to the collector at interpreter exit.
    alive = sum(isinstance(o, torch.nn.parallel.DistributedDataParallel) for o in gc.get_objects())
    (root / f"rank{rank}.ddp_alive").write_text(str(alive))


def _worker_runs(rank, ctx, root):
    report = {}
    for sync in ("ddp", "allreduce"):
        tr = _trainer(root / sync, ctx, grad_sync=sync)
        tr.run(progress=False)
        report[sync] = {"losses": tr.history.losses, "val_psnr": tr.history.val_psnr, "shards": list(tr.local)}
    _trainer(root / "part", ctx).run(progress=False, until=2)
    tr = _trainer(root / "nan", ctx, poison_call=2 if rank == 1 else None)
    tr.run(progress=False)
    report["nan"] = {"skipped": [s for s, _ in tr.history.skipped], "weights": [p.detach().sum().item() for p in tr.params]}
    (root / f"rank{rank}.json").write_text(json.dumps(report))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _weights(path):
    """Model weights and Adam's moments (which, unlike Adam's steps, scale
    with the gradient: a wrongly scaled average shows up here)."""
    state = torch.load(path / CHECKPOINT_NAME, map_location="cpu", weights_only=False)
    moments = {f"adam.{i}.{k}": v for i, st in state["optim"]["state"].items() for k, v in st.items() if k != "step"}
    return {**state["model"], **moments}


def _assert_same_weights(a, b, what):
    assert a.keys() == b.keys()
    for k in a:
        rel = (a[k] - b[k]).norm() / b[k].norm().clamp_min(1e-12)
        assert rel <= 1e-5, f"{what}: weight {k} differs by {rel:.2e} (relative)"
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=f"{what}: weight {k} differs")


def test_two_processes_equal_one_process_with_two_shards(tmp_path):
    torch.set_num_threads(1)
    mp.spawn(_worker, args=(2, _free_port(), tmp_path), nprocs=2, join=True, start_method="spawn")
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [(tmp_path / f"rank{r}.ddp_alive").read_text() for r in range(2)] == ["0", "0"]
    assert [r["ddp"]["shards"] for r in reports] == [[0], [1]]

    single = _trainer(tmp_path / "single", shards=2)
    single.run(progress=False)
    assert list(single.local) == [0, 1]
    ref = _weights(tmp_path / "single")
    for sync in ("ddp", "allreduce"):
        _assert_same_weights(_weights(tmp_path / sync), ref, f"2 processes ({sync}) vs 1 process with 2 shards")
        for r in reports:  # the history every rank kept: global loss, sharded validation
            assert r[sync]["losses"] == pytest.approx(single.history.losses, rel=1e-6)
            assert r[sync]["val_psnr"] == pytest.approx(single.history.val_psnr, rel=1e-6)
    ckpt = torch.load(tmp_path / "ddp" / CHECKPOINT_NAME, map_location="cpu", weights_only=False)
    assert ckpt["shards"] == 2 and len(ckpt["gens"]) == 2
    assert (tmp_path / "ddp" / "weights.safetensors").exists()

    # Control: the comparison can fail. One shard alone trains elsewhere.
    one = _trainer(tmp_path / "one", shards=1)
    one.run(progress=False)
    assert any((one.model.state_dict()[k] - ref[k]).abs().max() > 1e-4 for k in one.model.state_dict())

    # Resume the 2-process run (checkpoint at step 2) in one process: it
    # adopts the checkpoint's 2 shards and ends where the others did.
    resumed = _trainer(tmp_path / "part")
    resumed.load_checkpoint(tmp_path / "part" / CHECKPOINT_NAME)
    assert resumed.step == 2 and resumed.shards == 2 and list(resumed.local) == [0, 1]
    resumed.run(progress=False)
    _assert_same_weights(_weights(tmp_path / "part"), ref, "2 processes to step 2, resumed in 1")

    # A NaN on rank 1 only: both ranks skip the same step, weights stay equal.
    assert reports[0]["nan"]["skipped"] == reports[1]["nan"]["skipped"] == [2]
    assert reports[0]["nan"]["weights"] == reports[1]["nan"]["weights"]
    assert all(np.isfinite(reports[0]["nan"]["weights"]))


def test_shard_seeds_and_split():
    assert shard_seed(5, 0) == 5  # one shard: the single-process stream
    seeds = {shard_seed(s, k) for s in range(4) for k in range(4)}
    assert len(seeds) == 16
    assert shard_seed(0, 1, step=10) not in seeds
    assert list(local_shards(4, 1, 2)) == [2, 3]
    with pytest.raises(KpntError, match="multiple of 2"):
        local_shards(3, 0, 2)


def test_resume_refuses_shards_the_processes_cannot_split(tmp_path):
    one = _trainer(tmp_path / "run")
    one.run(progress=False, until=2)
    # Three processes (no collective happens before the refusal).
    tr = _trainer(tmp_path / "run", DistContext(rank=0, world_size=3), grad_sync="allreduce")
    with pytest.raises(KpntError, match="pass --shards to re-shard"):
        tr.load_checkpoint(tmp_path / "run" / CHECKPOINT_NAME)


def test_reshard_on_resume_keeps_old_streams_and_adds_new(tmp_path):
    _trainer(tmp_path / "run", shards=1).run(progress=False, until=2)
    state = torch.load(tmp_path / "run" / CHECKPOINT_NAME, map_location="cpu", weights_only=False)
    tr = _trainer(tmp_path / "run", shards=2)
    tr.load_checkpoint(tmp_path / "run" / CHECKPOINT_NAME)
    assert tr.shards == 2 and torch.equal(tr.gens[0].get_state(), state["gens"][0])
    assert tr.gens[1].initial_seed() == shard_seed(0, 1, step=2)


def test_device_list_errors():
    assert parse_devices("cpu") == [torch.device("cpu")]
    assert parse_devices("cpu,cpu") == [torch.device("cpu")] * 2
    for spec, msg in [("meta", "only 'cpu' and 'cuda:N'"), ("", "expected e.g."), ("banana", "not a device")]:
        with pytest.raises(KpntError, match=msg):
            parse_devices(spec)
    if not torch.cuda.is_available():
        with pytest.raises(KpntError, match="no usable CUDA GPU"):
            parse_devices("cuda:0,cuda:1")


def test_cli_two_cpu_processes_then_resume_in_one(tmp_path, capsys):
    from test_train import _clean_folder, _profile_table

    clean, table = _clean_folder(tmp_path), _profile_table(tmp_path)
    out = tmp_path / "run"
    args = ["--sensor", "bayer", "--clean", str(clean), "--profiles", str(table), "--camera", "Nikon D750", "--isos", "3200",
            "--batch", "1", "--tile", "32", "--val-every", "2", "--ckpt-every", "2", "-o", str(out), "--no-progress", "--threads", "1"]
    assert train_main(args + ["--steps", "2", "--nproc", "2"]) == 0
    ckpt = torch.load(out / CHECKPOINT_NAME, map_location="cpu", weights_only=False)
    assert ckpt["step"] == 2 and ckpt["shards"] == 2
    meta = json.loads((out / "history.json").read_text())
    assert len(meta["losses"]) == 2
    # one process continues the 2-shard run; a bad --nproc is one line
    assert train_main(args + ["--steps", "3", "--resume"]) == 0
    assert "trained 3 steps" in capsys.readouterr().out
    # argument errors are one line, from the launcher, before any process starts
    for extra, msg, code in [(["--nproc", "2"], "pass --resume", 1), (["--resume", "--nproc", "0"], "--nproc: must be >= 1", 2)]:
        try:
            rc = train_main(args + ["--steps", "3"] + extra)
        except SystemExit as ex:   # refused by argparse: a bad command line
            rc = ex.code
        assert rc == code
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], err
