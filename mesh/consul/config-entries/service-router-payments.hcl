# Retries in the orders sidecar for calls to payments. Safe: ProcessPayment is idempotent by
# order id, and the others are reads.
Kind = "service-router"
Name = "payments"
Routes = [
  {
    Match = {
      HTTP = {
        PathPrefix = "/"
      }
    }
    Destination = {
      Service               = "payments"
      RequestTimeout        = "3s"
      NumRetries            = 2
      RetryOnConnectFailure = true
      RetryOn               = ["unavailable", "reset", "refused-stream"]
    }
  }
]
