"""Every Prometheus metric of mxfleet, defined once. Labels are bounded (invariant 8).

Ingress:
- ``mxfleet_ingress_sessions_total``: SMTP sessions opened.
- ``mxfleet_ingress_sessions_refused_total{reason}``: refused at connect
  (``node_limit``, ``ip_limit``, ``draining``).
- ``mxfleet_ingress_active_sessions``: sessions open now.
- ``mxfleet_ingress_messages_total{result}``: end-of-DATA outcomes (``accepted``,
  ``spool_unavailable``, ``spool_full``, ``too_big``, ``loop``, ``bare_newline``,
  ``line_too_long``, ``bad_priority``, ``suppressed``: every recipient was dropped by the
  suppression list, nothing stored).
- ``mxfleet_ingress_recipients_total{result}``: RCPT outcomes (``accepted``,
  ``relay_denied``, ``too_many``, ``bad_address``).
- ``mxfleet_ingress_received_bytes_total``: bytes of accepted messages.
- ``mxfleet_ingress_enqueue_seconds``: time of the durable spool write (accept script + WAIT).
- ``mxfleet_ingress_tls_handshakes_total{result}``: STARTTLS outcomes (``ok``, ``failed``).
- ``mxfleet_ingress_auth_total{result}``: AUTH outcomes (``ok``, ``failed``, ``tempfail``).
- ``mxfleet_ingress_auth_refused_total{reason}``: AUTH refused without a look at the
  credentials: ``locked`` (the client is over ``max_auth_failures_per_ip``),
  ``unavailable`` (its failure count could not be read from Redis).
- ``mxfleet_ingress_session_errors_total{reason}``: sessions ended by ``timeout``,
  ``too_many_errors``, ``auth_failures``.
- ``mxfleet_ingress_spool_ready``: 1 when the spool is reachable, durable and below its
  high-water mark.
- ``mxfleet_ingress_draining``: 1 while the node drains after SIGTERM.
- ``mxfleet_ingress_api_requests_total{endpoint,code}``: HTTP API requests by endpoint
  (``message``, ``batch``, ``openapi``, ``other``) and HTTP status code.
- ``mxfleet_ingress_api_messages_total{result}``: messages submitted through the HTTP API
  (``accepted``, ``invalid``, ``refused``, ``too_big``, ``tempfail``); the accepted ones
  count in ``mxfleet_ingress_messages_total`` too.
- ``mxfleet_ingress_dkim_messages_total{result}``: DKIM signing outcomes at end of DATA,
  counted only when keys are loaded (``signed``; ``no_key``: no key for the sender's
  domain; ``already_signed``: it carries a signature of every key's d= and s=; ``failed``:
  its header section does not parse, stored unsigned). A message the spool then refuses
  was counted too.
- ``mxfleet_ingress_dkim_signatures_total{algorithm}``: signatures added (``rsa-sha256``,
  ``ed25519-sha256``): a domain with keys of both algorithms adds two per message.

Queue (the leading dispatcher): ``mxfleet_queue_jobs``, ``mxfleet_queue_inflight_jobs``,
``mxfleet_queue_scheduled_jobs``, ``mxfleet_queue_due_domains``,
``mxfleet_queue_oldest_age_seconds``; per policy (sampled every few seconds):
``mxfleet_queue_policy_jobs{policy}`` (scheduled jobs) and
``mxfleet_queue_policy_overdue_seconds{policy}`` (how long its earliest due job has waited
past its due time: grows while a destination is throttled, paused or failing); per
priority class (same sample): ``mxfleet_queue_class_jobs{class}`` (scheduled jobs).
Cluster (the leading dispatcher): ``mxfleet_cluster_processes{role}`` (processes whose
heartbeat is fresh), ``mxfleet_redis_used_memory_bytes``, ``mxfleet_redis_maxmemory_bytes``
(0: no limit).

Dispatcher: ``mxfleet_dispatcher_leader``, ``mxfleet_dispatcher_tickets_total{verdict}``
(``issued``, ``empty``, ``busy``, ``later``, ``full``, ``saturated``),
``mxfleet_dispatcher_reaped_jobs_total``.

Delivery (workers): ``mxfleet_delivery_recipients_total{policy,verdict}`` (``delivered``,
``deferred``, ``bounced``), ``mxfleet_delivery_tickets_total{result}`` (``done``,
``stale``, ``failed``), ``mxfleet_delivery_connections_total{result}`` (``ok``,
``failed``), ``mxfleet_delivery_lease_lost_total``,
``mxfleet_delivery_maybe_duplicated_total``, ``mxfleet_delivery_dsn_total``,
``mxfleet_delivery_dsn_dkim_total{result}``,
``mxfleet_delivery_transaction_seconds``, ``mxfleet_delivery_latency_seconds``,
``mxfleet_delivery_open_connections{policy}`` (this worker's; sum them for the cluster);
per priority class: ``mxfleet_delivery_class_recipients_total{class,verdict}`` and
``mxfleet_delivery_class_latency_seconds{class}`` (accept to delivery).

Shaping: ``mxfleet_shaping_deferrals_total{policy,reason}``: times delivery to a
destination was put off: ``rate`` (its rate admitted nothing: a dispatch held back or a
ticket ended), ``connections`` (every connection slot taken), ``remote`` (a job deferred
by the remote server's 4xx); ``mxfleet_shaping_backoffs_total{policy}``: adaptive cuts
(workers). The leading dispatcher exports, per policy, the lowest adaptive factor of its
destinations (``mxfleet_shaping_factor``, 1 without backoff) and what it leaves:
``mxfleet_shaping_effective_rate`` (messages per second; 0 when the policy has no rate) and
``mxfleet_shaping_effective_connections``.

Suppression list (:mod:`shared.suppression`):
``mxfleet_ingress_suppressed_recipients_total{action}``: RCPTs of relay clients to a
suppressed recipient (``refused``: 550 5.7.1; ``dropped``: 250, not queued);
``mxfleet_ingress_suppression_unchecked_total``: RCPTs accepted without a look at the list
because Redis could not be asked (fail open); ``mxfleet_suppression_added_total{source}``:
entries written by this process (``bounce``: workers, on a hard bounce; ``operator``:
``mxfleet suppress``, a short-lived command, so the cluster-wide figures are also kept in
``{p}stats``).

The ``policy`` label is a policy name from the configuration, or ``default``; the
``class`` label is ``transactional`` or ``bulk`` (:mod:`shared.priority`).
"""

