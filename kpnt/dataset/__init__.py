"""The dataset builder behind ``kpnt-build-dataset`` (DESIGN.md section 4).

One job per module, in data-flow order: :mod:`~kpnt.dataset.scan` (find,
hash, read), :mod:`~kpnt.dataset.group` (cameras, scenes, pairs),
:mod:`~kpnt.dataset.align` (shift, CFA snapping, crops),
:mod:`~kpnt.dataset.exposure` (gains), :mod:`~kpnt.dataset.motion`,
:mod:`~kpnt.dataset.noisefit`, :mod:`~kpnt.dataset.targets` (LibRaw
demosaic), :mod:`~kpnt.dataset.pair` (one pair), :mod:`~kpnt.dataset.worker`
(one scene), :mod:`~kpnt.dataset.writer`, :mod:`~kpnt.dataset.manifest`,
:mod:`~kpnt.dataset.build` (the whole run).  The format is documented in
``datasets/README.md``; :mod:`kpnt.train.real` reads it without rawpy.
"""
