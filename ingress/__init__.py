"""SMTP ingress: accepts mail and stores it durably in the Redis spool.

The session (an asyncio protocol of our own) owns the SMTP state machine; the pure
modules (`commands`, `policy`, `trace`, `data`, `proxy`) own the decisions; `store` is the
only module that talks to Redis. Never imports Celery or `workers`.
"""
