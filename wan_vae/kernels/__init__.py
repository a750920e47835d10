"""Fused GPU kernels, each a `torch.library` custom op with a fake implementation and a plain-torch fallback.

FakeTensorMode, the CUDA dry run, the GPU cost model and `torch.compile` each see one op per call. The Triton
kernels run on CUDA tensors when Triton is importable; anywhere else, or when a kernel fails to build, the same op
runs in torch (logged once). Below the networks, which call them; above the device group, which says what runs."""