from prometheus_client import Counter, Gauge, Histogram

INGRESS_SESSIONS = Counter("mxfleet_ingress_sessions", "SMTP sessions opened")
INGRESS_SESSIONS_REFUSED = Counter(
    "mxfleet_ingress_sessions_refused", "SMTP sessions refused at connect", ["reason"]
)
INGRESS_ACTIVE_SESSIONS = Gauge("mxfleet_ingress_active_sessions", "SMTP sessions open now")
INGRESS_MESSAGES = Counter(
    "mxfleet_ingress_messages", "Messages by end-of-DATA outcome", ["result"]
)
INGRESS_RECIPIENTS = Counter("mxfleet_ingress_recipients", "RCPT outcomes", ["result"])
INGRESS_BYTES = Counter("mxfleet_ingress_received_bytes", "Bytes of accepted messages")
INGRESS_ENQUEUE_SECONDS = Histogram(
    "mxfleet_ingress_enqueue_seconds",
    "Durable spool write (accept script and WAIT)",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
INGRESS_TLS = Counter("mxfleet_ingress_tls_handshakes", "STARTTLS outcomes", ["result"])
INGRESS_AUTH = Counter("mxfleet_ingress_auth", "SMTP AUTH outcomes", ["result"])
INGRESS_AUTH_REFUSED = Counter(
    "mxfleet_ingress_auth_refused", "SMTP AUTH refused without checking credentials", ["reason"]
)
INGRESS_SESSION_ERRORS = Counter(
    "mxfleet_ingress_session_errors", "Sessions closed by the server", ["reason"]
)
INGRESS_SPOOL_READY = Gauge(
    "mxfleet_ingress_spool_ready", "1 when the spool is reachable, durable and has room"
)
INGRESS_DRAINING = Gauge("mxfleet_ingress_draining", "1 while draining after SIGTERM")
INGRESS_DKIM_MESSAGES = Counter(
    "mxfleet_ingress_dkim_messages", "Messages by DKIM signing outcome", ["result"]
)
INGRESS_DKIM_SIGNATURES = Counter(
    "mxfleet_ingress_dkim_signatures", "DKIM signatures added", ["algorithm"]
)
INGRESS_API_REQUESTS = Counter(
    "mxfleet_ingress_api_requests", "HTTP API requests", ["endpoint", "code"]
)
INGRESS_API_MESSAGES = Counter(
    "mxfleet_ingress_api_messages", "Messages submitted through the HTTP API", ["result"]
)
INGRESS_API_CUT = Counter(
    "mxfleet_ingress_api_connections_cut",
    "HTTP API connections closed by the node: too_many (over api_max_connections), "
    "request_timeout (a request not delivered within api_request_timeout)",
    ["reason"],
)

# --- queue (exported by the leading dispatcher) ---------------------------------------------
QUEUE_JOBS = Gauge("mxfleet_queue_jobs", "Jobs not finished (scheduled or in flight)")
QUEUE_INFLIGHT = Gauge("mxfleet_queue_inflight_jobs", "Jobs held by a ticket now")
QUEUE_SCHEDULED = Gauge("mxfleet_queue_scheduled_jobs", "Jobs waiting in a schedule")
QUEUE_DUE_DOMAINS = Gauge("mxfleet_queue_due_domains", "Destinations with work due now")
QUEUE_OLDEST_AGE = Gauge(
    "mxfleet_queue_oldest_age_seconds", "Age of the oldest message not yet finished"
)

QUEUE_POLICY_JOBS = Gauge(
    "mxfleet_queue_policy_jobs", "Scheduled jobs of the policy's destinations", ["policy"]
)
QUEUE_POLICY_OVERDUE = Gauge(
    "mxfleet_queue_policy_overdue_seconds",
    "How long the policy's earliest due job has waited past its due time",
    ["policy"],
)
QUEUE_CLASS_JOBS = Gauge("mxfleet_queue_class_jobs", "Scheduled jobs by priority class", ["class"])
CLUSTER_PROCESSES = Gauge("mxfleet_cluster_processes", "Processes with a fresh heartbeat", ["role"])
REDIS_USED_MEMORY = Gauge("mxfleet_redis_used_memory_bytes", "Memory the spool's Redis uses")
REDIS_MAXMEMORY = Gauge("mxfleet_redis_maxmemory_bytes", "The spool's Redis maxmemory (0: none)")

# --- dispatcher ----------------------------------------------------------------------------
DISPATCHER_LEADER = Gauge("mxfleet_dispatcher_leader", "1 while this dispatcher leads")
DISPATCHER_TICKETS = Counter(
    "mxfleet_dispatcher_tickets", "Dispatch decisions for due destinations", ["verdict"]
)
DISPATCHER_REAPED = Counter(
    "mxfleet_dispatcher_reaped_jobs", "Jobs returned to their schedule after a lease expired"
)

# --- delivery (workers) --------------------------------------------------------------------
DELIVERY_RECIPIENTS = Counter(
    "mxfleet_delivery_recipients", "Recipient verdicts of delivery attempts", ["policy", "verdict"]
)
DELIVERY_CLASS_RECIPIENTS = Counter(
    "mxfleet_delivery_class_recipients",
    "Recipient verdicts of delivery attempts by priority class",
    ["class", "verdict"],
)
DELIVERY_OPEN_CONNECTIONS = Gauge(
    "mxfleet_delivery_open_connections", "Outbound SMTP connections open now", ["policy"]
)
DELIVERY_TICKETS = Counter("mxfleet_delivery_tickets", "Tickets run by workers", ["result"])
DELIVERY_CONNECTIONS = Counter(
    "mxfleet_delivery_connections", "Outbound SMTP connections", ["result"]
)
DELIVERY_LEASE_LOST = Counter(
    "mxfleet_delivery_lease_lost",
    "Attempts whose completion was refused because the lease was lost (possible duplicates)",
)
DELIVERY_MAYBE_DUPLICATED = Counter(
    "mxfleet_delivery_maybe_duplicated",
    "Recipients retried after the end of data was sent but its reply never came",
)
DELIVERY_DSN = Counter("mxfleet_delivery_dsn", "Delivery status notifications enqueued")
DELIVERY_DSN_DKIM = Counter(
    "mxfleet_delivery_dsn_dkim", "DSNs by DKIM signing outcome (with keys loaded)", ["result"]
)
DELIVERY_TRANSACTION_SECONDS = Histogram(
    "mxfleet_delivery_transaction_seconds",
    "One SMTP transaction to a destination",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600),
)
DELIVERY_LATENCY_SECONDS = Histogram(
    "mxfleet_delivery_latency_seconds",
    "From accept to delivery of a recipient",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400),
)

