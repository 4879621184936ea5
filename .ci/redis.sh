#!/usr/bin/env bash
# Install (Debian package) and start a redis-server on loopback for the Redis online-store tests.
# Prints nothing when a server already answers on the port.
set -euo pipefail
port=${PCTR_TEST_REDIS_PORT:-6390}
if ! command -v redis-server >/dev/null 2>&1; then
  echo "redis: installing redis-server (apt)"
  if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
fi
if redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1; then
  exit 0
fi
redis-server --bind 127.0.0.1 --port "$port" --save '' --appendonly no --daemonize yes \
  --logfile /dev/null >/dev/null
for _ in $(seq 50); do
  redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 && exit 0
  sleep 0.1
done
echo "redis: redis-server did not start on 127.0.0.1:$port" >&2
exit 1
