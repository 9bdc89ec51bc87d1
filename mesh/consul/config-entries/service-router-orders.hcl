# Retries in the callers' sidecars (the edge's) for calls to orders, to another instance when
# the one tried is dead or dying: its own sidecar answers 502/503 (`gateway-error`) when it
# cannot reach its app or the app dropped the request. Only where repeating is harmless: reads,
# and writes carrying an Idempotency-Key (the retry replays the order if the first attempt
# committed it). A POST without one is tried once: it may have committed before the app died.
Kind = "service-router"
Name = "orders"
Routes = [
  {
    Match = {
      HTTP = {
        PathPrefix = "/"
        Methods    = ["GET", "HEAD"]
      }
    }
    Destination = {
      Service               = "orders"
      NumRetries            = 2
      RetryOnConnectFailure = true
      RetryOn               = ["gateway-error", "reset"]
    }
  },
  {
    Match = {
      HTTP = {
        PathPrefix = "/"
        Header = [
          {
            Name    = "Idempotency-Key"
            Present = true
          }
        ]
      }
    }
    Destination = {
      Service               = "orders"
      NumRetries            = 2
      RetryOnConnectFailure = true
      RetryOn               = ["gateway-error", "reset"]
    }
  }
]
