#!/usr/bin/env bash
# Starts moto_server (S3-compatible) on 127.0.0.1 on a free port, creates a test bucket, and prints
# `export` lines for the tests. Usage: eval "$(scripts/s3-server.sh start)"; scripts/s3-server.sh stop
set -euo pipefail
cd "$(dirname "$0")/.."
PIDFILE=.venv/moto.pid
case "${1:-}" in
start)
    port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    .venv/bin/moto_server -H 127.0.0.1 -p "$port" > .venv/moto.log 2>&1 &
    echo $! > "$PIDFILE"
    endpoint="http://127.0.0.1:$port"
    .venv/bin/python - "$endpoint" <<'PY' >&2
import sys, time, boto3
endpoint = sys.argv[1]
s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test",
                  aws_secret_access_key="test", region_name="us-east-1")
for _ in range(100):
    try:
        s3.create_bucket(Bucket="fhirlake-test")
        break
    except Exception:
        time.sleep(0.1)
else:
    sys.exit("moto_server did not start")
PY
    echo "export FHIRLAKE_TEST_S3_ENDPOINT=$endpoint FHIRLAKE_TEST_S3_BUCKET=fhirlake-test"
    ;;
stop)
    if [[ -f "$PIDFILE" ]]; then
        kill "$(cat "$PIDFILE")" 2>/dev/null || true
        rm -f "$PIDFILE"
    fi
    ;;
*)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
