#!/bin/sh
# Start this pod's Redis as the primary, or as a replica of the current primary.
#
# The primary is, in this order: the one the Sentinels name (they know about failovers);
# else a pod of this StatefulSet that says it is a primary (the Sentinels restarted too);
# else redis-0 (a new cluster). Every pod announces its stable name (redis-N.redis), not its
# IP, which changes when the pod does: Sentinel runs with resolve-hostnames and
# announce-hostnames, so Sentinel and mxfleet reach the pods by name.
#
# A primary that restarts before the Sentinels noticed (an OOM kill, a quick container
# restart) is still named by them, but its AOF may lack the last second of writes that
# its replicas hold and that WAIT confirmed to mxfleet: resuming as primary would make the
# replicas drop them. It starts as a replica of a peer instead; the Sentinels see their
# primary report itself a replica, call it down and promote the replica with the most data.
set -eu

service=mxfleet
self="${HOSTNAME}.redis"
sentinels="redis-sentinel-0.redis-sentinel redis-sentinel-1.redis-sentinel redis-sentinel-2.redis-sentinel"
peers="redis-0.redis redis-1.redis redis-2.redis"
conf=/run/redis/redis.conf

from_sentinels() {
    for sentinel in $sentinels; do
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
        [ "$peer" != "$self" ] || continue
        if timeout 3 redis-cli -h "$peer" info replication 2>/dev/null | grep -q '^role:master'; then
            echo "$peer"
            return 0
        fi
    done
    return 1
}

any_peer() {
    for peer in $peers; do
        [ "$peer" != "$self" ] || continue
        if timeout 3 redis-cli -h "$peer" ping 2>/dev/null | grep -q PONG; then
            echo "$peer"
            return 0
        fi
    done
    return 1
}

if primary=$(from_sentinels); then
    if [ "$primary" = "$self" ] && peer=$(any_peer); then
        primary=$peer
    fi
else
    primary=$(from_peers || echo redis-0.redis)
fi
{
    echo "include /etc/redis/redis.conf"
    echo "include /etc/redis/kubernetes.conf"
    echo "replica-announce-ip $self"
    if [ "$primary" != "$self" ]; then
        echo "replicaof $primary 6379"
    fi
} >"$conf"
echo "redis-start: $self starts as $( [ "$primary" = "$self" ] && echo primary || echo "replica of $primary" )"
exec redis-server "$conf"
