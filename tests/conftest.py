"""Test set-up: 8 fake CPU devices (for sharding tests) before anything touches JAX."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from aos4rec_jax import sharding  # noqa: E402

sharding.use_fake_cpu_devices(8)
