"""The ``tfp-bcnn`` command: demo, train, evaluate, prune, export.

The parser lives in the top-level module ``_tfp_bcnn_cli`` (installed beside
this package) so that the console script answers ``--help`` and argument
errors without importing this package, whose ``__init__`` imports TensorFlow
eagerly. This module re-exports it: ``python -m tfp_bcnn.cli ...`` and
``tfp_bcnn.cli.main(argv)`` behave as ``tfp-bcnn ...``.
"""

from __future__ import annotations

import sys

from _tfp_bcnn_cli import ESTIMATORS, METHODS, MODELS, SAMPLINGS, build_parser, main

__all__ = ["ESTIMATORS", "METHODS", "MODELS", "SAMPLINGS", "build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())
