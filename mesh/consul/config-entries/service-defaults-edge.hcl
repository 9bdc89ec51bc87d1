Kind     = "service-defaults"
Name     = "edge"
Protocol = "http"

# How the edge sidecar treats its upstreams (docs/mesh-config.md explains each value).
UpstreamConfig {
  Defaults {
    # At most 32 requests in flight to a service's instances from each edge sidecar; the rest
    # wait here, in order, for up to the route's timeout. A Python service answers no faster
    # with more of them interleaved: an overload let ~290 in at once, each on a TLS connection
    # of its own, and the edge answered fewer (docs/performance.md, "Queueing in the edge
    # sidecar"). The wait counts in the latency the edge's admission limit follows, so the edge
    # refuses an overload at its front before this queue fills.
    Limits {
      MaxConnections        = 32
      MaxPendingRequests    = 1024
      MaxConcurrentRequests = 32
    }
    # An instance that keeps failing (5 answers in a row of 502/503/504 or a connect failure: a
    # dead process behind a live sidecar) is ejected for 10 s, checked every second, before
    # Consul's health check (three failures, about 3 s) takes it out. Never more than half of a
    # service's instances.
    PassiveHealthCheck {
      Interval                = "1s"
      MaxFailures             = 5
      EnforcingConsecutive5xx = 100
      MaxEjectionPercent      = 50
      BaseEjectionTime        = "10s"
    }
  }
  # An open WebSocket holds a connection and a request for as long as it lives: notifications
  # keeps Envoy's default of 1024 of each per edge sidecar.
  Overrides = [
    {
      Name = "notifications"
      Limits = {
        MaxConnections        = 1024
        MaxPendingRequests    = 1024
        MaxConcurrentRequests = 1024
      }
    }
  ]
}
