"""The core: what every layer above needs and nothing that needs a backend. Problems and their geometry, the float64
reference, device identity, the timing loop, correctness checks, tunable spaces, the results files, the user-error
type. It imports no backend, no tuner, no dispatch and no command line (tests/test_layers.py checks it)."""

__version__ = "0.1.0"
