"""kpnt: raw denoise-demosaic with a kernel-predicting network.

``import kpnt`` is cheap: it never compiles kernels or touches CUDA.
"""
__version__ = "0.1.0"
