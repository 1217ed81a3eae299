#!/usr/bin/env bash
# Installs the Debian packages a purpose needs, only when missing.
#   test  -> PostgreSQL server binaries (the store tests start a throwaway cluster), nginx
#            (the reference proxy of tests/gateway/test_conformance_nginx.py) and Prometheus
#            (prometheus and promtool scrape and check the operations listener's /metrics),
#            Redis (tests/support/redis.py starts a throwaway server for the shared-state tests),
#            Chromium (a real browser's CORS checks: tests/policies/cors/test_cors_in_chromium.py)
#   bench -> nginx, wrk, h2load and Redis (the reference proxy, the closed-loop and the
#            fixed-rate load generators, the shared counters of the policy benchmark)
set -euo pipefail
purpose=${1:-test}
need=()
case "$purpose" in
  test)  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
         [ -x /usr/sbin/nginx ] || need+=(nginx-light)
         [ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ] || need+=(prometheus)
         [ -x /usr/bin/redis-server ] || need+=(redis-server)
         [ -x /usr/bin/chromium ] || need+=(chromium) ;;
  bench) command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
         command -v wrk >/dev/null || need+=(wrk)
         command -v h2load >/dev/null || need+=(nghttp2-client)
         [ -x /usr/bin/redis-server ] || need+=(redis-server) ;;
  *) echo "unknown purpose: $purpose" >&2; exit 2 ;;
esac
[ ${#need[@]} -eq 0 ] && exit 0
echo "installing Debian packages: ${need[*]}"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian starts services on install; Portico's scripts start their own throwaway instances.
# Only what was just installed is stopped: a service the machine already ran stays up.
installed() { [[ " ${need[*]} " == *" $1 "* ]]; }
if [ "$purpose" = test ]; then
  if installed postgresql; then $SUDO service postgresql stop >/dev/null 2>&1 || true; fi
  if installed nginx-light; then $SUDO service nginx stop >/dev/null 2>&1 || true; fi
  if installed redis-server; then $SUDO service redis-server stop >/dev/null 2>&1 || true; fi
  if installed prometheus; then
    $SUDO service prometheus stop >/dev/null 2>&1 || true
    $SUDO service prometheus-node-exporter stop >/dev/null 2>&1 || true
  fi
fi
if [ "$purpose" = bench ]; then
  $SUDO service nginx stop >/dev/null 2>&1 || true
  if installed redis-server; then $SUDO service redis-server stop >/dev/null 2>&1 || true; fi
fi
