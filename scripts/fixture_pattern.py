"""The exactly representable test values the fixture scripts share with the Rust tests
(tests/integration/common: pattern)."""
import numpy as np


def pattern(n, a, b, m, scale=1.0):
    """((a·i + b) % m) / (m/2) - 1, times scale: exactly representable, rebuilt bit for bit in Rust."""
    i = np.arange(n)
    v = ((a * i + b) % m).astype(np.float32) / np.float32(m / 2) - np.float32(1.0)
    return v * np.float32(scale)
