Kind     = "service-defaults"
Name     = "edge"
Protocol = "http"

# How the edge sidecar treats its upstreams: an instance that keeps failing (5 answers in a
# row of 502/503/504 or a connect failure: a dead process behind a live sidecar) is ejected for
# 10 s, checked every second, before Consul's health check (three failures, about 3 s) takes it
# out. Never more than half of a service's instances.
UpstreamConfig {
  Defaults {
    PassiveHealthCheck {
      Interval                = "1s"
      MaxFailures             = 5
      EnforcingConsecutive5xx = 100
      MaxEjectionPercent      = 50
      BaseEjectionTime        = "10s"
    }
  }
}
