"""The words of the generated scenarios: evidence texts and explanations.

Evidence reads like what exemplar spans and logs really carry. Answers quote the prompt's
own lines, so every number they cite is one the model was given (the grounding guard), and
contain no double quote or backslash, which the decoding grammar does not allow in text.
"""

from __future__ import annotations

import random
import re
from typing import NamedTuple

from service.contract import AnomalyReport, ProbableCause
from service.prompt import Signal, derived_signals, settled

C = ProbableCause

EVIDENCE: dict[ProbableCause, list[str]] = {
    C.local_cpu_saturation: [
        "ThreadPoolExecutor rejected task: all {n} workers busy, queue full",
        "container cpu throttled: nr_throttled={big} throttled_time={s}s",
        "event loop blocked for {ms} ms by a synchronous regex match",
        "pricing rules compiled on every request: cache disabled",
        "worker threads starved: {n} runnable, 0 idle",
        "hot loop in JSON serialisation: {n}% of samples in encode()",
        "CPU quota exceeded, cgroup cpu.stat throttled_usec={big}",
        "request handler spinning on a lock: busy wait",
        "profiler: {n}% of CPU in regex backtracking",
        "runtime: goroutines {big}, GOMAXPROCS=2, scheduler latency {ms} ms",
        "uvicorn worker blocked {s} s in a CPU-bound handler, event loop starved",
        "load average {n}.4 on 2 cores, run queue {k}0 deep",
        "GIL held {n}% of wall time by one thread: requests wait for the interpreter",
        "pod throttled in {n}% of CFS periods at its CPU limit",
        "flame graph: {n}% of samples in template rendering",
    ],
    C.downstream_dependency: [
        "HikariPool-1 - Connection is not available, request timed out after {ms}ms",
        "upstream request timeout calling {dep} after {ms} ms",
        "slow query on {dep}: {s} s, full table scan",
        "connection pool exhausted: {n}/{n} in use, waiting for {dep}",
        "504 Gateway Timeout from {dep}",
        "{dep} responded in {ms} ms (SLO 200 ms)",
        "lock wait timeout exceeded on {dep}; try restarting transaction",
        "circuit breaker half-open for {dep}: calls timing out",
        "read timed out waiting for {dep} response",
        "ConnectionPoolTimeoutException: Timeout waiting for connection from pool ({dep})",
        "pgbouncer: no more connections allowed (max_client_conn) for {dep}",
        "Timeout acquiring a connection to {dep}. The pool is probably full.",
        "mysql slow log: Query_time: {s}.4 Rows_examined: {big} on {dep}",
        "context deadline exceeded waiting for a {dep} connection from the pool",
        "Npgsql: the connection pool has been exhausted, waited {ms} ms for {dep}",
        "upstream_rq_timeout for cluster {dep}: {big} in the last minute",
        "ElasticsearchTimeoutException: no answer from {dep} in {ms} ms",
        "{dep} server spans p99 {ms} ms: the time is spent inside {dep}",
        "Deadlock found when trying to get lock on {dep}; {n} transactions waiting",
    ],
    C.memory_pressure: [
        "java.lang.OutOfMemoryError: Java heap space",
        "GC overhead limit exceeded",
        "Full GC pause {ms} ms, heap {n}% after collection",
        "MemoryError: unable to allocate array",
        "kernel: Out of memory: Killed process {big} (java)",
        "heap usage {n}% after GC, old generation full",
        "swap in use: {n}% and rising, major page faults",
        "fatal error: runtime: out of memory",
        "stop-the-world GC pauses total {s} s in the last minute",
        "runtime: GC forced, heap {n}% of GOMEMLIMIT, GC CPU fraction {k}0%",
        "G1 to-space exhausted, humongous allocation stalls {ms} ms",
        "Memory cgroup out of memory: Killed process {big} (python3)",
        "RSS at {n}% of the container limit and climbing",
        "V8 mark-sweep {ms} ms: heap close to its limit",
    ],
    C.traffic_surge: [
        "crawler traffic from one ASN: {n}% of requests, user-agent python-requests",
        "marketing campaign email sent at the top of the hour",
        "rate limiter engaged: 429 returned to {n}% of clients",
        "bot signups from new IP ranges, captcha failures rising",
        "flash sale started: traffic from the mobile app spiking",
        "new client release polling every second instead of every minute",
        "DDoS mitigation triggered at the edge",
        "partner batch import hitting the API in parallel",
        "push notification sent to all users: requests {k}x the weekly peak",
        "autoscaler at max replicas, incoming requests still rising",
        "link shared on social media: {n}% of sessions are new visitors",
    ],
    C.queue_backlog: [
        "consumer lag {big} messages on partition {k}",
        "redelivered messages: prefetch exhausted, consumers idle waiting for acks",
        "queue backlog growing: publish rate above ack rate for {n} minutes",
        "messages waiting in queue for {s} s before delivery",
        "consumer group rebalancing, partitions unassigned",
        "dead consumer: no ack for {n} minutes, messages piling up",
        "ready messages {big}, unacked {n}",
        "worker pool scaled to 0 by mistake, jobs queued",
        "RabbitMQ: {big} messages ready on the tasks queue, {k} consumers",
        "SQS ApproximateAgeOfOldestMessage {s} s and rising",
        "Kafka consumer group lag {big} and growing, {k} partitions behind",
        "Celery: {big} tasks pending in the default queue, {k} workers online",
        "jobs wait {s} s in the backlog before a worker picks them up",
    ],
    C.recent_deployment: [
        "version {ver} rolled out to 100% of pods",
        "feature flag new-pricing-engine enabled by the latest deploy",
        "config change deployed: cache TTL 600s to 5s",
        "canary promoted: build {big} now serving all traffic",
        "deploy {ver} switched the ORM to eager loading",
        "release {ver} disabled the response cache",
        "new build {big} enables verbose audit logging",
        "feature flag checkout-v2 turned on by deploy {ver}",
        "Argo CD synced the app to revision {ver}",
        "deployment rolled out: image tag {ver} on all replicas",
        "schema migration {big} shipped with release {ver}",
    ],
    C.network_degradation: [
        "TLS handshake failed: connection reset by peer",
        "DNS resolution timed out for {dep}.internal",
        "TCP retransmits {n}% on eth0, packet loss between zones",
        "read ECONNRESET from {dep}, socket hang up",
        "SSL_ERROR_SYSCALL during handshake with {dep}",
        "connect ETIMEDOUT to {dep}:443",
        "packet loss {n}% on the inter-region link",
        "broken pipe writing to {dep}: network unreachable",
        "netstat: {big} segments retransmitted, retransmit rate {n}x usual",
        "i/o timeout dialing {dep}:5432, SYN not answered",
        "upstream connect error or disconnect/reset before headers: connection termination",
        "dial tcp: lookup {dep} on 10.96.0.10:53: i/o timeout",
        "eth0 rx drops {n}% and rising, NIC errors {big}",
        "no route to host {dep}, ARP entries flapping",
    ],
}


