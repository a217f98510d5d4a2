"""Celery settings that mesh does not take, each with what mesh does instead.

``app.conf`` (mesh/conf.py) refuses these names with the reason given here, so a
Celery configuration that moves over fails loudly on what would otherwise be silently
ignored. Three kinds: settings with a fixed value in mesh (``FIXED``: accepted only at
that value), Celery ideas that mesh has not got yet (``NOT_YET``) and settings for parts
mesh does not have (``NOT_USED``, ``NOT_USED_PREFIXES``: the broker, result backends).
"""
from __future__ import annotations

from typing import Any

from mesh.security.text import safe_logger

log = safe_logger("mesh.conf")

_NO_BROKER = ("mesh has no broker: clients send tasks straight to nodes, found by mDNS or "
              "given as peers (Mesh(peers=[...]), the 'peers' setting or MESH_PEERS)")
_NO_BACKEND = ("mesh keeps results on the nodes that ran the tasks (their journals), so no "
               "result backend is needed; AsyncResult works from any process")
_MSGPACK = "mesh always encodes with msgpack (never pickle): docs/protocol.md, section 7"
_QUEUES = ("a queue exists by being served (meshnode --queues); tasks are routed with queue=, "
           "task_routes and task_default_queue (docs/routing.md)")
_CHORDS = ("the nodes send a chord's body when its header's last result is in "
           "(docs/workflows.md): nothing joins or polls")
_NO_BEAT = ("mesh has no beat process: every node carries the schedule (beat_schedule) and "
            "exactly one fires each run")
_EVENTS = "nodes publish events on their own socket (docs/events.md); there is no event queue"
_LOGGING = "meshnode logs to stderr; use --loglevel and worker_log_format, or your own handlers"

# name -> (the only value mesh takes, why)
FIXED: dict[str, tuple[Any, str]] = {
    "enable_utc": (True, "times travel as unix time (UTC); crontab entries are read in "
                         "'timezone'"),
    "result_extended": (True, "a result always knows its task's name, args, kwargs, node and "
                              "date_done"),
    "task_remote_tracebacks": (True, "a failed task's traceback always comes back with it"),
    "task_acks_on_failure_or_timeout": (True, "a task that failed or hit its time limit is "
                                              "finished; use retries to run it again"),
    "worker_enable_remote_control": (True, "every node answers control commands"),
    "worker_deduplicate_successful_tasks": (True, "a node that finished a task id answers "
                                                  "with the stored result instead of running "
                                                  "it again"),
}

# Celery ideas that mesh will have; setting them now would do nothing, so it is refused
NOT_YET: dict[str, str] = {
    "worker_direct": "a queue per node (meshnode --queues with the node's own name does it by hand)",
    "task_inherit_parent_priority": ("a task sent from a task takes its own priority (a "
                                     "workflow's steps take the workflow's: docs/workflows.md)"),
    "task_allow_error_cb_on_chord_header": ("errbacks of a chord's header tasks (a failed header "
                                            "task fails the chord, and the body's link_error "
                                            "runs: docs/workflows.md)"),
    "worker_soft_shutdown_timeout": "meshnode --shutdown-timeout says how long running tasks "
                                    "may finish",
    "security_key": "CurveZMQ keys (meshnode --keys)", "security_certificate": "meshnode --keys",
    "security_cert_store": "meshnode --keys", "security_digest": "meshnode --keys",
    "security_key_password": "meshnode --keys",
}

