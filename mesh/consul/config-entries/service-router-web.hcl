# Retries in the callers' sidecars (the edge's) for calls to web, to another instance
# when the one tried is dead or dying (its sidecar answers 502/503, `gateway-error`): web's
# pages and views are reads, and its admin writes (block a user, set a fault flag) are
# idempotent.
Kind = "service-router"
Name = "web"
Routes = [
  {
    Match = {
      HTTP = {
        PathPrefix = "/"
      }
    }
    Destination = {
      Service               = "web"
      NumRetries            = 2
      RetryOnConnectFailure = true
      RetryOn               = ["gateway-error", "reset"]
    }
  }
]