HELDOUT_EVIDENCE: dict[ProbableCause, list[str]] = {
    C.local_cpu_saturation: [
        "bcrypt cost raised to 14: each login burns {ms} ms of CPU",
        "Node.js event loop lag {ms} ms: main thread busy in JSON.parse",
        "perf: {n}% of cycles in zlib deflate of response bodies",
        "Tomcat: all {n} http-nio threads busy, accept queue full",
    ],
    C.downstream_dependency: [
        "grpc DEADLINE_EXCEEDED from {dep}",
        "MongoWaitQueueFullException: too many threads waiting for a connection to {dep}",
        "canceling statement due to statement timeout on {dep}",
        "redis slowlog on {dep}: {ms} ms for one command",
        "r2dbc pool: acquire timed out after {ms} ms ({dep})",
    ],
    C.memory_pressure: [
        "container OOMKilled, restarted {k} times",
        "JavaScript heap out of memory: Ineffective mark-compacts near heap limit",
        "percent time in GC {n}% (gen2 collections rising)",
        "kswapd busy, {n}% swap used, page faults rising",
    ],
    C.traffic_surge: [
        "retry storm from clients: {n}% of requests are retries",
        "TV advert aired: sessions up sharply",
        "cron jobs of {big} tenants started at the same minute",
        "load balancer: new connections up {k}x in {s} minutes",
    ],
    C.queue_backlog: [
        "only 1 of {k} consumers connected after the rebalance",
        "oldest message age {s} s in the jobs queue",
        "Sidekiq queue latency {s} s, {big} jobs enqueued",
        "JetStream consumer: {big} messages pending, ack floor behind",
    ],
    C.recent_deployment: [
        "helm upgrade to chart {ver} completed",
        "rollout of {ver} finished, N+1 queries in the new code path",
        "LaunchDarkly: flag search-v3 served to 100% since release {ver}",
        "pipeline promoted build {big} to production",
    ],
    C.network_degradation: [
        "read tcp {dep}:443: read: connection reset by peer",
        "getaddrinfo EAI_AGAIN {dep}.svc.cluster.local",
        "net/http: TLS handshake timeout talking to {dep}",
        "nf_conntrack: table full, dropping packet",
        "MTU mismatch: fragmented packets dropped",
    ],
}
"""Evidence only the generated held-out file reads, so that no evaluation file shares an
evidence template with training (``data check`` refuses one that does)."""


def fill(template: str, dep: str, rng: random.Random) -> str:
    """An evidence template with plausible numbers, so no two scenarios read the same."""
    return template.format(
        dep=dep,
        n=rng.randint(8, 96),
        k=rng.randint(2, 9),
        ms=rng.choice([1200, 2500, 5000, 8000, 15000, 30000]),
        s=rng.randint(3, 90),
        big=rng.randint(1000, 250000),
        ver=f"{rng.randint(1, 9)}.{rng.randint(0, 40)}.{rng.randint(0, 9)}",
    )


NOISE_EVIDENCE = [
    "GET 200 OK",
    "health check passed",
    "span status: UNSET",
    "cache miss for key user:session",
    "span status: OK",
]
HELDOUT_NOISE_EVIDENCE = [
    "user-agent Mozilla/5.0, 200 in the usual time",
    "retry attempt 1 succeeded",
]
"""Noise only the generated held-out file reads."""


