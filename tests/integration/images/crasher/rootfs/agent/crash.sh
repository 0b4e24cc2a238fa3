#!/bin/sh
echo "crasher: starting up (stdout)"
echo "crasher: something went wrong (stderr)" >&2
sleep "${CRASH_DELAY:-1}"
exit "${EXIT_CODE:-3}"
