# Retries in the callers' sidecars (the edge's) for calls to notifications, to another instance
# when the one tried is dead or dying (its sidecar answers 502/503, `gateway-error`): every
# route of notifications is a read, and a WebSocket upgrade that failed sent nothing yet.
Kind = "service-router"
Name = "notifications"
Routes = [
  {
    Match = {
      HTTP = {
        PathPrefix = "/"
      }
    }
    Destination = {
      Service               = "notifications"
      NumRetries            = 2
      RetryOnConnectFailure = true
      RetryOn               = ["gateway-error", "reset"]
    }
  }
]
