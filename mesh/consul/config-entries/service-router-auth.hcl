# Setting passwords in bulk (POST /auth/credentials, admin only) hashes up to 1000 passwords in
# one request, longer than Envoy's default route timeout of 15 s (services/auth/README.md).
# No retries there: a retry would hash the whole batch again.
# Every other call to auth (the edge's token exchange, JWKS, tokens, introspection) keeps the
# default timeout (15 s in the callers' sidecars) and is retried on another instance when the
# one tried is dead or dying (its sidecar answers 502/503, `gateway-error`): repeating an
# exchange or a token request issues one more token, nothing else.
Kind = "service-router"
Name = "auth"
Routes = [
  {
    Match = {
      HTTP = {
        PathPrefix = "/auth/credentials"
      }
    }
    Destination = {
      Service        = "auth"
      RequestTimeout = "180s"
    }
  },
  {
    Match = {
      HTTP = {
        PathPrefix = "/"
      }
    }
    Destination = {
      Service               = "auth"
      NumRetries            = 2
      RetryOnConnectFailure = true
      RetryOn               = ["gateway-error", "reset"]
    }
  }
]
