"""Numerical building blocks shared by several methods: simplex problems, projections in
Gramian space, and modulation coefficients. SciPy is imported only by the modules that
need it."""