NOT_USED: dict[str, str] = {
    "result_chord_join_timeout": _CHORDS, "result_chord_retry_interval": _CHORDS,
    "worker_autoscaler": ("meshnode --autoscale MAX,MIN autoscales; for another policy, "
                          "subclass mesh.node.autoscale.Autoscaler and app.components.add it "
                          "(docs/pools.md)"),
    "worker_pool_restarts": ("mesh has no pool_restart command: meshnode --autoreload replaces "
                             "the children when the app's code changes (docs/pools.md)"),
    "broker": _NO_BROKER, "backend": _NO_BACKEND, "result_backend": _NO_BACKEND,
    "result_persistent": _NO_BACKEND, "result_cache_max": _NO_BACKEND,
    "result_serializer": _MSGPACK, "result_compression": _MSGPACK,
    "result_accept_content": _MSGPACK, "accept_content": _MSGPACK, "task_serializer": _MSGPACK,
    "task_compression": _MSGPACK, "event_serializer": _MSGPACK,
    "task_protocol": "mesh speaks its own protocol (docs/protocol.md)",
    "task_publish_retry": "a client owns its tasks until their results arrive and resends "
                          "them when a node dies: there is no publish to retry",
    "task_publish_retry_policy": "a client owns its tasks and resends them when a node dies",
    "task_default_exchange": _NO_BROKER, "task_default_exchange_type": _NO_BROKER,
    "task_default_routing_key": _NO_BROKER, "task_default_delivery_mode": _NO_BROKER,
    "task_create_missing_queue_type": _NO_BROKER, "task_default_queue_type": _NO_BROKER,
    "task_queues": _QUEUES, "task_create_missing_queues": _QUEUES,
    "task_queue_max_priority": "every node orders its queued tasks by priority 0..9",
    "task_create_missing_queue_exchange_type": _NO_BROKER,
    "worker_prefetch_multiplier": "mesh never prefetches: children ask for work when idle",
    "worker_enable_prefetch_count_reduction": "mesh never prefetches",
    "worker_detect_quorum_queues": _NO_BROKER,
    "worker_cancel_long_running_tasks_on_connection_loss": _NO_BROKER,
    "worker_enable_soft_shutdown_on_idle": _NO_BROKER,
    "worker_state_db": "every node keeps a journal (meshnode --data-dir) holding its tasks, "
                       "results and revokes",
    "worker_lost_wait": "a node knows at once that a child died (it reads the child's last "
                        "words from its socket)",
    "worker_proc_alive_timeout": "children are forked and ready at once",
    "worker_timer_precision": "eta tasks wait in the node's timers, to the millisecond",
    "worker_consumer": "meshnode's parts are components: app.components",
    "worker_timer": "eta tasks wait in the node's timers",
    "worker_redirect_stdouts": _LOGGING, "worker_redirect_stdouts_level": _LOGGING,
    "worker_log_color": _LOGGING, "worker_task_log_format": _LOGGING,
    "worker_logfile": _LOGGING, "worker_pidfile": "run meshnode under a supervisor (systemd)",
    "event_queue_ttl": _EVENTS, "event_queue_expires": _EVENTS, "event_queue_prefix": _EVENTS,
    "event_exchange": _EVENTS, "control_queue_ttl": _EVENTS, "control_queue_expires": _EVENTS,
    "control_exchange": _EVENTS,
    "beat_scheduler": ("mesh loads no scheduler class: entries a scheduler keeps elsewhere "
                       "(django_celery_beat's DatabaseScheduler: its tables, its admin) do "
                       "not run; put them in beat_schedule, which every node carries "
                       "(docs/periodic.md)"),
    "beat_schedule_filename": _NO_BEAT, "beat_sync_every": _NO_BEAT,
    "beat_max_loop_interval": _NO_BEAT, "beat_cron_starting_deadline": _NO_BEAT,
    "override_backends": _NO_BACKEND,
}

# whole families of Celery settings: the broker's, and every result backend's
NOT_USED_PREFIXES: dict[str, str] = {
    "broker_": _NO_BROKER, "result_backend_": _NO_BACKEND, "database_": _NO_BACKEND,
    "cache_": _NO_BACKEND, "redis_": _NO_BACKEND, "mongodb_": _NO_BACKEND,
    "cassandra_": _NO_BACKEND, "s3_": _NO_BACKEND, "azureblockblob_": _NO_BACKEND,
    "elasticsearch_": _NO_BACKEND, "riak_": _NO_BACKEND, "couchbase_": _NO_BACKEND,
    "arangodb_": _NO_BACKEND, "cosmosdbsql_": _NO_BACKEND, "couchdb_": _NO_BACKEND,
    "gcs_": _NO_BACKEND, "sqs_": _NO_BROKER, "amqp_": _NO_BROKER, "events_": _EVENTS,
    "beat_": _NO_BEAT,
}


# apply_async/send_task options of Celery's that mean something only with a broker, and
# @app.task options mesh has no use for: accepted, so calls move over unchanged, and
# logged once each
CALL_OPTIONS: dict[str, str] = {
    "routing_key": _NO_BROKER, "exchange": _NO_BROKER, "exchange_type": _NO_BROKER,
    "serializer": _MSGPACK, "compression": _MSGPACK,
    "retry": "a client owns its tasks and resends them when a node dies",
    "retry_policy": "a client owns its tasks and resends them when a node dies",
    "connection": _NO_BROKER, "producer": _NO_BROKER, "publisher": _NO_BROKER,
    "add_to_parent": "parent tasks come with workflows", "delivery_mode": _NO_BROKER,
    "mandatory": _NO_BROKER, "immediate": _NO_BROKER, "reply_to": "results go to the owner",
}
TASK_OPTIONS: dict[str, str] = {
    "serializer": _MSGPACK, "shared": "every task is registered on the app that defines it",
    "lazy": "tasks are registered when decorated",
    "routing_key": _NO_BROKER, "exchange": _NO_BROKER,
    "trail": "the results a task started are found through workflows (parent, children)",
    "send_events": "every node publishes its tasks' events (meshctl events)",
    "store_eager_result": "an eager run's result is its EagerResult, not stored",
    "resultrepr_maxsize": "results are not logged",
    "acks_on_failure_or_timeout": "a failed or timed-out task is done, as Celery's default "
                                  "(acks_on_failure_or_timeout=True)",
}


def ignore_options(options: dict[str, Any], table: dict[str, str], what: str,
                   known: str, logged: set[Any]) -> None:
    """Options in ``table`` are logged as not used (once each: ``logged`` remembers,
    one set per app); any other is an error."""
    from mesh.exceptions import ConfigError
    for key in options:
        if key not in table:
            import difflib
            hint = difflib.get_close_matches(key, [*known.split(", "), *table], n=1)
            raise ConfigError(f"unknown {what} option {key!r}"
                              + (f"; did you mean {hint[0]!r}?" if hint else "")
                              + f" (mesh takes {known})")
        if (what, key) not in logged:
            logged.add((what, key))
            log.warning("%s option %s=%r is not used by mesh: %s", what, key, options[key], table[key])
