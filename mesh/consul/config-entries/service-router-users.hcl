# Retries for calls to users: all of its reads are idempotent, and so is BlockUser.
Kind = "service-router"
Name = "users"
Routes = [
  {
    Match = {
      HTTP = {
        PathPrefix = "/"
      }
    }
    Destination = {
      Service               = "users"
      RequestTimeout        = "2s"
      NumRetries            = 2
      RetryOnConnectFailure = true
      RetryOn               = ["unavailable", "reset", "refused-stream"]
    }
  }
]
