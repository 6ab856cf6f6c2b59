#!/usr/bin/env bash
# Makes sure RabbitMQ answers on 127.0.0.1:5672: starts a locally installed server if it is
# not running, or says what to install.
set -euo pipefail
HOST=127.0.0.1
PORT=${WHYSLOW_AMQP_PORT:-5672}

listening() { (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; }

listening && exit 0
if ! command -v rabbitmq-server >/dev/null; then
  cat >&2 <<MSG
RabbitMQ is not running on $HOST:$PORT and is not installed.
Install it (Debian/Ubuntu: sudo apt-get install rabbitmq-server; macOS: brew install rabbitmq)
or run one in a container: docker run -d -p 5672:5672 rabbitmq:3
then run this command again. To use a broker elsewhere, set WHYSLOW_AMQP_URL.
MSG
  exit 1
fi
echo "starting RabbitMQ (rabbitmq-server -detached)..."
rabbitmq-server -detached >/dev/null 2>&1 || true
for _ in $(seq 1 120); do
  if listening; then echo "RabbitMQ is up on $HOST:$PORT"; exit 0; fi
  sleep 1
done
echo "RabbitMQ did not start within 120s; see its logs (rabbitmq-diagnostics status)." >&2
exit 1
