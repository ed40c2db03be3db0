#!/bin/sh
# Start this pod's Sentinel, watching the current primary of the spool.
#
# The primary is, in this order: the one the other Sentinels name; else a Redis pod that
# says it is a primary; else redis-0 (a new cluster). Sentinel rewrites its configuration
# as it learns, so the template is copied to a writable file first.
set -eu

service=mxfleet
self="${HOSTNAME}.redis-sentinel"
sentinels="redis-sentinel-0.redis-sentinel redis-sentinel-1.redis-sentinel redis-sentinel-2.redis-sentinel"
peers="redis-0.redis redis-1.redis redis-2.redis"
conf=/run/sentinel/sentinel.conf

from_sentinels() {
    for sentinel in $sentinels; do
        [ "$sentinel" != "$self" ] || continue
        name=$(timeout 3 redis-cli -h "$sentinel" -p 26379 --raw \
            sentinel get-master-addr-by-name "$service" 2>/dev/null | head -n 1) || true
        case "$name" in
            redis-*) echo "$name"; return 0 ;;
        esac
    done
    return 1
}

from_peers() {
    for peer in $peers; do
        if timeout 3 redis-cli -h "$peer" info replication 2>/dev/null | grep -q '^role:master'; then
            echo "$peer"
            return 0
        fi
    done
    return 1
}

primary=$(from_sentinels || from_peers || echo redis-0.redis)
# `sentinel monitor` refuses a name that does not resolve yet (the pod is being scheduled)
tries=0
until getent hosts "$primary" >/dev/null; do
    tries=$((tries + 1))
    if [ "$tries" -ge 120 ]; then
        echo "sentinel-start: $primary does not resolve" >&2
        exit 1
    fi
    sleep 1
done
sed -e "s/@PRIMARY@/$primary/" -e "s/@SELF@/$self/" /scripts/sentinel.conf >"$conf"
echo "sentinel-start: $self watches $primary"
exec redis-server "$conf" --sentinel
