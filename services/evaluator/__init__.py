"""The evaluator: judges a candidate adapter, unfused, against the current one.

``metrics`` holds the socket-free, deterministic measurements (shared with the
benchmark), ``canaries`` the fixed general-capability suites, ``core`` the
gates and the verdict.
"""
