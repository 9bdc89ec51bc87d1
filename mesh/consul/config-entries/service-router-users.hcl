# Retries for calls to users: all of its reads are idempotent, and so is BlockUser.
Kind = "service-router"
Name = "users"
Routes = [
  # Up to 1000 users in one transaction (about 0.6 s for 1000): the edge's 5 s, and a retry
  # only where the call cannot have reached users (after a reset the batch may have committed,
  # and repeating it would answer ALREADY_EXISTS for users it did create).
  {
    Match = {
      HTTP = {
        PathExact = "/shopmesh.users.v1.UserService/BatchCreateUsers"
      }
    }
    Destination = {
      Service               = "users"
      RequestTimeout        = "5s"
      NumRetries            = 2
      RetryOnConnectFailure = true
      RetryOn               = ["refused-stream"]
    }
  },
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
