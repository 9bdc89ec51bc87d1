# Setting passwords in bulk (POST /auth/credentials, admin only) hashes up to 1000 passwords in
# one request, longer than Envoy's default route timeout of 15 s (services/auth/README.md).
# Every other call to auth keeps the default route (15 s in the callers' sidecars). No retries:
# a retry would hash the whole batch again.
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
  }
]
