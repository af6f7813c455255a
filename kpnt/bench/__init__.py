"""The quality benchmark's library (``tools/bench_quality.py`` is its CLI).

One job per module:

* :mod:`kpnt.bench.cases`: synthetic raws with known truth (unprocessed
  photos, a camera's colour matrix and noise profile, a random CFA phase,
  white balance and noise drawn from one seed per case);
* :mod:`kpnt.bench.metrics`: PSNR/SSIM scoring and the colour-fidelity
  statistics (signed per-channel error binned by the reference's saturation);
* :mod:`kpnt.bench.peers`: the peer methods (LibRaw, LibRaw + NLM, Menon
  2007, demosaicnet, demosaicnet + BM3D), run on a case;
* :mod:`kpnt.bench.cache`: a cache of the peers' scores keyed by a hash of
  the exact input raw, the method, its options and the package versions;
* :mod:`kpnt.bench.checks`: issue 13's acceptance checks;
* :mod:`kpnt.bench.report`: the printed tables;
* :mod:`kpnt.bench.errormaps`: error-map pictures;
* :mod:`kpnt.bench.speed`: the large-raw speed test;
* :mod:`kpnt.bench.runner`: the benchmark loop.
* :mod:`kpnt.bench.cli`: the command line (arguments, printed report,
  JSON); ``tools/bench_quality.py`` only calls it.

The peers' packages are optional (``pip install -e '.[bench]'``): nothing
here imports them at module level.
"""
