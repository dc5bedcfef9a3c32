"""Compact weight storage and memory plans: users' GGUF and fp8 downloads loaded as
they are, fp8 storage with per-layer upcast, offload between phases and of transformer blocks,
and the byte accounting that lets a caller refuse a plan that cannot fit before loading."""
