"""``python -m kpnt.train``: the ``kpnt-train`` command, for torchrun::

    torchrun --standalone --nproc-per-node 2 -m kpnt.train --sensor bayer ... -o runs/x

takes the same arguments as ``kpnt-train``; each process joins the process
group that torchrun describes in its environment.
"""
import sys

from kpnt.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