class Wording(NamedTuple):
    """The evidence texts one side of the data is drawn from."""

    decisive: dict[ProbableCause, list[str]]
    noise: list[str]


TRAINING = Wording(EVIDENCE, NOISE_EVIDENCE)
HELDOUT = Wording(HELDOUT_EVIDENCE, HELDOUT_NOISE_EVIDENCE)


def _pattern(template: str) -> re.Pattern[str]:
    """A template as a regular expression its filled-in lines match (any text for a field)."""
    return re.compile("(.+?)".join(re.escape(part) for part in re.split(r"\{\w+\}", template)))


TEMPLATES = tuple(
    (template, _pattern(template))
    for wording in (TRAINING, HELDOUT)
    for template in [*(t for ts in wording.decisive.values() for t in ts), *wording.noise]
)


def template_of(line: str) -> str | None:
    """The generator's evidence template ``line`` was filled from, if any."""
    return next((template for template, pattern in TEMPLATES if pattern.fullmatch(line)), None)


TRAITS = {
    "cpu_bound": (
        ["{service} is CPU-bound", "{service} computes in process: it is CPU-bound"],
        "{service} is CPU-bound, so idle CPU means it waits on {dep}",
    ),
    "io_bound": (
        ["{service} is I/O-bound on {dep}", "{service} spends its time waiting on {dep}"],
        "{service} is I/O-bound on {dep}, so quiet local signals point at {dep}",
    ),
    "heap": (
        ["{service} holds a big in-heap index", "{service} keeps a large cache in its heap"],
        "{service} holds a big in-heap index, so high memory means GC pauses",
    ),
    "queue_wait": (
        [
            "{service} latency includes queue wait",
            "{service} consumes a queue: its latency includes the wait",
        ],
        "{service} latency includes queue wait, so quiet signals mean a backlog",
    ),
    "wan": (
        ["{service} fronts the WAN", "{service} serves clients across regions over the WAN"],
        "{service} fronts the WAN, so quiet local signals point at the network",
    ),
}
"""Service traits no signal shows: (notes an operator writes in the service catalogue, the
inference a diagnosis draws from the trait)."""

NOUN = {
    C.local_cpu_saturation: "CPU saturation",
    C.downstream_dependency: "a slow dependency",
    C.memory_pressure: "memory pressure",
    C.traffic_surge: "a traffic surge",
    C.queue_backlog: "a queue backlog",
    C.recent_deployment: "the recent deploy",
    C.network_degradation: "network trouble",
    C.unknown: "an unknown cause",
}


def _find(signals: list[Signal], prefix: str) -> Signal | None:
    return next((s for s in signals if s.name.startswith(prefix)), None)


def _fact(signal: Signal) -> str:
    """``cpu is 97% vs usual 45% (2.2x HIGHER)``: the prompt's line, as a clause."""
    name, value = signal.line().split(": ", 1)
    return f"{name} is {value}"


def _quote(text: str) -> str:
    clean = text.replace('"', "'").replace("\\", "/")
    if len(clean) <= 48:
        return clean
    return clean[: clean.rfind(" ", 0, 46)] + "..."  # at a word: never half a number


def explanation_for(
    report: AnomalyReport, cause: ProbableCause, pattern: str, knowledge: str | None = None
) -> tuple[str, str]:
    """(summary, explanation): the verdict, then the one fact that decides it (for the
    service_knowledge pattern, ``knowledge``: what the catalogue's trait implies). Both are
    kept to a clause each: every output token costs the service ~25 ms (README, service
    speed)."""
    signals = derived_signals(report)
    summary = settled(report).summary(cause)
    if summary is None:  # the generator gives every report a baseline
        raise ValueError(f"{report.service}: a training report needs a baseline to summarise")
    key = {
        C.local_cpu_saturation: "cpu",
        C.downstream_dependency: "downstream",
        C.memory_pressure: "memory",
        C.traffic_surge: "request rate",
        C.queue_backlog: "queue depth",
    }.get(cause)
    signal = _find(signals, key) if key else None
    if pattern == "evidence" and report.evidence:
        louder = next((s for s in signals[1:] if "HIGHER" in s.tag), None)
        follows = f"; the {louder.name} rise follows" if louder else ""
        explanation = f"The spans say '{_quote(report.evidence[0])}'{follows}."
    elif pattern == "service_knowledge" and knowledge:
        explanation = knowledge + "."
    elif pattern == "mixed" and signal is not None:
        other = next((s for s in signals[1:] if s.abnormal and s is not signal), None)
        follows = f"; the {other.name} rise follows." if other else "."
        explanation = f"The {_fact(signal)}{follows}"
    elif cause == C.recent_deployment:
        minutes = report.context.deployed_minutes_ago
        explanation = f"A deploy {minutes:g} minutes ago and no other signal stands out."
    elif cause == C.unknown:
        explanation = "No signal or evidence stands out."
    elif signal is not None:
        explanation = f"The {_fact(signal)}, other signals normal."
    else:
        explanation = f"Latency points at {NOUN[cause]}."
    return summary, explanation
