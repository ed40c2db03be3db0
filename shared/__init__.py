"""The vocabulary the ingress and the workers share: settings, replies, keys, the spool.

This package is a leaf: it performs no network I/O of its own at import time and never
imports `ingress` or `workers`.
"""
