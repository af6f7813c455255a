"""Pure-PyTorch reference of kpnt's math: the spec the fused kernels are
tested against (DESIGN.md sections 2 and 3).

Modules, one job each: ``pad`` (mirror / CFA-consistent padding),
``colour_base`` (block averages), ``pyramid`` (down, up, exact detail-noise
gains), ``noise`` (variance model), ``taps`` (tap sets and gather),
``features`` (colour-level MLP inputs), ``mlp`` (bias-free MLP and its
initialisation), ``apply`` (kernel normalisation and application),
``colour_level`` (one colour level), ``up_block`` (colour base to full
resolution), ``front_layout`` (taps, weight sets and roles per CFA
position), ``front_level`` (the mosaic level).  Each op takes its tensors and
its spec (:mod:`kpnt.spec`), as its fused twin in :mod:`kpnt.ops._cuda` does.
"""
