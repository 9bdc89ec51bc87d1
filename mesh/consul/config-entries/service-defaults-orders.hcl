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
    # endpoint for 10 s, checked every second. Never more than half of the endpoints: Consul
    # turns Envoy's panic mode off, so ejecting them all would refuse every call.
    PassiveHealthCheck {
      Interval                = "1s"
      MaxFailures             = 5
      EnforcingConsecutive5xx = 100
      MaxEjectionPercent      = 50
      BaseEjectionTime        = "10s"
    }
  }
}
