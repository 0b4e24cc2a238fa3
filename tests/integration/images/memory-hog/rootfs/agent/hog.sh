#!/bin/sh
cap_mb="${HOG_MAX_MB:-1024}"
echo "memory-hog: allocating until OOM-killed (safety cap ${cap_mb} MiB)"
s=xxxxxxxxxxxxxxxx
while :; do
    s="$s$s"
    n=${#s}
    if [ "$n" -ge 1048576 ]; then
        echo "memory-hog: holding $((n / 1048576)) MiB"
        if [ $((n / 1048576)) -ge "$cap_mb" ]; then
            echo "memory-hog: reached ${cap_mb} MiB without being OOM-killed" >&2
            exit 1
        fi
    fi
done
