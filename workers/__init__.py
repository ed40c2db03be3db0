"""Delivery: the dispatcher and the Celery workers that relay spooled mail to its MX hosts.

Never imports ``ingress``; speaks to it only through the spool (``shared``).
"""