DELIVERY_CLASS_LATENCY_SECONDS = Histogram(
    "mxfleet_delivery_class_latency_seconds",
    "From accept to delivery of a recipient, by priority class",
    ["class"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400),
)

# --- shaping ------------------------------------------------------------------------------
SHAPING_DEFERRALS = Counter(
    "mxfleet_shaping_deferrals", "Times delivery to a destination was put off", ["policy", "reason"]
)
SHAPING_BACKOFFS = Counter(
    "mxfleet_shaping_backoffs", "Adaptive cuts of a destination's limits", ["policy"]
)
SHAPING_FACTOR = Gauge(
    "mxfleet_shaping_factor", "Lowest adaptive factor among the policy's destinations", ["policy"]
)
SHAPING_EFFECTIVE_RATE = Gauge(
    "mxfleet_shaping_effective_rate", "Messages per second the rate allows now", ["policy"]
)
SHAPING_EFFECTIVE_CONNECTIONS = Gauge(
    "mxfleet_shaping_effective_connections", "Connections allowed now", ["policy"]
)

# --- suppression list ----------------------------------------------------------------------
INGRESS_SUPPRESSED = Counter(
    "mxfleet_ingress_suppressed_recipients",
    "RCPTs to a suppressed recipient, by action",
    ["action"],
)
INGRESS_SUPPRESSION_UNCHECKED = Counter(
    "mxfleet_ingress_suppression_unchecked",
    "RCPTs accepted unchecked because the suppression list could not be asked",
)
SUPPRESSION_ADDED = Counter(
    "mxfleet_suppression_added", "Suppression entries written, by source", ["source"]
)
