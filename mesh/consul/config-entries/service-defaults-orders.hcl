Kind     = "service-defaults"
Name     = "orders"
Protocol = "http"

# How the orders sidecar treats its upstreams (docs/mesh-config.md explains each value).
UpstreamConfig {
  Defaults {
    ConnectTimeoutMs = 1000
    # Circuit breaker: beyond these, Envoy fails fast with 503 (gRPC UNAVAILABLE) instead of
    # queueing work on a struggling upstream.
    Limits {
      MaxConnections        = 100
      MaxPendingRequests    = 50
      MaxConcurrentRequests = 100
    }
    # Outlier detection: 5 consecutive failures (gRPC UNAVAILABLE counts as a 5xx) eject the
    # endpoint for 10 s, checked every second. 100 % so a single instance can be ejected too.
    PassiveHealthCheck {
      Interval                = "1s"
      MaxFailures             = 5
      EnforcingConsecutive5xx = 100
      MaxEjectionPercent      = 100
      BaseEjectionTime        = "10s"
    }
  }
}
